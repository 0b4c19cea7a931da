"""The per-step overhead fixes keep Lightning's behaviour: same hooks in the same order, same hook bookkeeping,
fewer redraws, no profiler cost."""
import threading
import types

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.trainer.connectors.data_connector import _DataHookSelector
from pytorch_lightning.utilities.model_helpers import is_overridden
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassAccuracy

from lightlab.callbacks.non_finite import StopOnNonFiniteLoss
from lightlab.callbacks.parameter_histograms import ParameterHistograms
from lightlab.callbacks.progress_bar import AverageSpeedColumn, StepRichProgressBar
from lightlab.lightning_internals.hook_dispatch import FastHooksModule, NoProfiler, dispatched
from lightlab.run.compose import compose_config
from lightning_modules.tasks.classification import ClassificationModule
from run import build, train
from tests.conftest import quick_overrides, write_tiny_mnist, write_tiny_text


def test_no_profiler_hands_out_one_shared_null_context():
    profiler = NoProfiler()
    with profiler.profile("training_step") as entered:
        assert entered is None
    assert profiler.profile("a") is profiler.profile("b")


def test_hook_name_bypasses_module_setattr_but_other_attributes_do_not(monkeypatch):
    module, layer = FastHooksModule(), torch.nn.Linear(2, 2)
    slow_path = []
    original = torch.nn.Module.__setattr__
    monkeypatch.setattr(torch.nn.Module, "__setattr__",
                        lambda self, name, value: (slow_path.append(name), original(self, name, value)))
    module._current_fx_name = "training_step"
    assert module._current_fx_name == "training_step" and slow_path == []
    module.layer = layer  # still registered as a submodule by nn.Module.__setattr__
    assert slow_path == ["layer"] and "layer" in dict(module.named_children())


def test_progress_bar_redraws_every_n_steps_and_at_epoch_end(monkeypatch):
    redraws = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end",
                        lambda self, trainer, module, outputs, batch, index: redraws.append(index))
    bar = StepRichProgressBar(refresh_every_n_steps=4)
    trainer = types.SimpleNamespace(num_training_batches=10)
    for index in range(10):
        bar.on_train_batch_end(trainer, None, None, None, index)
    assert redraws == [3, 7, 9]
    redraws.clear()
    once_per_epoch = StepRichProgressBar()  # the default (conf/callbacks/default.yaml: null)
    for index in range(10):
        once_per_epoch.on_train_batch_end(trainer, None, None, None, index)
    assert redraws == [9]


class RecordingCallback(pl.Callback):
    """Records (hook, the module's current hook name) for the per-step hooks it defines."""

    def __init__(self, calls: list):
        self.calls = calls

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.calls.append(("on_train_batch_start", module._current_fx_name))

    def on_before_backward(self, trainer, module, loss):
        self.calls.append(("on_before_backward", module._current_fx_name))

    def on_before_zero_grad(self, trainer, module, optimizer):
        self.calls.append(("on_before_zero_grad", type(optimizer).__name__))

    def on_after_backward(self, trainer, module):
        self.calls.append(("on_after_backward", module._current_fx_name))

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.calls.append(("on_before_optimizer_step", type(optimizer).__name__))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.calls.append(("on_train_batch_end", module._current_fx_name))

    def on_train_epoch_end(self, trainer, module):
        self.calls.append(("on_train_epoch_end", module._current_fx_name))


class TinyModule(FastHooksModule):
    def __init__(self, calls: list):
        super().__init__()
        self.layer, self.calls = torch.nn.Linear(4, 2), calls

    def training_step(self, batch, batch_idx):
        self.calls.append(("training_step", self._current_fx_name))
        self.log("train/loss", 1.0)  # self.log checks _current_fx_name: the dispatch must have set it
        return torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_and_record(profiler, tmp_path) -> tuple[list, list]:
    calls, instance_calls = [], []
    only_instance = pl.Callback()  # a hook set on the instance, not the class, is called too
    only_instance.on_train_batch_start = lambda trainer, module, batch, index: instance_calls.append(index)
    step_checkpoint = ModelCheckpoint(dirpath=tmp_path / profiler.__class__.__name__, every_n_train_steps=2,
                                      filename="{step}", save_top_k=-1)
    data = DataLoader(TensorDataset(torch.randn(40, 4), torch.randint(0, 2, (40,))), batch_size=8)
    trainer = pl.Trainer(max_epochs=2, profiler=profiler, logger=False, enable_progress_bar=False,
                         enable_model_summary=False,
                         callbacks=[RecordingCallback(calls), only_instance, step_checkpoint])
    trainer.fit(TinyModule(calls), train_dataloaders=data)
    return calls, instance_calls


def test_lean_hook_dispatch_calls_the_same_hooks_in_the_same_order_as_lightnings(tmp_path):
    lean, lean_instance = fit_and_record(NoProfiler(), tmp_path)  # lightlab's dispatch
    stock, stock_instance = fit_and_record(PassThroughProfiler(), tmp_path)  # any other profiler: Lightning's own
    assert lean == stock and lean_instance == stock_instance == [0, 1, 2, 3, 4] * 2
    assert lean[:7] == [("on_train_batch_start", "on_train_batch_start"), ("training_step", "training_step"),
                        ("on_before_zero_grad", "SGD"), ("on_before_backward", "on_before_backward"),
                        ("on_after_backward", "on_after_backward"), ("on_before_optimizer_step", "SGD"),
                        ("on_train_batch_end", "on_train_batch_end")]
    assert len(lean) == 2 * (5 * 7 + 1)
    # every_n_train_steps still saves: the per-batch checkpoint hook is skipped only when it has nothing to do
    for profiler in ("NoProfiler", "PassThroughProfiler"):
        assert sorted(p.name for p in (tmp_path / profiler).iterdir()) == [f"step={s}.ckpt" for s in (10, 2, 4, 6, 8)]


def test_a_callback_added_during_the_fit_gets_the_hooks_of_the_batches_after_it():
    """The lean path works out once which callbacks define each batch hook (hook_dispatch.step_plan), and again
    whenever the trainer's list changes."""
    late_calls = []

    class AddsOneAfterEpoch0(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 0:
                trainer.callbacks.append(RecordingCallback(late_calls))

    before = dispatched["lean_step"]
    data = DataLoader(TensorDataset(torch.randn(40, 4), torch.randint(0, 2, (40,))), batch_size=8)
    trainer = pl.Trainer(max_epochs=2, profiler=NoProfiler(), logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=[AddsOneAfterEpoch0()])
    trainer.fit(TinyModule([]), train_dataloaders=data)
    assert dispatched["lean_step"] - before == 10
    assert [name for name, _ in late_calls].count("on_before_backward") == 5  # epoch 1's five batches
    assert [name for name, _ in late_calls].count("on_train_batch_end") == 5


@pytest.mark.parametrize("settings", ["defaults", "active"])
def test_a_hook_a_callback_marks_idle_is_left_out_and_only_with_the_settings_that_make_it_idle(settings):
    histograms = ParameterHistograms(every_n_epochs=0 if settings == "defaults" else 1)
    non_finite = StopOnNonFiniteLoss(max_skipped_batches=0 if settings == "defaults" else 2)
    calls = []
    for callback in (histograms, non_finite):
        assert "on_before_optimizer_step" in vars(type(callback))  # (both define it)
        callback.on_before_optimizer_step = lambda trainer, module, optimizer, c=callback: calls.append(type(c))
    data = DataLoader(TensorDataset(torch.randn(40, 4), torch.randint(0, 2, (40,))), batch_size=8)
    trainer = pl.Trainer(max_epochs=1, profiler=NoProfiler(), logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=[histograms, non_finite])
    trainer.fit(TinyModule([]), train_dataloaders=data)
    assert len(calls) == (0 if settings == "defaults" else 2 * 5)  # 5 steps


def test_the_progress_bar_shows_the_epochs_real_rate_though_it_is_updated_once_per_epoch():
    from pytorch_lightning.callbacks.progress.rich_progress import ProcessingSpeedColumn
    from rich.progress import Progress

    speed = [c for c in StepRichProgressBar().configure_columns(None) if isinstance(c, ProcessingSpeedColumn)]
    assert [type(c) for c in speed] == [AverageSpeedColumn]
    clock = [0.0]
    progress = Progress(get_time=lambda: clock[0])
    task = progress.add_task("Epoch 0", total=430)
    clock[0] = 2.0
    progress.update(task, completed=430)  # the one update of a bar redrawn at the end of each epoch
    clock[0] = 5.0  # validation runs; the bar is redrawn meanwhile
    assert speed[0].render(progress.tasks[0]).plain == "215.00it/s"
    assert ProcessingSpeedColumn(style="").render(progress.tasks[0]).plain == "0.00it/s"  # Lightning's column


def test_the_progress_bar_thread_wakes_once_a_second_not_a_hundred_times():
    assert StepRichProgressBar().refresh_rate == 1
    assert StepRichProgressBar(refresh_rate=5).refresh_rate == 5


def test_training_accuracy_counted_in_the_step_equals_torchmetrics_and_no_event_writer_is_left_open(tmp_path):
    data_dir = write_tiny_mnist(tmp_path / "data")
    run_dir = tmp_path / "run"
    # lr 0 and no dropout: the weights never change, so the epoch's training accuracy is the checkpointed
    # network's accuracy over the whole training split.
    cfg = compose_config(quick_overrides(data_dir, tmp_path / "logs") + [
        "trainer.max_epochs=1", "model.dropout=0", "optimizer.lr=0", "scheduler=none", "test_after_fit=false"],
        output_dir=str(run_dir))
    logged = train(cfg)["metrics"]["train/acc"]
    module = ClassificationModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    labels = datamodule.splits["fit"][1]
    with torch.no_grad():
        expected = MulticlassAccuracy(10, average="micro")(
            module.eval()(datamodule.training_sample(len(labels))), labels)
    assert 0.02 < logged < 0.98 and logged == pytest.approx(float(expected), abs=1e-6)
    # The run closes every TensorBoard writer it opened (a leaked one kept a thread per run of a sweep).
    assert not [t for t in threading.enumerate() if isinstance(t, _AsyncWriterThread)]


@pytest.mark.parametrize("data", [["data=mnist", "data.val_size=64"],
                                  ["data=sst2", "model=lstm", "data.val_size=40", "data.test_size=40"]])
def test_a_batch_already_on_the_device_is_handed_on_as_it_is_by_the_datamodules_own_hook(data, tmp_path):
    data_dir = write_tiny_text(write_tiny_mnist(tmp_path / "data"))
    cfg = compose_config([*data, f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
                          "data.download=false"], output_dir=str(tmp_path / "run"))
    datamodule, module, _ = build(cfg, with_trainer=False)
    batch = (torch.zeros(2, 3, dtype=torch.long), torch.ones(2, dtype=torch.long))
    assert datamodule.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch  # no walk, no .to()
    moved = datamodule.transfer_batch_to_device(batch, torch.device("meta"), 0)  # elsewhere: Lightning's default
    assert [t.device.type for t in moved] == ["meta", "meta"]
    # The DataModule's hook, not the LightningModule's: Lightning warns when the module overrides a data hook.
    assert not is_overridden("transfer_batch_to_device", module)
    assert _DataHookSelector(module, datamodule).get_instance("transfer_batch_to_device") is datamodule


@pytest.mark.parametrize("options", [[], ["optimizer=sgd", "trainer.gradient_clip_val=0.5", "model=mlp_bn"]])
def test_the_same_seed_gives_the_same_weights_with_the_fast_paths_on_and_off(options, tmp_path):
    """The fast paths (hook dispatch, lean optimization step and batch; lightlab/lightning_internals/) are on with the
    default NoProfiler and off under any other profiler: both runs must end bit-for-bit equal and log the same."""
    data_dir = write_tiny_mnist(tmp_path / "data")
    weights = {}
    for name, profiler in (("fast", "lightlab.lightning_internals.hook_dispatch.NoProfiler"),
                           ("lightning", "pytorch_lightning.profilers.PassThroughProfiler")):
        before = dict(dispatched)
        cfg = compose_config(quick_overrides(data_dir, tmp_path / name) + options + [
            f"trainer.profiler._target_={profiler}", "test_after_fit=false"], output_dir=str(tmp_path / name))
        train(cfg)
        weights[name] = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
        weights[name]["lean"] = [dispatched[kind] - before[kind] for kind in ("lean_step", "lean_advance")]
        events = EventAccumulator(str(tmp_path / name))
        events.Reload()  # every scalar written (the step loss every 2 steps, the epochs' metrics) but the timings
        weights[name]["scalars"] = {tag: [(e.step, e.value) for e in events.Scalars(tag)]
                                    for tag in events.Tags()["scalars"] if "second" not in tag}
    fast, lightning = weights["fast"], weights["lightning"]
    assert fast["lean"] == [2 * 6, 2 * 6] and lightning["lean"] == [0, 0]  # 192 images / 32 a batch, 2 epochs
    assert len(fast["scalars"]["train/loss_step"]) == 6 and fast["scalars"] == lightning["scalars"]
    assert fast["state_dict"].keys() == lightning["state_dict"].keys()
    for key, value in fast["state_dict"].items():
        assert torch.equal(value, lightning["state_dict"][key]), key
    assert fast["optimizer_states"][0]["state"].keys() == lightning["optimizer_states"][0]["state"].keys()
    assert fast["loops"]["fit_loop"] == lightning["loops"]["fit_loop"]  # the same step and zero_grad counts
