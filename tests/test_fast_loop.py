"""The per-step overhead fixes keep Lightning's behaviour: same hook bookkeeping, fewer redraws, no profiler cost."""
import types

import torch
from pytorch_lightning.callbacks import RichProgressBar

from lightlab.fast_loop import FastHooksModule, NoProfiler, StepRichProgressBar


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
