"""The LightningModule for classification: any network, loss, optimizer and scheduler, all from config.

Every constructor argument is plain data (dicts with `_target_`, lists, numbers), and the network,
loss and optimizer are built from it here. So `save_hyperparameters()` stores plain data, a
checkpoint loads with `torch.load(path, weights_only=True)`, and `load_from_checkpoint(path)`
rebuilds the network in a fresh process with no config files around.
"""
import inspect

import torch
from hydra.utils import instantiate
from torchmetrics.classification import BinaryAUROC, BinaryF1Score, MulticlassAccuracy

from lightlab.base.errors import UserError
from lightlab.base.objects import locate
from lightning_modules.tasks.task_module import TaskModule


class ClassificationModule(TaskModule):
    plain_attributes = TaskModule.plain_attributes | {"train_samples"}

    def __init__(self, net: dict, optimizer: dict, loss: dict, input_shape: list[int], num_classes: int,
                 scheduler: dict | None = None, parameter_groups: dict | None = None, compile: bool = False,
                 channels_last: bool = False, test_time_flip: bool = False, vocabulary_size: int | None = None,
                 cardinalities: list[int] | None = None, class_weights: list[float] | None = None):
        super().__init__()
        self.save_hyperparameters()
        if test_time_flip and len(input_shape) != 3:
            raise UserError(f"lightning_module.test_time_flip=true mirrors images, but this data's inputs have shape "
                            f"{list(input_shape)}, not (channels, height, width). "
                            f"Set lightning_module.test_time_flip=false.")
        self.net = self.build_network(net, compile, channels_last, input_shape=list(input_shape),
                                      num_classes=num_classes, **self.data_shape(vocabulary_size, cardinalities))
        # data.class_weights=balanced (tables): weights from the training split's class counts, for the loss.
        if class_weights and "class_weights" not in inspect.signature(locate(loss["_target_"])).parameters:
            raise UserError(f"data.class_weights=balanced weighs the loss's classes, but {loss['_target_']} takes no "
                            f"class_weights. Use loss=cross_entropy or nll, or set data.class_weights=null.")
        self.loss = instantiate(loss, _convert_="all", **({"class_weights": class_weights} if class_weights else {}))
        # NLLLoss takes log-probabilities: with it, the module's output is log_softmax of the network's.
        self.log_probabilities = isinstance(self.loss, torch.nn.NLLLoss)
        # validate_args=False: the argument checks cost more than the update and read values back from the
        # device. (Keys are `<stage>_accuracy`: a bare stage name could clash with nn.Module attributes.)
        self.accuracy = torch.nn.ModuleDict({
            f"{stage}_accuracy": MulticlassAccuracy(num_classes, average="micro", validate_args=False)
            for stage in ("val", "test")})
        # Two classes: also the ranking (AUROC) and the F1 of the second class (data=table: the second in sorted
        # order, e.g. "yes" of no/yes, True of False/True), the usual scores of an imbalanced binary task.
        self.binary = torch.nn.ModuleDict({
            f"{stage}_{name}": metric(validate_args=False) for stage in ("val", "test")
            for name, metric in (("auroc", BinaryAUROC), ("f1", BinaryF1Score))} if num_classes == 2 else {})
        # Training sums stay device tensors: adding to them never waits for the device. The training accuracy is
        # counted here rather than by a torchmetrics update, which costs ~2% of a small model's step.
        self.register_epoch_sum("train_loss_sum")
        self.register_epoch_sum("train_correct_sum")
        self.train_samples = 0

    # A batch is (*inputs, labels): (images, labels), or (token ids, lengths, labels) for text.
    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.net(*inputs)
        return outputs.log_softmax(dim=1) if self.log_probabilities else outputs

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        *inputs, labels = batch
        # forward() itself, not through nn.Module.__call__: this module has no hooks of its own (the network's run
        # as usual), and the call layer is a share of a small network's step.
        logits = self.forward(*inputs)
        loss = self.loss(logits, labels)
        if self.first_call_for_batch(batch_index):
            self.train_correct_sum.add_((logits.argmax(dim=1) == labels).sum())  # (argmax records no gradient)
            self.train_samples += len(labels)
            self.train_loss_sum.add_(loss.detach())
        self.log_step_loss(loss)
        return loss

    def log_train_epoch_metrics(self) -> None:
        self.log("train/loss", self.epoch_mean(self.train_loss_sum), sync_dist=True)
        self.log("train/acc", self.train_correct_sum / max(self.train_samples, 1), sync_dist=True)
        self.train_correct_sum.zero_()
        self.train_samples = 0
        self.train_loss_sum.zero_()

    def scores(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The outputs that validation, test and prediction score: with test_time_flip, the mean of the
        outputs for each image and its mirror image."""
        outputs = self(*inputs)
        return (outputs + self(inputs[0].flip(-1))) / 2 if self.hparams.test_time_flip else outputs

    def predict_step(self, batch, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(class probabilities, labels) of a batch: mode=predict's rows. Softmax of log-probabilities (NLL's
        outputs) gives the probabilities too."""
        *inputs, labels = batch
        return self.scores(*inputs).float().softmax(dim=1), labels

    def evaluate(self, batch, stage: str) -> torch.Tensor:
        *inputs, labels = batch
        logits = self.scores(*inputs)
        self.accuracy[f"{stage}_accuracy"].update(logits, labels)
        self.log(f"{stage}/loss", self.loss(logits, labels), on_epoch=True, batch_size=len(labels), sync_dist=True)
        self.log(f"{stage}/acc", self.accuracy[f"{stage}_accuracy"], on_epoch=True)
        if self.binary:
            positive = logits.float().softmax(dim=1)[:, 1]
            for name in ("auroc", "f1"):
                self.binary[f"{stage}_{name}"].update(positive, labels)
                self.log(f"{stage}/{name}", self.binary[f"{stage}_{name}"], on_epoch=True)
        return logits.detach()
