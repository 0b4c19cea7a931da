"""Fine-tuning: start from another run's network weights, freeze parts, unfreeze them later.

The seed's recipe (`model.load_state_dict(torch.load(...))`, then `optimizer.add_param_group(...)`) as
config: `init_from=<checkpoint>` and `callbacks=finetune`.
"""
import torch
from pytorch_lightning.callbacks import BaseFinetuning

from lightlab.base.errors import UserError
from lightlab.config.checkpoint_checks import compare_weights, load_plain
from lightning_modules.optimization import ABSOLUTE_SCHEDULERS, parameter_groups, submodules


def load_network_weights(module: torch.nn.Module, path: str) -> None:
    """Copy the network weights of a Lightning checkpoint (keys net.*) or a bare state_dict into `module.net`.
    Optimizer state, epoch and scheduler are not taken: this run starts its own (use ckpt_path to resume)."""
    fix = "Point init_from at a .ckpt file of a run with the same network (model=... settings), or a state_dict file."
    checkpoint = load_plain(path, "init_from", fix)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        weights = {key.removeprefix("net."): value for key, value in checkpoint["state_dict"].items()
                   if key.startswith("net.")}
    else:
        weights = checkpoint
    if not isinstance(weights, dict) or not weights:
        raise UserError(f"init_from={path} holds no network weights. {fix}")
    compare_weights(module.net.state_dict(), weights, "init_from", path, fix)
    module.net.load_state_dict(weights)


class FreezeThenUnfreeze(BaseFinetuning):
    """Freezes the named submodules of the LightningModule (e.g. net.features) before training, and from
    epoch `unfreeze_at_epoch` on trains them again as new optimizer parameter groups with learning rate
    `unfreeze_lr` (weight decay as parameter_groups says). Lightning's BaseFinetuning keeps the added
    groups across resumes."""

    def __init__(self, modules: list[str], unfreeze_at_epoch: int | None, unfreeze_lr: float = 1e-4,
                 train_batch_norm: bool = True):
        super().__init__()
        self.module_names = list(modules)
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.unfreeze_lr = unfreeze_lr
        self.train_batch_norm = train_batch_norm

    def _modules(self, pl_module) -> list[torch.nn.Module]:
        return submodules(pl_module, self.module_names, "callbacks.finetune.modules")

    def freeze_before_training(self, pl_module) -> None:
        self.freeze(self._modules(pl_module), train_bn=self.train_batch_norm)

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.unfreeze_at_epoch is not None:  # refuse, before training, what would fail or do nothing later
            optimizer = trainer.optimizers[0]
            if isinstance(optimizer, torch.optim.LBFGS):
                raise UserError("callbacks.finetune cannot unfreeze into optimizer=lbfgs (LBFGS steps a single "
                                "parameter group). Use another optimizer or callbacks.finetune.unfreeze_at_epoch=null.")
            for config in trainer.lr_scheduler_configs:
                if isinstance(config.scheduler, ABSOLUTE_SCHEDULERS):
                    raise UserError(f"callbacks.finetune cannot add parameter groups under "
                                    f"{type(config.scheduler).__name__}, which holds per-group settings fixed at the "
                                    f"start. Use another scheduler or callbacks.finetune.unfreeze_at_epoch=null.")
        super().on_fit_start(trainer, pl_module)

    def finetune_function(self, pl_module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        # >=, not ==: a run resumed after the unfreeze epoch is frozen again by setup() and must thaw.
        if self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch:
            return
        modules = self._modules(pl_module)
        self.make_trainable(modules)
        # By identity: Lightning's filter_on_optimizer compares values, and equal tensors (zero biases) are common.
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        grouping = dict(pl_module.hparams.get("parameter_groups") or {})
        for module in modules:
            for group in parameter_groups(module, lr=self.unfreeze_lr, lr_multipliers={},
                                          weight_decay=optimizer.defaults.get("weight_decay", 0.0),
                                          weight_decay_on_bias_and_norm=grouping.get("weight_decay_on_bias_and_norm",
                                                                                     False)):
                group["params"] = [p for p in group["params"] if id(p) not in present]
                if group["params"]:
                    optimizer.add_param_group({**group, "initial_lr": self.unfreeze_lr})
                    # Schedules then scale the new group from its own starting rate, as they do the others.
                    for config in pl_module.trainer.lr_scheduler_configs:
                        if hasattr(config.scheduler, "base_lrs"):
                            config.scheduler.base_lrs.append(self.unfreeze_lr)
