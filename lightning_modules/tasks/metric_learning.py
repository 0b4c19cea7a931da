"""Metric learning: a network maps each image to a unit-length embedding in which images of one class lie
close together, trained with a triplet loss on triplets mined within each batch and evaluated by
k-nearest-neighbour classification against embedded training images.

Like ClassificationModule, every constructor argument is plain data, so checkpoints load with
`torch.load(path, weights_only=True)` and `MetricLearningModule.load_from_checkpoint(path)`.
"""
from typing import Literal

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics.classification import MulticlassAccuracy

from lightlab.base.errors import UserError
from lightning_modules.tasks.task_module import TaskModule

Mining = Literal["batch_hard", "semi_hard"]
Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # indices of anchors, positives, negatives


def batch_hard_triplets(distances: torch.Tensor, labels: torch.Tensor) -> Triplets:
    """One triplet per anchor: its farthest positive and its nearest negative (Hermans et al., 2017).
    Anchors with no other sample of their class, or no sample of another class, in the batch are skipped."""
    same_class = labels[:, None] == labels[None, :]
    positive = same_class & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    negative = ~same_class
    hardest_positive = distances.masked_fill(~positive, -torch.inf).argmax(dim=1)
    hardest_negative = distances.masked_fill(~negative, torch.inf).argmin(dim=1)
    anchors = (positive.any(dim=1) & negative.any(dim=1)).nonzero().squeeze(1)
    return anchors, hardest_positive[anchors], hardest_negative[anchors]


def semi_hard_triplets(distances: torch.Tensor, labels: torch.Tensor) -> Triplets:
    """One triplet per (anchor, positive) pair: the nearest negative farther from the anchor than the positive
    (FaceNet's semi-hard negative; its loss is zero once it lies beyond the margin). Where every negative is
    nearer than the positive, the farthest negative, the least hard of those (as TensorFlow Addons does):
    the hardest ones early in training pull all embeddings onto one point."""
    same_class = labels[:, None] == labels[None, :]
    positive = same_class & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    negative = ~same_class
    negative_count = negative.sum(dim=1)
    # Each anchor's negatives by distance, nearest first (other samples sort last as +inf). searchsorted then
    # gives, for every (anchor, sample) pair at once, the rank of the first negative farther than that sample:
    # B x B memory, where comparing every triplet would need B x B x B.
    sorted_distances, order = distances.masked_fill(~negative, torch.inf).sort(dim=1)
    first_farther = torch.searchsorted(sorted_distances, distances.contiguous(), right=True)
    anchors, positives = (positive & (negative_count > 0)[:, None]).nonzero(as_tuple=True)
    rank = first_farther[anchors, positives]
    farthest = negative_count[anchors] - 1
    negatives = order[anchors, torch.where(rank <= farthest, rank, farthest)]
    return anchors, positives, negatives


MINERS = {"batch_hard": batch_hard_triplets, "semi_hard": semi_hard_triplets}


def knn_predict(queries: torch.Tensor, references: torch.Tensor, reference_labels: torch.Tensor,
                neighbours: int, num_classes: int) -> torch.Tensor:
    """The majority class among each query's `neighbours` nearest references (Euclidean distance); a tie goes
    to the tied class with the nearest neighbour, so the answer never depends on the order of class numbers."""
    nearest = torch.cdist(queries, references).topk(neighbours, dim=1, largest=False).indices  # nearest first
    neighbour_labels = reference_labels[nearest]
    votes = F.one_hot(neighbour_labels, num_classes).sum(dim=1)
    tied = votes == votes.max(dim=1, keepdim=True).values
    # argmax returns the first maximum: the nearest neighbour whose class is among the tied ones.
    nearest_tied = tied.gather(1, neighbour_labels).to(torch.uint8).argmax(dim=1, keepdim=True)
    return neighbour_labels.gather(1, nearest_tied).squeeze(1)


class MetricLearningModule(TaskModule):
    """`net` is any network config, built with `num_classes=embedding_dim`: its outputs, scaled to unit length,
    are the embeddings. `loss` is a torch.nn.TripletMarginLoss config. `mining` picks the triplets of each
    batch; `neighbours` and `reference_size` set the k-nearest-neighbour evaluation (see `embed_reference_set`)."""

    def __init__(self, net: dict, optimizer: dict, loss: dict, input_shape: list[int], num_classes: int,
                 embedding_dim: int = 64, mining: Mining = "semi_hard", neighbours: int = 5,
                 reference_size: int = 10000, scheduler: dict | None = None, parameter_groups: dict | None = None,
                 compile: bool = False, channels_last: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.net = self.build_network(net, compile, channels_last, input_shape=list(input_shape),
                                      num_classes=embedding_dim)
        self.loss = instantiate(loss, _convert_="all")
        self.mine = MINERS[mining]
        self.knn_accuracy = torch.nn.ModuleDict({
            stage: MulticlassAccuracy(num_classes, average="micro", validate_args=False) for stage in ("val", "test")})
        # Epoch sums stay device tensors: adding to them never waits for the device.
        self.register_epoch_sum("train_loss_sum")
        self.register_epoch_sum("train_active_sum")
        self.reference: tuple[torch.Tensor, torch.Tensor] | None = None  # embeddings, labels; set per eval epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings, (batch, embedding_dim). On the unit sphere Euclidean distance ranks pairs
        exactly as cosine similarity does (|a - b|^2 = 2 - 2 cos), so either measure may be used on them."""
        return F.normalize(self.net(x), dim=1)

    def triplet_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss over the batch's mined triplets, and the fraction of them with a non-zero loss."""
        with torch.no_grad():  # choosing triplets needs no gradient
            distances = torch.cdist(embeddings, embeddings, p=self.loss.p)
            anchors, positives, negatives = self.mine(distances, labels)
            violation = distances[anchors, positives] - distances[anchors, negatives] + self.loss.margin
            active = (violation > 0).float().mean() if len(anchors) else violation.new_zeros(())
        if not len(anchors):  # no anchor with both a positive and a negative: nothing to learn from this batch
            return (embeddings * 0).sum(), active
        # index_select, not embeddings[indices]: the latter's backward adds up a sample's gradients in an order
        # that varies between runs on a multi-threaded CPU, so runs with one seed would not repeat exactly.
        anchor, positive, negative = (embeddings.index_select(0, i) for i in (anchors, positives, negatives))
        return self.loss(anchor, positive, negative), active

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        images, labels = batch
        loss, active = self.triplet_loss(self(images), labels)
        if self.first_call_for_batch(batch_index):
            self.train_loss_sum.add_(loss.detach())
            self.train_active_sum.add_(active)
        self.log_step_loss(loss)
        return loss

    def log_train_epoch_metrics(self) -> None:
        self.log("train/loss", self.epoch_mean(self.train_loss_sum), sync_dist=True)
        # Falling towards 0: the mined triplets already satisfy the margin and training is running out of signal.
        self.log("train/active_triplets", self.epoch_mean(self.train_active_sum), sync_dist=True)
        self.train_loss_sum.zero_()
        self.train_active_sum.zero_()

    def embed_reference_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and labels of the first `reference_size` training samples, the neighbours that kNN
        evaluation votes with. The DataModule's training split is already a seeded shuffle of the data, so
        its first samples are a fixed random sample, the same every epoch and run."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "splits"):
            raise UserError("kNN evaluation embeds training samples as references, so it needs a DataModule that "
                            "holds its splits as tensors in `splits` (like datamodules.mnist.MNISTDataModule).")
        if "fit" not in datamodule.splits:  # testing without fitting first (a checkpoint in a fresh process)
            datamodule.setup("fit")
        images, labels = (tensor[: self.hparams.reference_size] for tensor in datamodule.splits["fit"])
        batch_size = datamodule.hparams.eval_batch_size
        was_training = self.training
        self.eval()
        embeddings = []
        with torch.no_grad():
            for start in range(0, len(labels), batch_size):
                batch = (images[start: start + batch_size].to(self.device), labels[start: start + batch_size])
                # The DataModule's own device-side step: the same scaling the validation batches get.
                batch_images, _ = datamodule.on_after_batch_transfer(batch, 0)
                embeddings.append(self(batch_images))
        self.train(was_training)
        return torch.cat(embeddings), labels.to(self.device)

    def on_validation_epoch_start(self) -> None:
        self.reference = self.embed_reference_set()

    def on_test_epoch_start(self) -> None:
        self.reference = self.embed_reference_set()

    def evaluate(self, batch, stage: str) -> None:
        images, labels = batch
        embeddings = self(images)
        loss, _ = self.triplet_loss(embeddings, labels)
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(labels), sync_dist=True)
        references, reference_labels = self.reference
        # More neighbours than references (tiny data) would be an error in topk; all references vote then.
        neighbours = min(self.hparams.neighbours, len(reference_labels))
        predictions = knn_predict(embeddings, references, reference_labels, neighbours, self.hparams.num_classes)
        self.knn_accuracy[stage].update(predictions, labels)
        self.log(f"{stage}/knn_acc", self.knn_accuracy[stage], on_epoch=True)
