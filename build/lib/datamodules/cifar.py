"""CIFAR-10 and CIFAR-100 from their python-pickle batches, held as whole uint8 tensors, with crop,
flip and cutout applied per sample, batched, on the device.

Files live in `<data_dir>/cifar-10-batches-py/` (data_batch_1..5, test_batch) or
`<data_dir>/cifar-100-python/` (train, test). A missing folder is downloaded as the published archive,
md5-verified and extracted. A present folder is checked for structure (keys, shapes, dtypes, label
range, counts) rather than md5, since re-ordered copies are common and just as valid.
"""
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from datamodules.augment import cutout, random_crop_flip
from datamodules.download import download_file
from datamodules.image_splits import ImageSplits
from datamodules.tensor_batches import check_batch_sizes
from lightlab.base.errors import UserError


class CIFAR10DataModule(ImageSplits):
    """CIFAR-10: 50,000 training and 10,000 test images, 32x32 colour, 10 classes."""

    folder = "cifar-10-batches-py"
    archive = ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    label_key = "labels"
    input_shape = stored_shape = (3, 32, 32)
    num_classes = 10
    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    def __init__(self, data_dir: str, mirrors: list[str], batch_size: int = 512, eval_batch_size: int = 1000,
                 val_size: int = 5000, split_seed: int = 0, shuffle_seed: int = 0, download: bool = True,
                 drop_last: bool = False, crop_padding: int = 4, horizontal_flip: bool = True, cutout_size: int = 0):
        super().__init__()
        check_batch_sizes(batch_size, eval_batch_size)
        self.save_hyperparameters()
        self.root = Path(data_dir).expanduser()
        self.augmentation_generator = torch.Generator().manual_seed(shuffle_seed)

    def prepare_data(self) -> None:
        folder = self.root / self.folder
        if all((folder / name).is_file() for names in self.files.values() for name in names):
            return
        fix = (f"Point paths.data_dir (or DATA_DIR) at a folder that holds {self.folder}/ with "
               f"{', '.join(n for names in self.files.values() for n in names)}")
        if not self.hparams.download:
            raise UserError(f"{self.folder} not found in {self.root.resolve()} and data.download=false. {fix}, "
                            f"or set data.download=true.")
        archive = self.root / self.archive[0]
        try:
            download_file(self.hparams.mirrors, self.archive[0], self.archive[1], archive)
        except UserError as error:
            raise UserError(f"{self.folder} not found in {self.root.resolve()}, and downloading it failed "
                            f"({error}). {fix}.") from None
        with tarfile.open(archive) as tar:
            tar.extractall(self.root, filter="data")  # "data": no absolute paths or links out of the folder

    def read_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for name in self.files[split]:
            path = self.root / self.folder / name
            try:
                with open(path, "rb") as f:
                    batch = pickle.load(f, encoding="latin1")
            except Exception as error:  # truncated, or not a pickle at all
                raise UserError(f"{path} is not a readable CIFAR batch ({type(error).__name__}: {error}). "
                                f"Delete {self.folder}/ to have it downloaded again.") from None
            data = np.asarray(batch.get("data")) if isinstance(batch, dict) else None
            if data is None or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
                    or len(batch.get(self.label_key, ())) != len(data):
                raise UserError(f"{path} is not a CIFAR batch: expected a dict with 'data' (uint8, N x 3072) and "
                                f"'{self.label_key}' (N labels). Replace it with the published file.")
            images.append(torch.from_numpy(data).view(-1, 3, 32, 32))
            labels.append(torch.as_tensor(batch[self.label_key], dtype=torch.int64))
        images, labels = torch.cat(images), torch.cat(labels)
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise UserError(f"{self.root / self.folder} holds labels {int(labels.min())}..{int(labels.max())}; "
                            f"{self.folder} has 0..{self.num_classes - 1}. Replace its files with the published ones.")
        return images, labels

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        if self.trainer is not None and self.trainer.training:  # augment training batches only
            settings = self.hparams
            if settings.crop_padding or settings.horizontal_flip:
                images = random_crop_flip(images, settings.crop_padding, settings.horizontal_flip,
                                          self.augmentation_generator)
            if settings.cutout_size:
                images = cutout(images, settings.cutout_size, self.augmentation_generator)
        return self.normalize(images), labels

    # In the checkpoint: a resumed run draws the augmentations the uninterrupted one would have.
    def state_dict(self) -> dict:
        return {"augmentation_generator": self.augmentation_generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.augmentation_generator.set_state(state_dict["augmentation_generator"])


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100: the same images' format with 100 fine classes (20 coarse ones are in the files too)."""

    folder = "cifar-100-python"
    archive = ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")
    files = {"train": ["train"], "test": ["test"]}
    label_key = "fine_labels"
    num_classes = 100
    class_names = None  # in the archive's `meta` file
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
