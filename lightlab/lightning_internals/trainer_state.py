"""Single reads and writes of Lightning's and torch's private state, each where no public API does the job.
Every name used here is listed, with its reason, in lightlab/lightning_internals/__init__.py (PRIVATE_NAMES)."""
import torch


def stop_after_this_step(trainer) -> None:
    """Lightning's own SIGTERM flag: the training loop stops after the current step and raises SIGTERMException,
    exactly as for a real SIGTERM (so Ctrl-C gets the same checkpoint and exit). Under DDP (ddp_launch.JobDDPStrategy)
    the request is noted instead, and the ranks agree on it before the next step."""
    connector = trainer._signal_connector
    if hasattr(connector, "stop_requested"):
        connector.stop_requested = True
    else:
        connector.received_sigterm = True


def lr_finder_running(trainer) -> bool:
    """Whether this fit is the learning-rate finder's trial fit (its callback is in the trainer's list meanwhile)."""
    from pytorch_lightning.tuner.lr_finder import _LRCallback

    return any(isinstance(callback, _LRCallback) for callback in trainer.callbacks)


def epoch_finished(fit_loop) -> bool:
    """Whether the training epoch ran all its batches (not stopped inside it)."""
    return fit_loop.epoch_loop._num_ready_batches_reached()


def logs_this_step(trainer) -> bool:
    """Whether the logger writes this training step's scalars (every trainer.log_every_n_steps), for training_step:
    Lightning's `should_update_logs` for the fit loop, without its search for the active loop (~10 us a step)."""
    every = trainer.log_every_n_steps
    return bool(every) and ((trainer.fit_loop.epoch_loop._batches_that_stepped + 1) % every == 0 or trainer.should_stop)


def event_file_writer(tensorboard_logger):
    """The run's own TensorBoard event-file writer (SummaryWriter.add_hparams would start a new sub-run)."""
    return tensorboard_logger.experiment._get_file_writer()


def ddp_leaves_alone(module: torch.nn.Module, buffer_name: str) -> None:
    """DistributedDataParallel neither broadcasts nor syncs the buffers a module lists in this attribute (torch
    issue 43690): a per-process running sum must stay each process's own."""
    ignored = [*getattr(module, "_ddp_params_and_buffers_to_ignore", []), buffer_name]
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)


# The torch.onnx exporter's registration logger: it reports every operator library it skips ("torchvision is not
# installed") at WARNING level on every export.
ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"
