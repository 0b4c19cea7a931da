"""Every private Lightning or torch name we use exists in the installed versions, lives in
lightlab/lightning_internals/, and the fast hook path it patches in really runs in a real fit."""
import re
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassAccuracy

from lightlab import lightning_internals
from lightlab.lightning_internals import hook_dispatch, lean_epoch, logged_values  # noqa: F401  (install their paths)
from tests.conftest import ROOT

# Private attribute reads outside lightning_internals that are not Lightning's or torch's: OmegaConf's node API
# (no public way to tell an unset node), Optuna's trial id (Optuna's own sweeper samples use it too), and Hydra
# config keys. Anything else `._name` outside lightning_internals/ fails the test below.
NOT_LIGHTNING_OR_TORCH = {"_get_node", "_is_none", "_target_", "_trial_id", "_convert_", "_recursive_", "_partial_"}


def test_every_private_name_we_use_exists_in_the_installed_versions():
    assert lightning_internals.missing_private_names() == []


def test_a_missing_private_name_is_named_with_what_depends_on_it(monkeypatch):
    monkeypatch.delattr(pl.trainer.call, "_call_strategy_hook")
    missing = lightning_internals.missing_private_names()
    print("\n".join(missing))  # what an upgrade that renamed it would report
    assert missing == ["pytorch_lightning.trainer.call._call_strategy_hook: '_call_strategy_hook' does not exist in "
                       "the installed version; needed because: replaced: no profiler-name f-strings on every hook call"]


def test_private_names_are_used_only_inside_lightning_internals():
    pattern = re.compile(r"(?<!self)(?<!cls)\.(_[a-z][a-z0-9_]*)\b(?!__)")
    outside = {}
    for folder in ("lightlab", "lightning_modules", "datamodules", "hydra_plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            if "lightning_internals" in path.parts:
                continue
            code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
            for name in set(pattern.findall(code)) - NOT_LIGHTNING_OR_TORCH:
                outside.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert outside == {}


class Tiny(hook_dispatch.FastHooksModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_index):
        inputs, labels = batch
        return torch.nn.functional.cross_entropy(self.layer(inputs), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(profiler) -> dict[str, int]:
    before = dict(hook_dispatch.dispatched)
    data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,))), batch_size=8)
    trainer = pl.Trainer(max_epochs=2, profiler=profiler, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(Tiny(), train_dataloaders=data)
    return {kind: hook_dispatch.dispatched[kind] - before[kind] for kind in before}


def test_the_fast_hook_path_runs_in_a_real_fit_and_hands_over_to_lightning_under_a_profiler():
    fast = fit(hook_dispatch.NoProfiler())
    print(f"hooks dispatched by the fast path in an 8-step fit: {fast}")
    steps = 8
    assert fast["module"] >= 2 * 2 and fast["callback"] >= 2 * 2 and fast["strategy"] >= 1  # epoch hooks and more
    assert fast["hook_not_defined"] == 6 * steps  # nothing defines the 6 hooks of a batch: none called
    assert fast["signature"] == 1  # training_step's signature: read once a fit (the step plan), not every step
    assert fast["lean_step"] == steps and fast["lean_advance"] == steps  # every batch and step took the lean path
    assert fast["val_check_skipped"] == steps - 2  # all but each epoch's last batch (4 an epoch) skip the val check
    assert fast["metrics_unchanged"] == steps - 1  # nothing is logged: step metrics are built on the first batch only
    profiled = fit("simple")  # Lightning's own dispatch and step, so the profile keeps its names
    assert profiled == dict.fromkeys(profiled, 0) | {"signature": profiled["signature"]}


def test_the_lowest_pins_are_the_versions_the_private_names_were_checked_with():
    pins = (ROOT / "pyproject.toml").read_text()
    assert '"pytorch-lightning>=2.6,<2.7"' in pins and '"torch>=2.6' in pins
    assert Path(pl.__file__).parent.name == "pytorch_lightning" and pl.__version__.startswith("2.6.")


def test_the_leaf_spec_warning_lightning_triggers_is_silenced_and_only_that_one():
    import warnings

    from pytorch_lightning.utilities._pytree import _tree_flatten

    def warnings_of(flatten) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # every warning, pyproject's filters included, except ...
            lightning_internals.filter_dependency_warnings()  # ... ours (pytest reset those set at import)
            flatten()
        return [str(w.message) for w in caught]

    assert warnings_of(lambda: _tree_flatten({"a": torch.zeros(1)})) == []  # CombinedLoader's call, as in a fit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # without the filter torch warns: the filter is still needed ...
        _tree_flatten({"a": torch.zeros(1)})
    assert any("LeafSpec" in str(w.message) for w in caught)
    # ... and the same FutureWarning raised anywhere else still shows
    same_message = "`isinstance(treespec, LeafSpec)` is deprecated"
    assert warnings_of(lambda: warnings.warn(same_message, FutureWarning, stacklevel=1)) != []


def test_the_progress_bar_thread_stops_when_told_not_after_its_sleep():
    import time

    from lightlab.callbacks.progress_bar import StepRichProgressBar
    from lightlab.lightning_internals.dependency_waits import ran

    before = ran["prompt_refresh_threads"]
    data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,))), batch_size=8)
    bar = StepRichProgressBar(refresh_rate=0.1)  # Lightning's thread would sleep 10 s, then see the stop flag
    trainer = pl.Trainer(max_epochs=1, logger=False, callbacks=[bar], enable_model_summary=False,
                         enable_checkpointing=False)
    started = time.perf_counter()
    trainer.fit(Tiny(), train_dataloaders=data)
    assert ran["prompt_refresh_threads"] > before  # the replaced loop ran ...
    assert time.perf_counter() - started < 8  # ... and teardown's join did not wait out the 10-s sleep


class Logging(Tiny):
    def training_step(self, batch, batch_index):
        loss = super().training_step(batch, batch_index)
        self.log("loss", loss, on_step=True, on_epoch=True)
        return loss


def test_logged_values_already_on_the_device_are_not_moved_and_move_when_the_device_changes():
    from pytorch_lightning.trainer.connectors.logger_connector.result import _ResultCollection

    before = hook_dispatch.dispatched["log_not_moved"]
    data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,))), batch_size=8)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, log_every_n_steps=1)
    trainer.fit(Logging(), train_dataloaders=data)
    # every log (the store is made on the CPU, where the values are) and the move to the CPU at the fit's end
    assert hook_dispatch.dispatched["log_not_moved"] - before == 8 + 1
    assert trainer.callback_metrics["loss_epoch"].isfinite()
    results = _ResultCollection(training=True)
    results.log("training_step", "x", torch.tensor(2.0), on_step=True, on_epoch=True)
    results.log("training_step", "x", torch.tensor(4.0), on_step=True, on_epoch=True)  # on the CPU: not moved
    assert hook_dispatch.dispatched["log_not_moved"] - before == 9 + 2
    results["training_step.x"].to(torch.device("meta"))  # another device: Lightning's own move
    assert results["training_step.x"].value.device.type == "meta"
    assert hook_dispatch.dispatched["log_not_moved"] - before == 9 + 2
    accuracy = MulticlassAccuracy(num_classes=2)  # a logged Metric: the same, by its device
    accuracy.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    results.log("validation_step", "acc", accuracy, on_step=False, on_epoch=True)
    assert hook_dispatch.dispatched["log_not_moved"] - before == 9 + 3
    results["validation_step.acc"].to(torch.device("meta"))
    assert accuracy.device.type == "meta" and hook_dispatch.dispatched["log_not_moved"] - before == 9 + 3


def test_hydra_mode_is_read_without_composing_only_where_nothing_can_set_it(tmp_path):
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl

    from lightlab.lightning_internals.hydra_mode import mode_may_be_set

    search_path = ConfigSearchPathImpl()
    search_path.append("hydra", "pkg://hydra.conf")
    search_path.append("main", str(ROOT / "conf"))
    search_path.append("schema", "structured://")
    assert not mode_may_be_set(search_path, ["trainer.max_epochs=1", "hydra.run.dir=x"])
    assert mode_may_be_set(search_path, ["hydra.mode=MULTIRUN"])
    assert mode_may_be_set(search_path, ["hydra.searchpath=[pkg://elsewhere]"])
    (tmp_path / "sweeps.yaml").write_text("hydra:\n  mode: 'MULTIRUN'  # sweeps by itself\n")
    search_path.append("command-line", f"file://{tmp_path}")
    assert mode_may_be_set(search_path, [])
    other = ConfigSearchPathImpl()
    other.append("some-plugin", "pkg://some_plugin.conf")  # a package's configs are not read: Hydra composes
    assert mode_may_be_set(other, [])
