"""Every use of a private Lightning or torch name lives in this package: a Lightning or torch release that renames
one of them fails tests/unit/test_lightning_internals.py (which checks each name below exists) instead of silently
switching a fast path off or breaking SIGTERM handling.

    hook_dispatch.py   Lightning's per-step hook dispatch, without the work that does nothing (the fast path)
    lean_epoch.py      the training batch's work around the step, the same way
    logged_values.py   self.log's store, not moved to the device it is on
    hydra_mode.py      Hydra's run mode read without composing the config for it (a Hydra internal, kept here too)
    ddp_launch.py      DDP ranks started as single runs of a Hydra job, and Lightning's SIGTERM handler under DDP
    trainer_state.py   single reads and writes of trainer, loop and DDP state
    dependency_waits.py  torchmetrics' matplotlib import and the Rich bar's sleeping thread, removed (start, stop)
    (below)            one deprecation warning that Lightning's own code triggers on every run, filtered at its source
"""
import importlib
import logging
import warnings
from typing import NamedTuple


class PrivateName(NamedTuple):
    owner: str  # a module's dotted path, or one of SAMPLES (an object built for the check)
    name: str   # attribute path below the owner
    reason: str


def _sample_trainer():
    import pytorch_lightning as pl

    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", devices=1)


def _sample(class_path: str):
    module, _, name = class_path.rpartition(".")
    return lambda: getattr(importlib.import_module(module), name)()


# Objects whose instance attributes are checked (a class does not show what its __init__ sets).
SAMPLES = {
    "a Trainer": _sample_trainer,
    "a LightningModule": _sample("pytorch_lightning.LightningModule"),
    "a ModelCheckpoint": _sample("pytorch_lightning.callbacks.ModelCheckpoint"),
    "a DDPStrategy": _sample("pytorch_lightning.strategies.DDPStrategy"),
    "a rich Live": _sample("rich.live.Live"),
}

CALL = "pytorch_lightning.trainer.call"
LAUNCHERS = "pytorch_lightning.strategies.launchers.subprocess_script"
PRIVATE_NAMES = (
    # hook_dispatch.py: the fast path
    PrivateName(CALL, "_call_callback_hooks", "replaced: only the callbacks that define a hook are called"),
    PrivateName(CALL, "_call_lightning_module_hook", "replaced: no profiler-name f-strings on every hook call"),
    PrivateName(CALL, "_call_strategy_hook", "replaced: no profiler-name f-strings on every hook call"),
    PrivateName("pytorch_lightning.loops.training_epoch_loop", "is_param_in_hook_signature",
                "replaced in that module: the training_step signature is inspected once, not every step"),
    PrivateName("a LightningModule", "_current_fx_name", "set around each hook, as Lightning's dispatch does"),
    PrivateName("pytorch_lightning.loops.optimization.automatic", "_AutomaticOptimization.run",
                "replaced: the plain optimization step makes Lightning's calls without its layers (_lean_step)"),
    PrivateName("a Trainer", "fit_loop.epoch_loop.automatic_optimization._skip_backward",
                "the lean step applies only when backward is not skipped"),
    PrivateName("a Trainer", "fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.zero_grad",
                "the lean step counts steps and zero_grads as Lightning does (exact resume reads them)"),
    PrivateName("a ModelCheckpoint", "_every_n_train_steps", "a checkpoint that saves on epochs only: no batch hook"),
    PrivateName("a ModelCheckpoint", "_train_time_interval", "a checkpoint that saves on epochs only: no batch hook"),
    # lean_epoch.py
    PrivateName("pytorch_lightning.loops.training_epoch_loop", "_TrainingEpochLoop.advance",
                "replaced: the plain batch makes Lightning's calls without the work that does nothing (_lean_advance)"),
    PrivateName("pytorch_lightning.loops.training_epoch_loop", "_TrainingEpochLoop._should_check_val_fx",
                "replaced: False at once for a batch that can start no validation"),
    PrivateName("a Trainer", "_val_check_time_interval", "validation by time: the shortcut above then stands aside"),
    PrivateName("a Trainer", "_data_connector._datahook_selector", "picks whose batch-transfer hooks run"),
    PrivateName("pytorch_lightning.trainer.connectors.data_connector", "_DataHookSelector.get_instance",
                "the DataModule's or the module's batch-transfer hook, resolved once per fit, not per batch"),
    PrivateName("a Trainer", "_logger_connector.on_batch_start", "called by the lean batch as Lightning calls it"),
    PrivateName("a Trainer", "_logger_connector.update_train_step_metrics", "the same"),
    PrivateName("a Trainer", "_logger_connector.on_batch_end", "called when a value logged with on_step changed"),
    PrivateName("a Trainer", "_results", "the logged values whose on_step ones the lean batch compares"),
    PrivateName("pytorch_lightning.trainer.connectors.logger_connector.result", "_ResultMetric",
                "its _forward_cache, has_reset and meta.on_step: whether a batch logged a new step value"),
    PrivateName("a Trainer", "fit_loop.epoch_loop._build_kwargs", "training_step's arguments, as Lightning's"),
    PrivateName("pytorch_lightning.loops.fetchers", "_PrefetchDataFetcher", "the lean batch reads only this fetcher"),
    # logged_values.py
    PrivateName("pytorch_lightning.trainer.connectors.logger_connector.result", "_ResultMetric.to",
                "replaced: a logged value's store returns at once when all of it is on the device already"),
    # hydra_mode.py (Hydra's, not Lightning's: a private module all the same)
    PrivateName("hydra._internal.hydra", "Hydra.get_mode", "replaced: no composition only to read an unset hydra.mode"),
    # ddp_launch.py
    PrivateName(LAUNCHERS, "_SubprocessScriptLauncher._call_children_scripts",
                "the ranks of a job start as single runs of that job, not as the whole multirun again"),
    PrivateName(LAUNCHERS, "_hydra_subprocess_cmd", "patched during the launch with the job's own command line"),
    PrivateName("a DDPStrategy", "_configure_launcher", "installs the job launcher above"),
    PrivateName("a DDPStrategy", "_launcher", "what _configure_launcher sets"),
    PrivateName("a Trainer", "_signal_connector._sigterm_notifier_fn",
                "replaced under DDP: the signal is only noted (Lightning's handler broadcasts inside itself)"),
    PrivateName("a Trainer", "fit_loop.epoch_loop._broadcast_sigterm_tensor",
                "replaced under DDP: the ranks agree before each step on whether any was signalled, so all stop there"),
    # dependency_waits.py
    PrivateName("torchmetrics.utilities.imports", "_MATPLOTLIB_AVAILABLE",
                "set unavailable before torchmetrics.utilities.plot loads: no matplotlib import at start-up"),
    PrivateName("torchmetrics.utilities.plot", "_MATPLOTLIB_AVAILABLE", "the module that reads it, once, on import"),
    PrivateName("pytorch_lightning.callbacks.progress.rich_progress", "_RefreshThread.run",
                "replaced: the thread waits on its stop flag instead of sleeping, so teardown's join is immediate"),
    PrivateName("a rich Live", "_lock", "held around each redraw, as Lightning's thread does"),
    # trainer_state.py
    PrivateName("a Trainer", "_signal_connector.received_sigterm", "Ctrl-C stops after the step, as SIGTERM does"),
    PrivateName("a Trainer", "fit_loop.epoch_loop._num_ready_batches_reached",
                "a resumed epoch that finished takes ReduceLROnPlateau's step Lightning skips after a restart"),
    PrivateName("a Trainer", "fit_loop.epoch_loop._batches_that_stepped", "the step loss is logged only when written"),
    PrivateName("pytorch_lightning.tuner.lr_finder", "_LRCallback", "no signal checkpoint during the lr finder's fit"),
    PrivateName("torch.utils.tensorboard", "SummaryWriter._get_file_writer",
                "HPARAMS into the run's own event file (add_hparams would start a sub-run)"),
    PrivateName("torch.nn.parallel", "DistributedDataParallel._set_params_and_buffers_to_ignore_for_model",
                "DDP neither broadcasts nor syncs the buffers it lists: per-process running sums"),
    PrivateName("pytorch_lightning.utilities._pytree", "_tree_flatten",
                "builds the deprecated LeafSpec: its FutureWarning is filtered at this module (LEAF_SPEC_WARNING)"),
    PrivateName("torch.onnx._internal.exporter._registration", "logger",
                "quieted during export: it warns about every operator library it skips"),
)


def missing_private_names() -> list[str]:
    """The names of PRIVATE_NAMES that the installed Lightning and torch lack, each with what depends on it."""
    missing, samples = [], {}
    for entry in PRIVATE_NAMES:
        try:
            if entry.owner in SAMPLES:
                value = samples[entry.owner] = samples.get(entry.owner) or SAMPLES[entry.owner]()
            else:
                value = importlib.import_module(entry.owner)
        except ImportError as error:
            missing.append(f"{entry.owner}: cannot be imported ({error}); needed because: {entry.reason}")
            continue
        for part in entry.name.split("."):
            if not hasattr(value, part):
                missing.append(f"{entry.owner}.{entry.name}: '{part}' does not exist in the installed version; "
                               f"needed because: {entry.reason}")
                break
            value = getattr(value, part)
    return missing


# torch 2.13 deprecates constructing LeafSpec; Lightning 2.6's CombinedLoader constructs one for every loader it
# wraps, so each run printed "`isinstance(treespec, LeafSpec)` is deprecated" (a FutureWarning, Lightning's code,
# nothing a user can change). Only that message from that module is silenced; every other warning still shows.
LEAF_SPEC_WARNING = dict(message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning,
                         module=r"pytorch_lightning\.utilities\._pytree")


def filter_dependency_warnings() -> None:
    """On import of this package (every run imports it before training); again wherever warning filters were reset."""
    warnings.filterwarnings("ignore", **LEAF_SPEC_WARNING)
    lightning_log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, NoAdvertisement) for f in lightning_log.filters):
        lightning_log.addFilter(NoAdvertisement())


class NoAdvertisement(logging.Filter):
    """Lightning 2.6 logs "💡 Tip: … try installing litlogger …" at the start of every fit without its cloud logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


filter_dependency_warnings()
