"""Every scheduler in conf/scheduler: the learning rates a real run logs to TensorBoard, step by step or
epoch by epoch, against the trajectory of the bare torch scheduler with the same settings."""
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.optim import lr_scheduler

from lightlab.base.errors import UserError
from lightlab.run.compose import CONFIG_DIR, compose_config
from lightning_modules.schedules import warmup_inverse_square_root
from run import train
from tests.conftest import quick_overrides, run_cli

EPOCHS = 4
STEPS_PER_EPOCH = 6  # tiny data: 256 - 64 validation images in batches of 32
LR = 1e-3            # conf/optimizer/adam.yaml


def run(tmp_path, data, *overrides) -> dict[str, list[float]]:
    """Train on tiny data with the LR logged every step; the logged scalars by tag."""
    cfg = compose_config([*quick_overrides(data, tmp_path / "logs"), f"trainer.max_epochs={EPOCHS}",
                          "trainer.log_every_n_steps=1", "test_after_fit=false", *overrides],
                         output_dir=str(tmp_path / "run"))
    train(cfg)
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    return {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def trajectory(scheduler, interval: str, steps: int = EPOCHS * STEPS_PER_EPOCH, metrics=None) -> list[float]:
    """The lr at the start of each step (interval=step) or epoch, stepping a bare torch scheduler."""
    optimizer = scheduler.optimizer
    lrs = []
    for epoch in range(EPOCHS):
        if interval == "epoch":
            lrs.append(optimizer.param_groups[0]["lr"])
        for _ in range(STEPS_PER_EPOCH):
            if interval == "step":
                lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if interval == "step":
                scheduler.step()
        if interval == "epoch":
            scheduler.step(*([metrics[epoch]] if metrics else []))
    return lrs[:steps]


def bare_optimizer(lr=LR):
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


# name -> (overrides, tag to read, interval, the bare torch scheduler with the settings of its YAML file)
CASES = {
    "step": ([], "epoch", lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.5)),
    "step-every-2-epochs": (["scheduler=step", "scheduler.frequency=2", "scheduler.scheduler.step_size=1"],
                            "epoch", None),  # checked by hand below: Lightning steps it every 2nd epoch
    "multistep": (["scheduler.scheduler.milestones=[1,3]"], "epoch",
                  lambda o: lr_scheduler.MultiStepLR(o, milestones=[1, 3], gamma=0.1)),
    "exponential": ([], "epoch", lambda o: lr_scheduler.ExponentialLR(o, gamma=0.7)),
    "cosine": ([], "epoch", lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=EPOCHS)),  # T_max: the run
    "cosine-per-step": (["scheduler=cosine", "scheduler.interval=step"], "step",
                        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=EPOCHS * STEPS_PER_EPOCH)),
    "lambda": ([], "epoch", lambda o: lr_scheduler.LambdaLR(o, lambda t: warmup_inverse_square_root(t, 2))),
    "onecycle": ([], "step", lambda o: lr_scheduler.OneCycleLR(
        o, max_lr=0.01, total_steps=EPOCHS * STEPS_PER_EPOCH, pct_start=0.25, div_factor=25.0,
        final_div_factor=1e4, cycle_momentum=False)),
}


@pytest.mark.parametrize("name", CASES)
def test_logged_learning_rates_follow_the_bare_torch_scheduler(name, tmp_path, tiny_data):
    overrides, interval, make = CASES[name]
    option = name.split("-")[0]
    logged = run(tmp_path, tiny_data, f"scheduler={option}", *overrides)["train/lr-Adam"]
    if make is None:  # step_size 1, gamma 0.5, stepped after epochs 2 and 4 only
        assert logged == pytest.approx([LR, LR, LR / 2, LR / 2], rel=1e-6)
        return
    expected = trajectory(make(bare_optimizer()), interval)
    assert len(logged) == len(expected) == (EPOCHS * STEPS_PER_EPOCH if interval == "step" else EPOCHS)
    assert logged == pytest.approx(expected, rel=1e-5)
    assert len(set(f"{lr:.6g}" for lr in logged)) > 1  # the schedule did change the rate


@pytest.mark.parametrize("scheduler", ["none", "onecycle"])
def test_our_learning_rate_monitor_logs_what_lightnings_logs_at_the_same_steps(scheduler, tmp_path, tiny_data,
                                                                               monkeypatch):
    # lightlab.callbacks.learning_rate_monitor skips Lightning's per-batch question on the steps that do not log
    from pytorch_lightning.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

    asked = []
    question = _LoggerConnector.should_update_logs
    monkeypatch.setattr(_LoggerConnector, "should_update_logs",
                        property(lambda connector: asked.append(1) or question.fget(connector)))

    def logged(monitor: str) -> tuple[list[tuple[int, float]], int]:
        asked.clear()
        cfg = compose_config([*quick_overrides(tiny_data, tmp_path / "logs"), f"trainer.max_epochs={EPOCHS}",
                              "trainer.log_every_n_steps=4", "test_after_fit=false", f"scheduler={scheduler}",
                              f"callbacks.learning_rate_monitor._target_={monitor}"],
                             output_dir=str(tmp_path / monitor))
        train(cfg)
        events = EventAccumulator(str(tmp_path / monitor))
        events.Reload()
        return [(event.step, event.value) for event in events.Scalars("train/lr-Adam")], len(asked)

    ours, ours_asked = logged("lightlab.callbacks.learning_rate_monitor.LearningRateMonitor")
    lightnings, lightnings_asked = logged("pytorch_lightning.callbacks.LearningRateMonitor")
    assert ours == lightnings
    # every 4th step; without a scheduler, at each epoch's start too
    assert len(ours) == EPOCHS * STEPS_PER_EPOCH // 4 + (EPOCHS if scheduler == "none" else 0)
    # Lightning's monitor asks the logger connector on every training batch; ours only on the steps that log
    steps = EPOCHS * STEPS_PER_EPOCH
    assert lightnings_asked - ours_asked == steps - steps // 4


@pytest.mark.parametrize("option", ["warmup_cosine", "step", "plateau"])
def test_linear_warmup_multiplies_the_schedule_step_by_step(option, tmp_path, tiny_data):
    warmup = 8
    overrides = ["scheduler.scheduler.patience=0", "scheduler.scheduler.factor=0.5"] if option == "plateau" else []
    scalars = run(tmp_path, tiny_data, f"scheduler={option}", f"scheduler.warmup_steps={warmup}", *overrides)
    logged = scalars["train/lr-Adam-step"]  # the rate at every step, warmup included
    optimizer = bare_optimizer()
    warm = lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    if option == "warmup_cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS * STEPS_PER_EPOCH)
        expected = trajectory(lr_scheduler.ChainedScheduler([warm, main]), "step")
    else:  # warmup per step, the schedule per epoch (on the logged metric for plateau), on the same optimizer
        main = (lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5) if option == "step" else
                lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0))
        expected = []
        for epoch in range(EPOCHS):
            for _ in range(STEPS_PER_EPOCH):
                expected.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                warm.step()
            main.step(*([scalars["val/acc"][epoch]] if option == "plateau" else []))
    assert logged == pytest.approx(expected, rel=1e-5)
    assert logged[0] == pytest.approx(LR * 0.01, rel=1e-5)  # warmup_start_factor
    assert logged[warmup] > logged[warmup - 1] > logged[0] and logged[warmup + 1] <= logged[warmup]


@pytest.mark.parametrize("mode", ["min", "max"])
def test_plateau_follows_the_configured_mode(mode, tmp_path, tiny_data):
    # val/loss falls while the model learns: an improvement for mode=min, a stall for mode=max.
    scalars = run(tmp_path, tiny_data, "scheduler=plateau", "monitor=val/loss", f"monitor_mode={mode}",
                  "scheduler.scheduler.patience=0")
    expected = trajectory(lr_scheduler.ReduceLROnPlateau(bare_optimizer(), mode=mode, factor=0.5, patience=0),
                          "epoch", metrics=scalars["val/loss"])
    assert scalars["train/lr-Adam"] == pytest.approx(expected, rel=1e-5)
    assert (scalars["train/lr-Adam"][-1] < LR) == (mode == "max")


def test_warmup_on_a_schedule_that_sets_the_rate_itself_is_refused(tmp_path, tiny_data):
    with pytest.raises(UserError, match=r"scheduler.warmup_steps=5 cannot be combined with .*OneCycleLR"):
        run(tmp_path, tiny_data, "scheduler=onecycle", "+scheduler.warmup_steps=5")


def test_plateau_lowers_the_rate_when_the_metric_stalls_and_resumes_with_its_state(tmp_path, tiny_data):
    # A learning rate too small to change any prediction: val/acc stalls on purpose, exactly. (eps=0:
    # by default the scheduler ignores changes of the rate smaller than 1e-8.)
    stalled = ["scheduler=plateau", "optimizer.lr=1e-12", "+scheduler.scheduler.eps=0",
               "scheduler.scheduler.patience=1",
               "scheduler.scheduler.factor=0.5", "monitor=val/acc", "trainer.num_sanity_val_steps=0"]
    scalars = run(tmp_path / "whole", tiny_data, *stalled)
    accuracies, logged = scalars["val/acc"], scalars["train/lr-Adam"]
    assert len(set(accuracies)) == 1
    # epoch 0 sets the best; epochs 1, 2 do not improve: after patience=1 such epochs the rate halves.
    expected = trajectory(lr_scheduler.ReduceLROnPlateau(bare_optimizer(1e-12), mode="max", factor=0.5,
                                                         patience=1, eps=0), "epoch", metrics=accuracies)
    assert logged == pytest.approx(expected, rel=1e-5)
    assert logged[-1] < logged[0]

    # Its state (best value, bad-epoch count) is in the checkpoint, loadable as plain data, and a run
    # resumed from it lowers the rate exactly where the uninterrupted run did.
    checkpoint = torch.load(tmp_path / "whole" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint["lr_schedulers"][0]
    assert state["best"] == pytest.approx(accuracies[0]) and state["_last_lr"] == pytest.approx([logged[-1]])
    half = tmp_path / "half"
    run(half, tiny_data, *stalled, f"trainer.max_epochs={EPOCHS // 2}")
    resumed = run(half / "resumed", tiny_data, *stalled,
                  f"ckpt_path={half / 'run' / 'checkpoints' / 'last.ckpt'}")["train/lr-Adam"]
    assert resumed == pytest.approx(logged[EPOCHS // 2:], rel=1e-5)


@pytest.mark.runs
def test_a_monitor_that_is_never_logged_is_named_with_the_logged_ones(tmp_path, tiny_data):
    result = run_cli(*quick_overrides(tiny_data, tmp_path), "scheduler=plateau", "scheduler.monitor=val/accuracy")
    assert result.returncode == 2
    assert "scheduler.monitor='val/accuracy' names a metric that is never logged" in result.stderr
    assert ("Logged metrics: lr-Adam, train/acc, train/epoch_seconds, train/loss, train/loss_step, "
            "train/samples_per_second, val/acc, val/loss.") in result.stderr
    assert not list(tmp_path.rglob("*.ckpt"))  # stopped before any checkpoint was written


def test_every_scheduler_option_is_covered():
    options = {path.stem for path in (CONFIG_DIR / "scheduler").glob("*.yaml") if not path.stem.startswith("_")}
    covered = {name.split("-")[0] for name in CASES} | {"warmup_cosine", "plateau", "none"}
    assert options == covered
    assert math.isclose(warmup_inverse_square_root(0, 2), 0.5) and math.isclose(warmup_inverse_square_root(7, 2), 0.5)
