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
module); anything else goes Lightning's way. The same seed gives the same weights and the same logged scalars
either way (tests/unit/test_fast_loop.py).
"""
from collections import OrderedDict

from pytorch_lightning.loops import training_epoch_loop
from pytorch_lightning.loops.fetchers import _PrefetchDataFetcher
from pytorch_lightning.strategies import SingleDeviceStrategy, Strategy

from lightlab.lightning_internals.hook_dispatch import (
    NoProfiler,
    _call_defined_callback_hooks,
    _call_module_hook,
    _overridden,
    dispatched,
)
from lightlab.lightning_internals.trainer_state import logs_this_step

_lightning_advance = training_epoch_loop._TrainingEpochLoop.advance
_lightning_should_check_val = training_epoch_loop._TrainingEpochLoop._should_check_val_fx
BATCH_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def _batch_hooks(trainer) -> list:
    """[(hook name, the bound method that runs it, whether it is the LightningModule's)], as Lightning's data-hook
    selector picks them (the DataModule's where it overrides the hook), worked out once per module and DataModule."""
    module, selector = trainer.lightning_module, trainer._data_connector._datahook_selector
    key = (id(module), id(selector.datamodule), id(selector.model))
    cached = trainer.__dict__.get("_lean_batch_hooks")
    if cached is None or cached[0] != key:
        hooks = []
        for name in BATCH_HOOKS:
            owner = selector.get_instance(name)
            hooks.append((name, getattr(owner, name), owner is module))
        cached = trainer.__dict__["_lean_batch_hooks"] = (key, hooks)
    return cached[1]


def _to_device(trainer, batch):
    """on_before_batch_transfer, then what Strategy.batch_to_device runs: transfer_batch_to_device and
    on_after_batch_transfer; `_current_fx_name` is what Lightning's dispatch sets around each."""
    module = trainer.lightning_module
    previous = module._current_fx_name
    for name, hook, on_module in _batch_hooks(trainer):
        module._current_fx_name = name if on_module else previous if name == BATCH_HOOKS[0] else "batch_to_device"
        batch = hook(batch, trainer.strategy.root_device, 0) if name == BATCH_HOOKS[1] else hook(batch, 0)
    module._current_fx_name = previous
    return batch


def _lean_advance_applies(loop, trainer, data_fetcher) -> bool:
    module, strategy = trainer.lightning_module, trainer.strategy
    return (type(trainer.profiler) is NoProfiler and type(data_fetcher) is _PrefetchDataFetcher
            and type(strategy) is SingleDeviceStrategy and module.automatic_optimization and not loop.restarting
            and not _overridden(module, "on_train_batch_start")
            and type(strategy).on_train_batch_start is Strategy.on_train_batch_start)


def _lean_advance(self, data_fetcher) -> None:
    trainer = self.trainer
    if not _lean_advance_applies(self, trainer, data_fetcher):
        return _lightning_advance(self, data_fetcher)
    dispatched["lean_advance"] += 1
    self.val_loop.restarting = False
    batch, _, __ = next(data_fetcher)
    batch_idx = self.batch_idx + 1
    self.batch_progress.is_last_batch = data_fetcher.done
    batch = _to_device(trainer, trainer.precision_plugin.convert_input(batch))
    self.batch_progress.increment_ready()
    trainer._logger_connector.on_batch_start(batch)
    _call_defined_callback_hooks(trainer, "on_train_batch_start", batch, batch_idx)  # (not the module's: see above)
    self.batch_progress.increment_started()
    kwargs = self._build_kwargs(OrderedDict(), batch, batch_idx)
    batch_output = self.automatic_optimization.run(trainer.optimizers[0], batch_idx, kwargs)
    self.batch_progress.increment_processed()
    if trainer.lr_scheduler_configs:  # (without any, both calls return at once)
        self.update_lr_schedulers("step", update_plateau_schedulers=False)
        if self._num_ready_batches_reached():
            self.update_lr_schedulers("epoch", update_plateau_schedulers=False)
    _call_defined_callback_hooks(trainer, "on_train_batch_end", batch_output, batch, batch_idx)
    if _overridden(trainer.lightning_module, "on_train_batch_end"):
        _call_module_hook(trainer, "on_train_batch_end", batch_output, batch, batch_idx)
    _batch_end_metrics(trainer, self._results)
    self.batch_progress.increment_completed()
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
