"""From config to optimizer and learning-rate schedules: parameter groups, SparseAdam, warmup, run lengths.

The task modules call these from `configure_optimizers`; every setting comes from conf/optimizer,
conf/scheduler and the `parameter_groups` node of conf/config.yaml.
"""
import math

import torch
from hydra.utils import instantiate
from torch import nn

from lightlab.base.errors import UserError
from lightlab.base.objects import build

# Public classes only (torch's common base of batch and instance norm, _NormBase, is private).
NORMALIZATION_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d,
                        nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LazyBatchNorm1d, nn.LazyBatchNorm2d,
                        nn.LazyBatchNorm3d, nn.LazyInstanceNorm1d, nn.LazyInstanceNorm2d, nn.LazyInstanceNorm3d,
                        nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
SPARSE_LAYERS = (nn.Embedding, nn.EmbeddingBag)
# Scheduler arguments that give a schedule's length. Left null in conf/scheduler, they are filled in
# with the run's length in the scheduler's own unit (epochs or optimizer steps; see
# lightning_modules/optimization.py), so nobody types a step count that silently stops matching
# when batch size or epochs change.
RUN_LENGTH_ARGUMENTS = ("T_max", "total_steps", "total_iters")


def parameter_groups(module: nn.Module, lr: float, lr_multipliers: dict[str, float] | None, weight_decay: float = 0.0,
                     weight_decay_on_bias_and_norm: bool = False) -> list[dict]:
    """The module's trainable parameters as optimizer parameter groups.

    `lr_multipliers` maps submodule names (as in `module.named_modules()`, e.g. "net.features" or
    "net.features.0") to a factor on `lr`; the longest matching name wins, other parameters
    keep `lr`. Biases and normalisation weights get no weight decay unless `weight_decay_on_bias_and_norm`
    (decaying them only shrinks the scale of the layer they feed, which the next layer undoes), nor do
    the parameters of a learned loss (loss.*).
    Parameters of sparse embeddings go into groups marked `sparse: True` (for SparseAdamWithDense).
    """
    lr_multipliers = dict(lr_multipliers or {})
    submodules(module, list(lr_multipliers), "parameter_groups.lr_multipliers")
    no_decay = set()
    sparse = set()
    for part in module.modules():
        for name, parameter in part.named_parameters(recurse=False):
            if isinstance(part, NORMALIZATION_LAYERS) or name == "bias":
                no_decay.add(parameter)
            if isinstance(part, SPARSE_LAYERS) and part.sparse:
                sparse.add(parameter)

    groups: dict[tuple, dict] = {}  # one group per distinct (lr, weight decay, sparse), in parameter order
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue  # frozen (see lightlab.callbacks.finetuning): added as its own group when unfrozen
        owner = max((m for m in lr_multipliers if name.startswith(m + ".")), key=len, default=None)
        group_lr = lr * lr_multipliers[owner] if owner else lr
        # A learned loss weighting (loss.*) is never decayed: decay would pull its task weights towards 1.
        exempt = (parameter in no_decay and not weight_decay_on_bias_and_norm) or name.startswith("loss.")
        decay = 0.0 if exempt else weight_decay
        key = (group_lr, decay, parameter in sparse)
        group = groups.setdefault(key, {"params": [], "lr": group_lr, "weight_decay": decay})
        if parameter in sparse:
            group["sparse"] = True
        group["params"].append(parameter)
    return list(groups.values())


def submodules(module: nn.Module, names: list[str], key: str) -> list[nn.Module]:
    """The submodules called `names` (e.g. net.features), or a UserError for config `key` listing real names."""
    known = dict(module.named_modules())
    unknown = [name for name in names if name not in known or not name]
    if unknown:
        parts = ", ".join(name for name, part in known.items()
                          if name and name.count(".") <= 1 and any(True for _ in part.parameters()))
        raise UserError(f"{key} names {unknown}, which the module does not have. Its parts with parameters are: "
                        f"{parts} (deeper names continue with dots).")
    return [known[name] for name in names]


def build_optimizer(module: nn.Module, optimizer: dict, grouping: dict | None) -> torch.optim.Optimizer:
    """`optimizer` is a conf/optimizer config; `grouping` the `parameter_groups` config."""
    settings = dict(module=module, lr=optimizer.get("lr", 1.0), weight_decay=optimizer.get("weight_decay", 0.0))
    # No grouping config (a module built by hand): one group per weight-decay setting, no multipliers.
    if grouping:
        groups = build(grouping, "parameter_groups", **settings)
    else:
        groups = parameter_groups(**settings, lr_multipliers={})
    for group in groups:  # keys the optimizer does not take (Rprop, LBFGS, SparseAdam have no weight decay)
        for key in ("lr", "weight_decay"):
            if key not in optimizer:
                group.pop(key)
    return build(optimizer, "optimizer", params=groups)


class SparseAdamWithDense(torch.optim.Optimizer):
    """SparseAdam for the parameters of sparse embeddings (nn.Embedding(sparse=True)), `dense` (any
    optimizer config) for all other parameters, stepped together as one optimizer.

    SparseAdam updates only the embedding rows a batch used, which is what makes a large vocabulary
    cheap; it rejects dense gradients, so the rest of the network needs an optimizer of its own.
    Lightning's automatic optimisation drives one optimizer, hence the pairing. Param groups are shared
    with the two inner optimizers, so schedulers and the LR monitor see (and change) both.
    """

    def __init__(self, params, dense: dict | None, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        sparse_groups, dense_groups = [], []
        for group in map(dict, params):
            (sparse_groups if group.pop("sparse", False) else dense_groups).append(group)
        if not sparse_groups:
            raise UserError("optimizer=sparse_adam optimises the embeddings of a model built with sparse "
                            "gradients (nn.Embedding(..., sparse=True)), and this model has none. Choose a model "
                            "with sparse embeddings, or a dense optimizer such as optimizer=adam.")
        for group in sparse_groups:
            group.pop("weight_decay", None)  # SparseAdam has no weight decay
        self.sparse = torch.optim.SparseAdam(sparse_groups, lr=lr, betas=betas, eps=eps)
        self.dense = instantiate(dense, params=dense_groups, _convert_="all") if dense_groups else None
        self.optimizers = [o for o in (self.sparse, self.dense) if o is not None]
        super().__init__([group for o in self.optimizers for group in o.param_groups], {})
        self.built = True

    def add_param_group(self, param_group: dict) -> None:
        if not getattr(self, "built", False):  # Optimizer.__init__ registering the inner optimizers' groups
            return super().add_param_group(param_group)
        if self.dense is None:
            raise UserError("optimizer=sparse_adam has no dense optimizer here (every parameter was a sparse "
                            "embedding), so parameters unfrozen later cannot be added. Leave them unfrozen.")
        self.dense.add_param_group(param_group)  # unfrozen parameters (lightlab.callbacks.finetuning) are dense ones
        self.param_groups.append(self.dense.param_groups[-1])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def state_dict(self) -> dict:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for optimizer, state in zip(self.optimizers, state_dict["optimizers"], strict=True):
            optimizer.load_state_dict(state)
        self.param_groups = [group for o in self.optimizers for group in o.param_groups]


def check_optimizer_fits_trainer(optimizer: torch.optim.Optimizer, trainer) -> None:
    """Combinations that Lightning or torch would run wrongly, or fail on deep inside a step."""
    if isinstance(optimizer, torch.optim.LBFGS) and trainer.accumulate_grad_batches > 1:
        # Lightning zeroes gradients once per accumulation window; LBFGS's repeated closure calls would then
        # add up the same batch's gradient again and again.
        raise UserError("optimizer=lbfgs cannot accumulate gradients: set trainer.accumulate_grad_batches=1.")
    if trainer.precision == "16-mixed" and trainer.gradient_clip_val and optimizer.defaults.get("fused"):
        # float16 needs a gradient scaler; a fused optimizer unscales inside its step, after Lightning clips.
        raise UserError("trainer.precision=16-mixed with gradient clipping needs an unfused optimizer: "
                        "set optimizer.fused=false (or use trainer.precision=bf16-mixed).")
    if isinstance(optimizer, SparseAdamWithDense) and trainer.gradient_clip_val:
        raise UserError("optimizer=sparse_adam cannot clip gradients (torch's clipping rejects sparse gradients): "
                        "set trainer.gradient_clip_val=null.")


# These set the learning rate from `base_lr` rather than multiplying the current one, so a warmup
# (which multiplies) cannot be layered on them.
ABSOLUTE_SCHEDULERS = (torch.optim.lr_scheduler.LambdaLR, torch.optim.lr_scheduler.OneCycleLR,
                       torch.optim.lr_scheduler.CyclicLR, torch.optim.lr_scheduler.CosineAnnealingWarmRestarts)


def build_lr_schedulers(optimizer: torch.optim.Optimizer, config: dict, trainer) -> list[dict]:
    """Lightning lr_scheduler dicts from a conf/scheduler config: the schedule, and a linear warmup
    over the first `warmup_steps` optimizer steps when asked (it multiplies the schedule's rate)."""
    config = dict(config)
    warmup_steps = config.pop("warmup_steps", 0)
    warmup_start_factor = config.pop("warmup_start_factor", 0.01)
    schedule = dict(config["scheduler"])
    for argument in RUN_LENGTH_ARGUMENTS:
        if argument in schedule and schedule[argument] is None:
            schedule[argument] = run_length(trainer, config.get("interval", "epoch"), config.get("frequency", 1))
    config["scheduler"] = build(schedule, "scheduler.scheduler", optimizer=optimizer)
    schedulers = [config]
    if warmup_steps:
        if isinstance(config["scheduler"], ABSOLUTE_SCHEDULERS):
            raise UserError(f"scheduler.warmup_steps={warmup_steps} cannot be combined with "
                            f"{schedule['_target_']}, which sets the learning rate itself rather than scaling "
                            f"it (onecycle has its own warmup: scheduler.scheduler.pct_start; a lambda can "
                            f"include one). Set scheduler.warmup_steps=0.")
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=warmup_start_factor, end_factor=1.0,
                                                   total_iters=warmup_steps)
        schedulers.insert(0, {"scheduler": warmup, "interval": "step", "frequency": 1,
                              "name": f"lr-{type(optimizer).__name__}-step"})
    return schedulers


def run_length(trainer, interval: str, frequency: int) -> int:
    if interval == "step":
        steps = trainer.estimated_stepping_batches
    else:
        steps = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
    if math.isinf(steps):
        raise UserError("a scheduler length left null (T_max, total_steps, total_iters) means 'the whole run', "
                        "but this run has no end: set trainer.max_epochs, or the length itself.")
    return max(int(steps) // frequency, 1)


def check_monitored_metrics(trainer) -> None:
    """After an epoch's metrics are logged: fail, naming the key, if a monitored metric never was.
    (Lightning would stop with a traceback from deep in its loop, or for the checkpoint, after training.)"""
    logged = sorted(trainer.callback_metrics)
    monitors = [("scheduler.monitor", config.monitor) for config in trainer.lr_scheduler_configs
                if config.monitor and config.strict]  # strict: false asks Lightning to skip the step instead
    checkpoint, early_stopping = trainer.checkpoint_callback, trainer.early_stopping_callback
    if checkpoint is not None and getattr(checkpoint, "monitor", None):
        monitors.append(("monitor", checkpoint.monitor))
    if early_stopping is not None and early_stopping.strict:
        monitors.append(("callbacks.early_stopping.monitor", early_stopping.monitor))
    for key, name in monitors:
        if name not in trainer.callback_metrics:
            raise UserError(f"{key}='{name}' names a metric that is never logged. Logged metrics: "
                            f"{', '.join(logged)}. Set `{key}=` to one of them.")
