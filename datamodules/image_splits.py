"""What every in-memory image DataModule shares: a seeded train/validation split of the training
tensors, batches sliced from them (TensorBatches), and uint8 pixels scaled on the device.

A subclass says how to read a split (`read_split`) and its pixel statistics (`mean`, `std`).
"""
import pytorch_lightning as pl
import torch

from datamodules.tensor_batches import TensorBatches, process_shard
from lightlab.errors import UserError


class ImageSplits(pl.LightningDataModule):
    input_shape: tuple[int, int, int]
    mean: float | tuple[float, ...]  # of the training pixels scaled to [0, 1], one per channel or one for all
    std: float | tuple[float, ...]

    def __init__(self):
        super().__init__()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.pixel_scaling: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # 255 mean, 255 std

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
                raise UserError(f"data.val_size={self.hparams.val_size} must be between 1 and {len(images) - 1}.")
            # The split depends on split_seed alone, so runs with different training seeds share a val set.
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.hparams.split_seed))
            val, train = order[: self.hparams.val_size], order[self.hparams.val_size:]
            self.splits["fit"] = (images[train], labels[train])
            self.splits["validate"] = (images[val], labels[val])
        if stage in ("test", "predict"):
            self._load("test")

    def train_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["fit"], self.hparams.batch_size, shuffle=True, seed=self.hparams.shuffle_seed,
                             drop_last=self.hparams.drop_last, shard=process_shard(self))

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["validate"], self.hparams.eval_batch_size, shuffle=False,
                             shard=process_shard(self))

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self.splits["test"], self.hparams.eval_batch_size, shuffle=False, shard=process_shard(self))

    def training_sample(self, count: int) -> torch.Tensor:
        """The first `count` training images (after the validation split), normalised, not augmented."""
        return self.normalize(self.splits["fit"][0][:count].reshape(-1, *self.input_shape))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float, (x / 255 - mean) / std, computed as (x - 255 mean) / (255 std)."""
        if images.device not in self.pixel_scaling:  # once per device: a host-to-GPU copy each batch would sync
            shape = (1, -1, 1, 1)
            self.pixel_scaling[images.device] = (255 * torch.tensor(self.mean, device=images.device).reshape(shape),
                                                 255 * torch.tensor(self.std, device=images.device).reshape(shape))
        shift, scale = self.pixel_scaling[images.device]
        return images.float().sub_(shift).div_(scale)
