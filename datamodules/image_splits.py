"""What every in-memory image DataModule shares: a seeded train/validation split of the training
tensors, batches sliced from them (TensorBatches), and uint8 pixels scaled on the device.

A subclass says how to read a split (`read_split`) and its pixel statistics (`mean`, `std`).
"""
import pytorch_lightning as pl
import torch

from datamodules.new_inputs import read_images
from datamodules.tensor_batches import TensorBatches, batches_done_this_epoch, process_shard, transfer_unless_there
from lightlab.base.errors import UserError


class ImageSplits(pl.LightningDataModule):
    input_shape: tuple[int, int, int]
    stored_shape: tuple[int, ...]  # of one image as read_split returns it (MNIST's have no channel axis)
    mean: float | tuple[float, ...]  # of the training pixels scaled to [0, 1], one per channel or one for all
    std: float | tuple[float, ...]

    def __init__(self):
        super().__init__()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.pixel_scaling: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # 255 mean, 1 / (255 std)
        self.predict_input: str | None = None  # mode=predict: a file or folder of new images; None: the test split
        self.prediction_ids: list[str] = []  # what predict_dataloader's samples are, in its order

    transfer_batch_to_device = transfer_unless_there

    def network_inputs(self) -> dict:
        """What a network is built from (its constructor's input_shape and num_classes)."""
        return {"input_shape": list(self.input_shape), "num_classes": self.num_classes}

    def read_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, int64 labels) of "train" or "test"."""
        raise NotImplementedError

    def _load(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self.splits:
            self.prepare_data()  # also when setup() is called without Trainer.fit (tests, notebooks)
            self.splits[split] = self.read_split(split)
        return self.splits[split]

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and "fit" not in self.splits:
            images, labels = self._load("train")
            if not 0 < self.hparams.val_size < len(images):
                raise UserError(f"data.val_size={self.hparams.val_size} must be between 1 and {len(images) - 1}: the "
                                f"training split has {len(images)} images and keeps at least one to train on. Set "
                                f"data.val_size to a smaller number (a tenth of the split is usual).")
            # The split depends on split_seed alone, so runs with different training seeds share a val set.
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.hparams.split_seed))
            val, train = order[: self.hparams.val_size], order[self.hparams.val_size:]
            self.splits["fit"] = (images[train], labels[train])
            self.splits["validate"] = (images[val], labels[val])
        # The test split is read with the training split: a broken test file stops the run before it trains.
        if stage in ("fit", "test", "predict"):
            self._load("test")

    def train_dataloader(self) -> TensorBatches:
        loader = TensorBatches(self.splits["fit"], self.hparams.batch_size, shuffle=True,
                               seed=self.hparams.shuffle_seed, drop_last=self.hparams.drop_last,
                               shard=process_shard(self))
        loader.batches_done = batches_done_this_epoch(self)
        return loader

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["validate"], self.hparams.eval_batch_size, shuffle=False,
                             shard=process_shard(self))

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["test"], self.hparams.eval_batch_size, shuffle=False,
                             shard=process_shard(self))

    def predict_dataloader(self) -> TensorBatches:
        if self.predict_input is None:
            images, labels = self._load("test")
            self.prediction_ids = [str(i) for i in range(len(images))]
        else:  # labels -1: unknown
            images, self.prediction_ids = read_images(self.predict_input, self.input_shape)
            images, labels = images.reshape(len(images), *self.stored_shape), torch.full((len(images),), -1)
        return TensorBatches((images, labels), self.hparams.eval_batch_size, shuffle=False)

    def training_sample(self, count: int) -> torch.Tensor:
        """The first `count` training images (after the validation split), normalised, not augmented."""
        return self.normalize(self.splits["fit"][0][:count].reshape(-1, *self.input_shape))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float, (x / 255 - mean) / std, computed as (x - 255 mean) * (1 / (255 std))."""
        if images.device not in self.pixel_scaling:  # once per device: a host-to-GPU copy each batch would sync
            shape = (1, -1, 1, 1)
            self.pixel_scaling[images.device] = (
                255 * torch.tensor(self.mean, device=images.device).reshape(shape),
                1 / (255 * torch.tensor(self.std, device=images.device).reshape(shape)))
        shift, scale = self.pixel_scaling[images.device]
        return images.float().sub_(shift).mul_(scale)  # a multiply: cheaper than a divide per pixel
