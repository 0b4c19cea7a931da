"""The layout's rules, checked: imports go down the layers (import-linter, contracts in pyproject.toml), files stay
readable (run.py <= 150 lines, no file over 300), the tree is lint-clean (ruff)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

from tests.conftest import ROOT

PACKAGES = ("lightlab", "lightning_modules", "datamodules", "hydra_plugins")


def test_imports_keep_the_layer_contracts(monkeypatch):
    monkeypatch.chdir(ROOT)  # lint-imports reads pyproject.toml from here
    configuration.configure()  # what the lint-imports command does first
    assert lint_imports(cache_dir=None) is True


@pytest.mark.runs  # lint-imports in a process of its own, on a scratch copy
def test_an_import_against_the_layers_fails_lint_imports(tmp_path):
    for name in (*PACKAGES, "pyproject.toml"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    errors = tmp_path / "lightlab" / "base" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom lightlab.run import record  # noqa: E402, F401  (the wrong way)\n")
    result = subprocess.run([shutil.which("lint-imports"), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path), "PATH": str(ROOT / ".venv" / "bin") + ":/usr/bin"})
    assert result.returncode == 1, result.stdout[-3000:]
    assert "lightlab.base is not allowed to import lightlab.run" in " ".join(result.stdout.split()), result.stdout


def test_run_py_is_short_and_no_file_is_long():
    assert len((ROOT / "run.py").read_text().splitlines()) <= 150
    long_files = {str(path.relative_to(ROOT)): length for folder in (*PACKAGES, "tests", "benchmarks")
                  for path in (ROOT / folder).rglob("*.py")
                  if (length := len(path.read_text().splitlines())) > 300}
    assert long_files == {}


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))  # (a venv not activated)
    result = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_no_import_cycles_among_our_modules():
    import grimp

    ours = ("lightlab", "lightning_modules", "datamodules", "hydra_plugins.lightlab_optuna_sweeper")
    graph = grimp.build_graph("lightlab", "lightning_modules", "datamodules", "hydra_plugins", cache_dir=None)
    modules = sorted(m for m in graph.modules if m.startswith(ours))
    cycles = [(a, b) for a in modules for b in graph.find_modules_directly_imported_by(a)
              if b.startswith(ours) and graph.chain_exists(importer=b, imported=a)]
    assert cycles == []
