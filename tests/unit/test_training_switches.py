"""Training switches from config: gradient clipping, accumulation, precision, deterministic mode, compile."""
import copy

import pytest
import pytorch_lightning as pl
import torch

from lightlab.run.compose import compose_config
from run import build
from tests.conftest import quick_overrides

PLAIN_SGD = ["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=false", "scheduler=none",
             "model.dropout=0", "logger=none", "callbacks=none"]


def built(tmp_path, data, *overrides):
    cfg = compose_config([*quick_overrides(data, tmp_path / "logs"), *overrides], output_dir=str(tmp_path / "run"))
    return build(cfg)


def weights(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.net.parameters()])


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_bounds_the_step(algorithm, tmp_path, tiny_data):
    limit = 1e-3
    datamodule, module, trainer = built(tmp_path, tiny_data, *PLAIN_SGD, "optimizer.lr=1.0", "trainer.max_epochs=1",
                                        "trainer.limit_train_batches=1", "trainer.limit_val_batches=0",
                                        f"trainer.gradient_clip_val={limit}",
                                        f"trainer.gradient_clip_algorithm={algorithm}")
    before = weights(module)
    trainer.fit(module, datamodule=datamodule)
    step = before - weights(module)  # lr 1, no momentum: the step is the clipped gradient
    if algorithm == "norm":
        assert step.norm() == pytest.approx(limit, rel=1e-3)
    else:
        assert step.abs().max() == pytest.approx(limit, rel=1e-3)
        assert (step.abs() > 0.99 * limit).sum() > 1  # many entries were clamped to the limit


def test_accumulated_batches_make_one_step_with_their_mean_gradient(tmp_path, tiny_data):
    lr, batches = 0.1, 3
    datamodule, module, trainer = built(tmp_path, tiny_data, *PLAIN_SGD, f"optimizer.lr={lr}",
                                        "trainer.max_epochs=1", f"trainer.limit_train_batches={batches}",
                                        "trainer.limit_val_batches=0", f"trainer.accumulate_grad_batches={batches}")
    reference = copy.deepcopy(module)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 1

    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(0)
    for _index, batch in zip(range(batches), loader):
        images, labels = datamodule.on_after_batch_transfer(batch, 0)
        (reference.loss(reference(images), labels) / batches).backward()
    with torch.no_grad():
        expected = torch.cat([(p - lr * p.grad).flatten() for p in reference.net.parameters()])
    torch.testing.assert_close(weights(module), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_precision_sets_the_dtype_of_the_forward_pass(precision, tmp_path, tiny_data):
    datamodule, module, trainer = built(tmp_path, tiny_data, f"trainer.precision={precision}", "trainer.max_epochs=1",
                                        "logger=none", "callbacks=none")
    dtypes = set()
    module.net.register_forward_hook(lambda net, inputs, output: dtypes.add(output.dtype))
    trainer.fit(module, datamodule=datamodule)
    # On a CPU, Lightning runs 16-mixed as bf16-mixed (float16 autocast is a GPU feature), with a warning.
    expected = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16,
                "16-mixed": torch.float16 if torch.cuda.is_available() else torch.bfloat16}[precision]
    assert dtypes == {expected}
    assert next(module.net.parameters()).dtype == torch.float32  # mixed: the weights stay float32
    assert float(trainer.callback_metrics["val/acc"]) > 0.5


def test_deterministic_mode_is_on_during_training_and_runs_repeat_bit_for_bit(tmp_path, tiny_data):
    seen, results = [], []
    for attempt in range(2):
        pl.seed_everything(0)  # as run.train does, before the network's weights are drawn
        datamodule, module, trainer = built(tmp_path / str(attempt), tiny_data, "trainer.deterministic=true",
                                            "logger=none", "callbacks=none", "trainer.max_epochs=1")
        trainer.callbacks.append(pl.callbacks.LambdaCallback(
            on_train_batch_start=lambda *_: seen.append(torch.are_deterministic_algorithms_enabled())))
        trainer.fit(module, datamodule=datamodule)
        results.append(weights(module))
    assert all(seen) and len(seen) == 12
    assert torch.equal(results[0], results[1])


@pytest.mark.runs  # a real training run: compiling costs tens of seconds on a 2-core CPU
def test_compile_runs_the_network_compiled_and_keeps_its_parameter_names(tmp_path, tiny_data):
    # One batch shape, no dropout, no eval mode: each of those would be a recompilation.
    fixed = ["model.dropout=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=0"]
    datamodule, module, trainer = built(tmp_path, tiny_data, "compile=true", "logger=none", "callbacks=none", *fixed)
    _, eager, _ = built(tmp_path, tiny_data, "compile=false", *fixed)
    assert module.net._compiled_call_impl is not None and eager.net._compiled_call_impl is None
    assert list(module.net.state_dict()) == list(eager.net.state_dict())  # no "_orig_mod." prefixes
    trainer.fit(module, datamodule=datamodule)
    eager.load_state_dict(module.state_dict())
    inputs = torch.randn(32, 1, 28, 28)
    torch.testing.assert_close(module(inputs), eager(inputs), rtol=1e-4, atol=1e-5)
