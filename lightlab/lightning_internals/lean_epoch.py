"""The training epoch's per-batch work outside the optimization step, without the parts that do nothing.

Per-call timers on the 2-core CPU (MNIST, a small MLP) put these in Lightning's `advance`, every batch:
  - the batch's transfer hooks resolved through Lightning's data-hook selector (two `is_overridden` checks per
    hook, three hooks) and dispatched through a profiler name: ~25 us;
  - the logger connector's `on_batch_end`, which rebuilds the step metrics from every value logged with on_step
    (~25 us), and `update_train_step_metrics`, which writes only on logging steps (~15 us);
  - `_should_check_val_fx`, which walks its whole decision though validation can only start on the last batch
    when it runs once per epoch (~15 us);
  - the dispatch of a strategy hook (`on_train_batch_start`) that single-device training does not define, of the
    module's own batch hooks where it does not override them, and of the scheduler updates without a scheduler.
End to end the saving is smaller than these add up to: on a 784-8-10 network (nearly free maths) the framework's
step took 839 us with `_lean_advance` and 850 us with Lightning's `advance`, against 603 us hand-written (minimum
epoch of 12 each, timed by a script outside the project on 2026-12-07). `_lean_advance` makes the same calls in
the same order with the same progress counts, but skips `on_batch_end`'s rebuild when no value logged with on_step
changed and calls `update_train_step_metrics` only on the steps it writes; it runs for the plain case (no profiler,
one device, a prefetching fetcher, automatic optimization, not restarting, no `on_train_batch_start` on the
module); anything else goes Lightning's way. What it calls comes from the fit's step plan (hook_dispatch.step_plan),
and the optimization step runs as hook_dispatch.planned_step, without the _AutomaticOptimization layer. The same
seed gives the same weights and the same logged scalars either way (tests/unit/test_fast_loop.py).
"""
from collections import OrderedDict

from pytorch_lightning.loops import training_epoch_loop
from pytorch_lightning.loops.fetchers import _PrefetchDataFetcher

from lightlab.lightning_internals.hook_dispatch import (
    BATCH_HOOKS,
    NoProfiler,
    StepPlan,
    dispatched,
    in_hook,
    planned_step,
    planned_step_applies,
    run_hook,
    step_plan,
)
from lightlab.lightning_internals.trainer_state import logs_this_step

_lightning_advance = training_epoch_loop._TrainingEpochLoop.advance
_lightning_should_check_val = training_epoch_loop._TrainingEpochLoop._should_check_val_fx


def _to_device(trainer, plan: StepPlan, batch):
    """on_before_batch_transfer, then what Strategy.batch_to_device runs: transfer_batch_to_device and
    on_after_batch_transfer; `_current_fx_name` is what Lightning's dispatch sets around each."""
    module = trainer.lightning_module
    for name, hook, on_module in plan.batch_hooks:
        fx_name = name if on_module else module._current_fx_name if name == BATCH_HOOKS[0] else "batch_to_device"
        batch = (in_hook(module, fx_name, hook, batch, trainer.strategy.root_device, 0) if name == BATCH_HOOKS[1]
                 else in_hook(module, fx_name, hook, batch, 0))
    return batch


def _lean_advance(self, data_fetcher) -> None:
    trainer = self.trainer
    plan = step_plan(trainer)
    module = trainer.lightning_module
    if (not plan.lean_batch or type(data_fetcher) is not _PrefetchDataFetcher or self.restarting
            or not module.automatic_optimization):
        return _lightning_advance(self, data_fetcher)
    dispatched["lean_advance"] += 1
    if self.val_loop.restarting:  # (Lightning sets it on every batch; its setter walks the loop's attributes)
        self.val_loop.restarting = False
    batch, _, __ = next(data_fetcher)
    progress = self.batch_progress
    batch_idx = progress.current.ready  # (self.batch_idx + 1)
    progress.is_last_batch = data_fetcher.done
    batch = _to_device(trainer, plan, trainer.precision_plugin.convert_input(batch))
    progress.increment_ready()
    trainer._logger_connector.on_batch_start(batch)
    run_hook(trainer, module, "on_train_batch_start", plan, batch, batch_idx)  # (not the module's: see above)
    progress.increment_started()
    optimizer, step = trainer.optimizers[0], self.automatic_optimization
    if planned_step_applies(plan, step, optimizer):
        batch_output = planned_step(step, trainer, plan, optimizer, batch_idx,
                                    (batch, batch_idx) if plan.takes_batch_index else (batch,))
    else:
        batch_output = step.run(optimizer, batch_idx, self._build_kwargs(OrderedDict(), batch, batch_idx))
    progress.increment_processed()
    if trainer.lr_scheduler_configs:  # (without any, both calls return at once)
        self.update_lr_schedulers("step", update_plateau_schedulers=False)
        if self._num_ready_batches_reached():
            self.update_lr_schedulers("epoch", update_plateau_schedulers=False)
    run_hook(trainer, module, "on_train_batch_end", plan, batch_output, batch, batch_idx)
    _batch_end_metrics(trainer, self._results)
    progress.increment_completed()
    if trainer.fast_dev_run or logs_this_step(trainer):  # update_train_step_metrics writes only then
        trainer._logger_connector.update_train_step_metrics()
    return None


def _batch_end_metrics(trainer, results) -> None:
    """The logger connector's on_batch_end: it rebuilds the step's logged, callback and progress-bar metrics from
    every value logged with on_step (~25 us a batch), though they change only on the batches that log one (every
    log_every_n_steps for the step loss). It runs when a value logged with on_step is not the one it last read, or
    a value was logged for the first time; `results` is the training loop's (what trainer._results is now)."""
    cached = trainer.__dict__.get("_lean_step_values")  # (it holds the tensors: no new one can take their ids)
    if (cached is not None and cached[0] is results and cached[1] == len(results)
            and all(metric._forward_cache is value and metric.has_reset == reset
                    for metric, value, reset in cached[2])):
        dispatched["metrics_unchanged"] += 1
        results.batch = results.batch_size = None  # the rest of on_batch_end: drop the batch
        return
    logged = [(metric, metric._forward_cache, metric.has_reset) for metric in results.values() if metric.meta.on_step]
    trainer._logger_connector.on_batch_end()
    trainer.__dict__["_lean_step_values"] = (results, len(results), logged)


def _should_check_val(self, data_fetcher) -> bool:
    """False at once for a batch that is neither the last nor a val-check batch (by count, not by time) while no stop
    is requested: each of Lightning's branches then returns False too. (Lightning's own under a profiler.)"""
    trainer = self.trainer
    every = trainer.val_check_batch
    if (not self.batch_progress.is_last_batch and not trainer.should_stop and type(every) is int
            and type(trainer.profiler) is NoProfiler
            and trainer._val_check_time_interval is None and trainer.check_val_every_n_epoch is not None
            and type(data_fetcher) is _PrefetchDataFetcher and (self.batch_idx + 1) % every):
        dispatched["val_check_skipped"] += 1
        return False
    return _lightning_should_check_val(self, data_fetcher)


training_epoch_loop._TrainingEpochLoop.advance = _lean_advance
training_epoch_loop._TrainingEpochLoop._should_check_val_fx = _should_check_val
