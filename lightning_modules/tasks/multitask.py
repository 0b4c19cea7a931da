"""Multi-task learning: one shared trunk, one linear head per task, and task losses weighted by learned
uncertainties (Kendall, Gal and Cipolla, 2018) instead of hand-tuned factors.

Tasks come from config as name -> {target, outputs, loss}. `target` names a function of the batch in TARGETS
below (what the head learns to predict), `outputs` is the head's width, `loss` the task's loss config.
Like ClassificationModule, every constructor argument is plain data, so checkpoints load with
`torch.load(path, weights_only=True)` and `MultiTaskModule.load_from_checkpoint(path)`.
"""
from typing import Callable, Literal, NamedTuple

import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanAbsoluteError
from torchmetrics.classification import MulticlassAccuracy

from lightlab.base.errors import UserError
from lightning_modules.tasks.task_module import TaskModule


class Target(NamedTuple):
    compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, labels) -> one target per image
    kind: Literal["classification", "regression"]  # picks the task's metric: accuracy, or mean absolute error


def digit_class(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return labels


def digit_parity(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 for odd digits, 0 for even ones."""
    return labels % 2


def ink(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The image's mean pixel value in the units the network sees, i.e. after the DataModule's normalisation
    (raw / 255 - mean) / std: ink = (raw mean intensity in [0, 1] - mean) / std. It needs no dataset constants,
    and its errors (MAE) read in those units: multiply by std (0.3081 for MNIST) for a fraction of full white."""
    return images.flatten(1).mean(dim=1)


TARGETS = {"class": Target(digit_class, "classification"), "parity": Target(digit_parity, "classification"),
           "ink": Target(ink, "regression")}


class MultiTaskLoss(nn.Module):
    """The seed's uncertainty weighting: total = sum_i exp(-s_i) * loss_i + s_i, with s_i = log(sigma_i^2)
    learned per task. A task whose loss stays large gets a larger s_i and so a smaller weight exp(-s_i); the
    + s_i term keeps every weight from falling to zero. For a fixed loss the optimum is s_i = log(loss_i)."""

    def __init__(self, num_tasks: int, initial_log_variance: float = 0.0):
        super().__init__()
        self.log_vars = nn.Parameter(torch.full((num_tasks,), float(initial_log_variance)))

    @property
    def weights(self) -> torch.Tensor:
        """Each task loss's current factor, exp(-s_i)."""
        return torch.exp(-self.log_vars)

    def forward(self, *losses: torch.Tensor) -> torch.Tensor:
        return (self.weights * torch.stack(losses) + self.log_vars).sum()


class MultiTaskModule(TaskModule):
    """`net` is any network config, built with `num_classes=trunk_width`: its outputs, through a ReLU, are the
    features every task head reads. `loss` is the config of the loss that combines the task losses (a
    MultiTaskLoss, built here with one learned weight per task); each task's own loss is in `tasks`."""

    def __init__(self, net: dict, optimizer: dict, loss: dict, tasks: dict[str, dict], input_shape: list[int],
                 num_classes: int, trunk_width: int = 128, scheduler: dict | None = None,
                 parameter_groups: dict | None = None, compile: bool = False, channels_last: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.targets = {name: self._target(name, task) for name, task in tasks.items()}
        outputs = {name: task.get("outputs") or num_classes for name, task in tasks.items()}  # null: the data's classes
        for name, target in self.targets.items():
            if target.kind == "classification" and outputs[name] < 2:
                raise UserError(f"lightning_module.tasks.{name}: a classification head needs one output per "
                                f"class (outputs >= 2, or null for the data's {num_classes}), got {outputs[name]}.")
        self.net = self.build_network(net, compile, channels_last, input_shape=list(input_shape),
                                      num_classes=trunk_width)
        self.heads = nn.ModuleDict({name: nn.Linear(trunk_width, width) for name, width in outputs.items()})
        self.task_losses = nn.ModuleDict({name: instantiate(task["loss"], _convert_="all")
                                          for name, task in tasks.items()})
        # A submodule, so its learned log-variances are among the parameters configure_optimizers optimises.
        self.loss = instantiate(loss, num_tasks=len(tasks), _convert_="all")
        self.metrics = nn.ModuleDict({
            f"{stage}_{name}": (MulticlassAccuracy(outputs[name], average="micro", validate_args=False)
                                if target.kind == "classification" else MeanAbsoluteError())
            for stage in ("val", "test") for name, target in self.targets.items()})
        # Per task, then the weighted total: summed over the epoch as device tensors (adding never waits).
        self.register_epoch_sum("train_loss_sums", len(tasks) + 1)

    @staticmethod
    def _target(name: str, task: dict) -> Target:
        if task.get("target") not in TARGETS:
            raise UserError(f"lightning_module.tasks.{name}.target is {task.get('target')!r}; the targets are "
                            f"{', '.join(TARGETS)} (lightning_modules/tasks/multitask.py: TARGETS).")
        return TARGETS[task["target"]]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each task's outputs by task name: (batch, outputs), or (batch,) for one-output heads (a regression's
        prediction lines up with its target, one number per image)."""
        features = torch.relu(self.net(x))
        outputs = {name: head(features) for name, head in self.heads.items()}
        return {name: out.squeeze(1) if out.shape[1] == 1 else out for name, out in outputs.items()}

    def _task_losses(self, batch) -> tuple[dict, dict, torch.Tensor]:
        images, labels = batch
        outputs = self(images)
        targets = {name: target.compute(images, labels) for name, target in self.targets.items()}
        losses = torch.stack([self.task_losses[name](outputs[name], targets[name]) for name in self.targets])
        return outputs, targets, losses

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        _, _, losses = self._task_losses(batch)
        total = self.loss(*losses)
        if self.first_call_for_batch(batch_index):
            self.train_loss_sums.add_(torch.cat([losses.detach(), total.detach()[None]]))
        self.log_step_loss(total)
        return total

    def log_train_epoch_metrics(self) -> None:
        means = self.epoch_mean(self.train_loss_sums)
        weights = self.loss.weights.detach()
        for index, name in enumerate(self.targets):
            self.log(f"train/{name}_loss", means[index], sync_dist=True)
            self.log(f"train/{name}_weight", weights[index], sync_dist=True)
        self.log("train/loss", means[-1], sync_dist=True)
        self.train_loss_sums.zero_()

    def evaluate(self, batch, stage: str) -> None:
        outputs, targets, losses = self._task_losses(batch)
        batch_size = len(batch[1])
        for index, (name, target) in enumerate(self.targets.items()):
            self.log(f"{stage}/{name}_loss", losses[index], on_epoch=True, batch_size=batch_size, sync_dist=True)
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(outputs[name], targets[name])
            self.log(f"{stage}/{name}_{'acc' if target.kind == 'classification' else 'mae'}", metric, on_epoch=True)
        self.log(f"{stage}/loss", self.loss(*losses), on_epoch=True, batch_size=batch_size, sync_dist=True)
