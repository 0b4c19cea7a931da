"""What a run records and prints about itself besides its metrics: how it was started, from which code, its config
tree at the start and its summary at the end.

`provenance.json` in the run folder answers "can I reproduce this?" months later: the command line, the git
commit and whether the working tree had uncommitted changes (a dirty tree means the commit alone does not
reproduce the run), the versions of the packages that decide the numbers, and the devices.
"""
import datetime
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lightlab.base.files import write_json, write_text
from lightlab.base.numbers import format_number
from lightlab.base.project import PROJECT_ROOT
from lightlab.base.ranks import is_rank_zero

PACKAGES = ("torch", "pytorch-lightning", "torchmetrics", "hydra-core", "omegaconf", "tensorboard", "numpy", "rich",
            "optuna", "lightlab")


def git_state(folder: Path = PROJECT_ROOT) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    try:
        changed = git("status", "--porcelain").splitlines()
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(changed), "changed_files": changed[:100]}
    except (OSError, subprocess.SubprocessError) as error:  # no git, or not a repository (an installed copy)
        return {"commit": None, "dirty": None, "error": str(getattr(error, "stderr", "") or error).strip()}


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    import torch

    versions["torch"] = torch.__version__  # the build too (2.13.0+cpu, 2.6.0+cu124), which metadata may leave out
    return versions


def write_provenance(run_dir: Path) -> None:
    import torch

    record = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "working_directory": str(Path.cwd()),
        "started_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "git": git_state(),
        "packages": package_versions(),
        "devices": {"cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                    "cpu_threads": torch.get_num_threads()},
    }
    write_json(run_dir / "provenance.json", record)


def print_config_tree(cfg: DictConfig) -> None:
    """The resolved config as a rich tree: one branch per group, so a wrong option is seen before training."""
    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    def add(branch: Tree, node) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                add(branch.add(f"[bold]{escape(str(key))}[/]"), value)
            else:
                shown = repr(value) if isinstance(value, str) else str(value)  # quotes: "1" the string, 1 the number
                branch.add(f"{escape(str(key))}: [cyan]{escape(shown)}[/]")

    tree = Tree(f"[bold]config[/] ({cfg.experiment_name})")
    add(tree, OmegaConf.to_container(cfg, resolve=True))
    Console(soft_wrap=True).print(tree)


def print_summary(cfg: DictConfig, summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)  # paths stay on one line (copyable) whatever the terminal's width
    if summary["metrics"]:
        table = Table(title=f"{cfg.experiment_name}: {'final metrics' if cfg.mode == 'train' else cfg.mode}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in sorted(summary["metrics"].items()):
            table.add_row(name, format_number(value))
        console.print(table)
    if cfg.mode == "train":
        console.print(f"best checkpoint: {summary['best_checkpoint'] or '(none: checkpointing is off)'}")
    else:
        console.print(f"checkpoint:      {summary['checkpoint']}")
    console.print(f"run directory:   {summary['run_dir']}")
    console.print(f"view it:         tensorboard --logdir {cfg.paths.log_dir}")


def start_run(cfg: DictConfig) -> Path:
    """The run folder with the resolved config and how the run was started (git commit, packages, command)."""
    run_dir = Path(cfg.paths.output_dir)
    if is_rank_zero():  # DDP's other ranks write nothing of their own
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_provenance(run_dir)
        if cfg.print_config:
            print_config_tree(cfg)
    return run_dir


def finish_run(cfg: DictConfig, run_dir: Path, metrics: dict, **checkpoints) -> dict:
    import torch

    summary = {"run_dir": str(run_dir), "mode": cfg.mode, **checkpoints, "metrics": metrics,
               "torch_threads": torch.get_num_threads()}
    if is_rank_zero():
        # Whole or not at all: a re-run of the same command takes a run with metrics.json as completed.
        write_json(run_dir / "metrics.json", summary)
        print_summary(cfg, summary)  # metrics table, checkpoint, run folder, TensorBoard command
    return summary
