"""What keeps Lightning's per-step overhead small enough for small models.

Measured on the 2-core CPU (MNIST, batch 128): a hand-written step of the 784-512-256-128-10 MLP takes ~4.3 ms, and
stock Lightning adds ~0.7 ms to each. The pieces here remove what does no work (benchmarks/suite.py measures it).
"""
import contextlib
from typing import NamedTuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loops import training_epoch_loop
from pytorch_lightning.loops.optimization import automatic
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy, Strategy
from pytorch_lightning.trainer import call
from pytorch_lightning.utilities.model_helpers import is_overridden
from pytorch_lightning.utilities.signature_utils import is_param_in_hook_signature

_NOTHING = contextlib.nullcontext()


class NoProfiler(PassThroughProfiler):
    """Lightning wraps ~50 calls per step in `profiler.profile(name)`; with no profiler each still builds
    and runs a generator-based context manager. Returning one shared null context makes them free."""

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOTHING


class FastHooksModule(pl.LightningModule):
    """Lightning sets `_current_fx_name` around every hook call (~50 times a step); nn.Module.__setattr__
    checks each value against parameters, buffers and submodules first. A hook name is none of those, nor are
    the per-step bookkeeping attributes that subclasses list in `plain_attributes`."""

    plain_attributes = frozenset({"_current_fx_name"})

    def __setattr__(self, name, value):
        if name in self.plain_attributes:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """Lightning hands torch's optimizer a closure that runs training_step and backward, so forward and backward
        run inside optimizer.step's wrappers (grad-mode switches, a profiler range, dynamo's disable context, which
        intercepts every Python call): ~0.1 ms more a step, 10-15% of a small MLP's step on this CPU. Running the
        closure first and then stepping keeps Lightning's order (training_step, zero_grad, backward,
        on_before_optimizer_step, gradient clipping, step), as Lightning's own AMP plugin does. LBFGS re-evaluates
        the loss inside its step, so it keeps the closure. (`_lean_step` below does the same without the layers.)"""
        if optimizer_closure is None or isinstance(optimizer.optimizer, torch.optim.LBFGS):
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        loss = optimizer_closure()
        return optimizer.step(closure=lambda: loss)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Without trainer.gradient_clip_val, Lightning's default validates the unset settings every step and clips
        nothing (~10 us a step); `planned_step` then skips the call altogether."""
        if gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)


# What follows replaces three of Lightning's dispatch functions when no profiler is set (NoProfiler, the default),
# and hands over to Lightning's own when one is (trainer.profiler=simple), so profiles keep their names.
#  - Callback hooks: Lightning calls each of ~6 hooks a step on every callback (11 by default), overridden or not,
#    and first formats a profiler name from `callback.state_key`, which ModelCheckpoint rebuilds from its settings
#    on every call. Here only the callbacks that define the hook are called, in the same order.
#  - LightningModule and Strategy hooks (~15 a step): the same, without the two f-strings each.
#  - The training loop inspects training_step's signature on every step; the answer is cached per function.
_lightning_call_callback_hooks = call._call_callback_hooks
_lightning_call_module_hook = call._call_lightning_module_hook
_lightning_call_strategy_hook = call._call_strategy_hook


# Hook calls that took the fast path, by kind: tests/unit/test_lightning_internals.py asserts a real fit moves them,
# so a Lightning release that stops calling through `call` (the patch would then do nothing) fails a test.
dispatched = {"callback": 0, "module": 0, "strategy": 0, "signature": 0, "lean_step": 0, "lean_advance": 0,
              "val_check_skipped": 0, "metrics_unchanged": 0, "hook_not_defined": 0, "log_not_moved": 0}


def _defines(callback: Callback, hook_name: str) -> bool:
    if (hook_name == "on_train_batch_end" and isinstance(callback, ModelCheckpoint)
            and callback._every_n_train_steps < 1 and callback._train_time_interval is None):
        return False  # it saves only on epochs then: its per-batch hook returns without doing anything
    if hook_name in getattr(callback, "idle_hooks", ()):  # the callback says that, with its settings, it does nothing
        return False
    return (getattr(type(callback), hook_name, None) is not getattr(Callback, hook_name, None)
            or hook_name in vars(callback))


def _callbacks_defining(trainer, hook_name) -> list:
    """Per trainer and hook: the callbacks that define it, recomputed whenever the trainer's list changes."""
    cache = trainer.__dict__.setdefault("_callbacks_defining", {})
    all_callbacks = tuple(trainer.callbacks)
    cached = cache.get(hook_name)
    if cached is None or cached[0] != all_callbacks:
        cached = cache[hook_name] = (all_callbacks, [c for c in all_callbacks if _defines(c, hook_name)])
    return cached[1]


_overrides: dict[tuple, bool] = {}  # (LightningModule class, hook): whether the class overrides the hook


def _overridden(module, hook_name: str) -> bool:
    key = (type(module), hook_name)
    if key not in _overrides:
        _overrides[key] = is_overridden(hook_name, module)
    return _overrides[key]


def _call_defined_callback_hooks(trainer, hook_name, *args, monitoring_callbacks=None, **kwargs):
    if type(trainer.profiler) is not NoProfiler or monitoring_callbacks is not None:
        return _lightning_call_callback_hooks(trainer, hook_name, *args, monitoring_callbacks=monitoring_callbacks,
                                              **kwargs)
    return _run_callbacks(trainer, hook_name, _callbacks_defining(trainer, hook_name), *args, **kwargs)


def _run_callbacks(trainer, hook_name, callbacks, *args, **kwargs) -> None:
    dispatched["callback"] += 1
    module = trainer.lightning_module
    if module:
        previous_hook, module._current_fx_name = module._current_fx_name, hook_name
    for callback in callbacks:
        getattr(callback, hook_name)(trainer, module, *args, **kwargs)
    if module:
        module._current_fx_name = previous_hook
    return None


def _call_module_hook(trainer, hook_name, *args, pl_module=None, **kwargs):
    if type(trainer.profiler) is not NoProfiler:
        return _lightning_call_module_hook(trainer, hook_name, *args, pl_module=pl_module, **kwargs)
    dispatched["module"] += 1
    module = pl_module or trainer.lightning_module
    if module is None:
        raise TypeError("No `LightningModule` is available to call hooks on.")
    hook = getattr(module, hook_name)
    if not callable(hook):
        return None
    return in_hook(module, hook_name, hook, *args, **kwargs)


def _call_strategy_hook(trainer, hook_name, *args, **kwargs):
    if type(trainer.profiler) is not NoProfiler:
        return _lightning_call_strategy_hook(trainer, hook_name, *args, **kwargs)
    dispatched["strategy"] += 1
    module = trainer.lightning_module
    previous_hook, module._current_fx_name = module._current_fx_name, hook_name
    hook = getattr(trainer.strategy, hook_name)
    if not callable(hook):
        return None
    output = hook(*args, **kwargs)
    module._current_fx_name = previous_hook
    return output


_signature_answers: dict[tuple, bool] = {}


def _has_parameter(hook_fx, parameter: str, explicit: bool = False, min_args: int | None = None) -> bool:
    # Keyed by the function behind a bound method: the same for every instance, and for every step.
    dispatched["signature"] += 1
    key = (getattr(hook_fx, "__func__", hook_fx), parameter, explicit, min_args)
    if key not in _signature_answers:
        _signature_answers[key] = is_param_in_hook_signature(hook_fx, parameter, explicit, min_args)
    return _signature_answers[key]


# The optimization step. Lightning builds a Closure and three functions each step and runs training_step, zero_grad
# and backward through the strategy's and precision plugin's layers, then the step through LightningOptimizer,
# the strategy and the plugin again (~5% of a 784-64-128-64-10 step on this CPU). For the plain case (one device,
# 32-bit, no accumulation, no profiler, FastHooksModule's optimizer_step, not LBFGS) `planned_step` makes the same
# calls in the same order with the same progress counts; anything else goes Lightning's way. The same seed gives
# the same weights either way (tests/unit/test_fast_loop.py).
_lightning_optimization_run = automatic._AutomaticOptimization.run
BATCH_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
STEP_HOOKS = ("on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward",
              "on_before_optimizer_step", "on_train_batch_end")


class StepPlan(NamedTuple):
    """What a fit's steps call, worked out once, not asked again for each of the ~8 hooks of every step (which
    callbacks define it, whether the module overrides it, whether the lean paths apply). With the plan the LHT-net's
    epoch went from 1.13x to 1.10x the hand-written one (callbacks and logger off; 2026-12-08, this CPU)."""
    key: tuple           # (module, strategy, data-hook selector, callbacks): a new plan whenever one changes
    lean_step: bool      # what `planned_step` needs that holds for the whole fit
    lean_batch: bool     # ... and lean_epoch's batch
    hooks: dict          # hook name -> ([the defining callbacks' bound hooks], the module's bound hook or None)
    batch_hooks: list    # lean_epoch's: [(name, bound hook, whether it is the module's)], as Lightning selects them
    takes_batch_index: bool  # training_step(batch, batch_idx) rather than training_step(batch)
    own_step_hooks: tuple    # (zero_grad, backward, clipping hook): the module's where it changes it, else None


def step_plan(trainer) -> StepPlan:
    module, strategy, selector = trainer.lightning_module, trainer.strategy, trainer._data_connector._datahook_selector
    key = (module, strategy, selector, tuple(trainer.callbacks))
    plan = trainer.__dict__.get("_step_plan")
    if plan is not None and plan.key == key:
        return plan
    plain = type(trainer.profiler) is NoProfiler and type(strategy) is SingleDeviceStrategy
    lean_step = (plain and type(strategy.precision_plugin) is Precision and strategy.model is module
                 and trainer.accumulate_grad_batches == 1
                 and type(module).optimizer_step is FastHooksModule.optimizer_step)
    lean_batch = (plain and not _overridden(module, "on_train_batch_start")  # (the module's runs through the strategy)
                  and type(strategy).on_train_batch_start is Strategy.on_train_batch_start)
    hooks = {name: ([getattr(callback, name) for callback in _callbacks_defining(trainer, name)],
                    getattr(module, name) if _overridden(module, name) else None) for name in STEP_HOOKS}
    batch_hooks = [(name, getattr(selector.get_instance(name), name), selector.get_instance(name) is module)
                   for name in BATCH_HOOKS] if selector is not None else []
    own = [getattr(module, name) if _overridden(module, name) else None
           for name in ("optimizer_zero_grad", "backward", "configure_gradient_clipping")]
    if module.fabric is not None:  # (LightningModule.backward hands the loss to Fabric then)
        own[1] = module.backward
    if type(module).configure_gradient_clipping is FastHooksModule.configure_gradient_clipping:
        own[2] = None  # (called where trainer.gradient_clip_val is set)
    plan = StepPlan(key, lean_step, lean_batch, hooks, batch_hooks,
                    _has_parameter(module.training_step, "batch_idx", min_args=2), tuple(own))
    trainer.__dict__["_step_plan"] = plan
    return plan


def run_hook(trainer, module, name: str, plan: StepPlan, *args) -> None:
    """The callbacks' hook, then the module's, as Lightning orders them; neither where nobody defines it (Lightning
    calls the empty defaults: 4 of them around every step, twice each, ~10 us a step on this CPU)."""
    callbacks, own = plan.hooks[name]
    if not callbacks and own is None:
        dispatched["hook_not_defined"] += 1
        return
    previous, module._current_fx_name = module._current_fx_name, name
    for hook in callbacks:
        hook(trainer, module, *args)
    if own is not None:
        own(*args)
    module._current_fx_name = previous


def in_hook(module, name: str, function, *args, **kwargs):
    """`function(*args, **kwargs)` with the module's `_current_fx_name` set to `name`, as Lightning's dispatch does."""
    previous, module._current_fx_name = module._current_fx_name, name
    output = function(*args, **kwargs)
    module._current_fx_name = previous
    return output


def planned_step_applies(plan: StepPlan, step, optimizer) -> bool:
    """Whether this step (`step`: the loop's _AutomaticOptimization) can run as `planned_step`."""
    return plan.lean_step and not step._skip_backward and not isinstance(optimizer, torch.optim.LBFGS)


def _lean_step(self, optimizer, batch_idx, kwargs):
    plan = step_plan(self.trainer)
    if not planned_step_applies(plan, self, optimizer):
        return _lightning_optimization_run(self, optimizer, batch_idx, kwargs)
    return planned_step(self, self.trainer, plan, optimizer, batch_idx, tuple(kwargs.values()))


def planned_step(self, trainer, plan: StepPlan, optimizer, batch_idx: int, step_args: tuple) -> dict:
    """_AutomaticOptimization.run's calls for the plain case (`self` is the loop's _AutomaticOptimization)."""
    dispatched["lean_step"] += 1
    module = trainer.lightning_module
    progress = self.optim_progress.optimizer
    progress.step.increment_ready()
    # Strategy.training_step (under Precision's train_step_context: a null context)
    output = in_hook(module, "training_step", module.training_step, *step_args)
    if isinstance(output, torch.Tensor):  # ClosureResult's work for a loss (its `/ 1` and dataclass set-up left out)
        closure_loss, outputs = output, {"loss": output.detach().clone()}
    else:
        result = automatic.ClosureResult.from_training_step_output(output, 1)
        closure_loss, outputs = result.closure_loss, {} if result.loss is None else result.asdict()
    own_zero_grad, own_backward, own_clipping = plan.own_step_hooks
    progress.zero_grad.increment_ready()  # Closure: zero_grad, then backward
    run_hook(trainer, module, "on_before_zero_grad", plan, optimizer)
    progress.zero_grad.increment_started()
    if own_zero_grad is None:
        optimizer.zero_grad()
    else:
        in_hook(module, "optimizer_zero_grad", own_zero_grad, trainer.current_epoch, batch_idx, optimizer)
    progress.zero_grad.increment_completed()
    if closure_loss is not None:  # Strategy.backward through the precision plugin
        run_hook(trainer, module, "on_before_backward", plan, closure_loss)
        if own_backward is None:
            closure_loss.backward()
        else:
            in_hook(module, "backward", own_backward, closure_loss)
        run_hook(trainer, module, "on_after_backward", plan)
    run_hook(trainer, module, "on_before_optimizer_step", plan, optimizer)  # Precision._after_closure
    if own_clipping is not None or trainer.gradient_clip_val:
        in_hook(module, "configure_gradient_clipping", module.configure_gradient_clipping, optimizer,
                gradient_clip_val=trainer.gradient_clip_val, gradient_clip_algorithm=trainer.gradient_clip_algorithm)
    optimizer.step()
    progress.step.increment_completed()
    return outputs


automatic._AutomaticOptimization.run = _lean_step
call._call_callback_hooks = _call_defined_callback_hooks
call._call_lightning_module_hook = _call_module_hook
call._call_strategy_hook = _call_strategy_hook
training_epoch_loop.is_param_in_hook_signature = _has_parameter
