"""From config to optimizer and learning-rate schedules: parameter groups, SparseAdam, warmup, run lengths.

The task modules call these from `configure_optimizers`; every setting comes from conf/optimizer,
conf/scheduler and the `parameter_groups` node of conf/config.yaml.
"""
import math

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from lightlab.errors import UserError

NORMALIZATION_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
SPARSE_LAYERS = (nn.Embedding, nn.EmbeddingBag)


def parameter_groups(module: nn.Module, lr: float, weight_decay: float = 0.0,
                     lr_multipliers: dict[str, float] | None = None,
                     weight_decay_on_bias_and_norm: bool = False) -> list[dict]:
    """The module's trainable parameters as optimizer parameter groups.

    `lr_multipliers` maps submodule names (as in `module.named_modules()`, e.g. "net.features" or
    "net.features.0") to a factor on `lr`; the longest matching name wins, other parameters
    keep `lr`. Biases and normalisation weights get no weight decay unless `weight_decay_on_bias_and_norm`
    (decaying them only shrinks the scale of the layer they feed, which the next layer undoes).
    Parameters of sparse embeddings go into groups marked `sparse: True` (for SparseAdamWithDense).
    """
    lr_multipliers = dict(lr_multipliers or {})
    module_names = {name for name, _ in module.named_modules() if name}
    unknown = sorted(set(lr_multipliers) - module_names)
    if unknown:
        known = ", ".join(name for name, part in module.named_modules()
                          if name and name.count(".") <= 1 and any(True for _ in part.parameters()))
        raise UserError(f"parameter_groups.lr_multipliers names {unknown}, which the module does not have. "
                        f"Its parts with parameters are: {known} (deeper names continue with dots).")
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
            continue  # frozen (see lightlab.finetuning): added as its own group when unfrozen
        owner = max((m for m in lr_multipliers if name.startswith(m + ".")), key=len, default=None)
        group_lr = lr * lr_multipliers[owner] if owner else lr
        decay = 0.0 if (parameter in no_decay and not weight_decay_on_bias_and_norm) else weight_decay
        key = (group_lr, decay, parameter in sparse)
        group = groups.setdefault(key, {"params": [], "lr": group_lr, "weight_decay": decay})
        if parameter in sparse:
            group["sparse"] = True
        group["params"].append(parameter)
    return list(groups.values())


def build_optimizer(module: nn.Module, optimizer: dict, grouping: dict) -> torch.optim.Optimizer:
    """`optimizer` is a conf/optimizer config; `grouping` the `parameter_groups` config."""
    try:
        settings = dict(module=module, lr=optimizer["lr"], weight_decay=optimizer.get("weight_decay", 0.0))
        # No grouping config (a module built by hand): one group per weight-decay setting, no multipliers.
        groups = instantiate(grouping, **settings, _convert_="all") if grouping else parameter_groups(**settings)
        if "weight_decay" not in optimizer:  # optimizers without weight decay (Rprop, LBFGS, SparseAdam)
            for group in groups:
                group.pop("weight_decay")
        return instantiate(optimizer, params=groups, _convert_="all")
    except InstantiationException as error:  # torch's own argument checks, e.g. LBFGS takes one group only
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise UserError(f"optimizer {optimizer['_target_']} cannot be built with these settings: "
                        f"{error.__cause__}. Change the optimizer.* or parameter_groups.* keys named there."
                        ) from None


class SparseAdamWithDense(torch.optim.Optimizer):
    """SparseAdam for the parameters of sparse embeddings (nn.Embedding(sparse=True)), `dense` (any
    optimizer config) for all other parameters, stepped together as one optimizer.

    SparseAdam updates only the embedding rows a batch used, which is what makes a large vocabulary
    cheap; it rejects dense gradients, so the rest of the network needs an optimizer of its own.
    Lightning's automatic optimisation drives one optimizer, hence the pairing. Param groups are shared
    with the two inner optimizers, so schedulers and the LR monitor see (and change) both.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 dense: dict | None = None):
        groups = [dict(group) for group in params]
        sparse_groups = [group for group in groups if group.pop("sparse", False)]
        dense_groups = [group for group in groups if group not in sparse_groups]
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


# Scheduler arguments that give a schedule's length. Left null in conf/scheduler, they are filled in
# with the run's length in the scheduler's own unit (epochs or optimizer steps), so nobody types a
# step count that silently stops matching when batch size or epochs change.
RUN_LENGTH_ARGUMENTS = ("T_max", "total_steps", "total_iters")
# These set the learning rate from `base_lr` rather than multiplying the current one, so a warmup
# (which multiplies) cannot be layered on them.
ABSOLUTE_SCHEDULERS = (torch.optim.lr_scheduler.LambdaLR, torch.optim.lr_scheduler.OneCycleLR,
                       torch.optim.lr_scheduler.CyclicLR)


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
    config["scheduler"] = instantiate(schedule, optimizer=optimizer, _convert_="all")
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
                              "name": f"lr-{type(optimizer).__name__}-warmup"})
    return schedulers


def run_length(trainer, interval: str, frequency: int) -> int:
    if interval == "step":
        steps = trainer.estimated_stepping_batches
    else:
        steps = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
    if math.isinf(steps):
        raise UserError("a scheduler length left null (T_max, total_steps, total_iters) means 'the whole run', "
                        "but this run has no end: set trainer.max_epochs (or trainer.max_steps) or the length.")
    return max(int(steps) // frequency, 1)


def check_monitored_metrics(trainer) -> None:
    """After an epoch's metrics are logged: fail, naming the key, if a monitored metric never was.
    (Lightning would stop with a traceback from deep in its loop, or for the checkpoint, after training.)"""
    logged = sorted(trainer.callback_metrics)
    monitors = [("scheduler.monitor", config.monitor) for config in trainer.lr_scheduler_configs
                if config.monitor and config.strict]  # strict: false asks Lightning to skip the step instead
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and getattr(checkpoint, "monitor", None):
        monitors.append(("monitor", checkpoint.monitor))
    for key, name in monitors:
        if name not in trainer.callback_metrics:
            raise UserError(f"{key}='{name}' names a metric that is never logged. Logged metrics: "
                            f"{', '.join(logged)}. Set `{key}=` to one of them.")
