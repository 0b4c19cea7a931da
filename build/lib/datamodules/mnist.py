"""MNIST and Fashion-MNIST from their original IDX files, held as whole uint8 tensors.

Files live in `<data_dir>/MNIST/raw/` (or `FashionMNIST/raw/`), gzipped as published or already
gunzipped. Missing files are downloaded from the configured mirrors and md5-verified; present files
are checked for structure (gzip integrity, IDX header, sizes, label range) so a truncated or
foreign file is named instead of silently used. A gzipped file's decompressed bytes are kept in
`cache_dir` (never in the data folder), so later runs skip the decompression: ~0.3 s of a run's start-up.
"""
import gzip
import hashlib
import zlib
from pathlib import Path

import torch

from datamodules.download import download_file
from datamodules.image_splits import ImageSplits
from datamodules.tensor_batches import check_batch_sizes
from lightlab.base.errors import UserError
from lightlab.base.files import write_atomically


def decompressed_copy(path: Path, cache_dir: str | None) -> Path | None:
    """Where a gzipped file's decompressed bytes are cached: named by the file's location, size and modification
    time, so a replaced file gets a new entry. None without a cache or for a file that is not gzipped."""
    if cache_dir is None or path.suffix != ".gz":
        return None
    status = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{status.st_size}|{status.st_mtime_ns}".encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / "idx" / f"{path.stem}-{key}"


def read_idx(path: Path, cache_dir: str | None = None) -> torch.Tensor:
    """An IDX file (the MNIST format: big-endian header, then raw uint8 values) as a uint8 tensor."""
    fix = ("Delete it to have it downloaded again, or point paths.data_dir (environment variable DATA_DIR) "
           "at a folder with a good copy.")
    cached = decompressed_copy(path, cache_dir)
    if cached is not None and cached.is_file():
        try:
            return read_idx(cached)  # checked like the original
        except UserError:  # a damaged cache entry: read the original and write the entry again
            cached.unlink(missing_ok=True)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path} is truncated or corrupt ({error or type(error).__name__}). {fix}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes (header {raw[:4].hex() or 'empty'}, "
                        f"expected 000008xx). {fix}")
    ndim = raw[3]
    header_bytes = 4 + 4 * ndim
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header_bytes + torch.Size(shape).numel()
    if len(raw) != expected:
        raise UserError(f"{path} holds {len(raw)} bytes but its header (shape {shape}) needs {expected}: "
                        f"the file is truncated or corrupt. {fix}")
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(cached, lambda partial: partial.write_bytes(raw))
        except OSError:  # a read-only or full disk: the cache only saves time
            pass
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header_bytes).view(shape)


class MNISTDataModule(ImageSplits):
    """MNIST digits: 60,000 training and 10,000 test images, 28×28 greyscale, 10 classes."""

    folder = "MNIST"
    files = {  # split -> ((images file, md5), (labels file, md5)); md5s of the published files
        "train": (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                  ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432")),
        "test": (("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                 ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
    }
    input_shape = (1, 28, 28)
    stored_shape = (28, 28)
    num_classes = 10
    class_names = [str(digit) for digit in range(10)]
    mean, std = 0.1307, 0.3081  # of the training pixels scaled to [0, 1]

    def __init__(self, data_dir: str, mirrors: list[str], batch_size: int = 128, eval_batch_size: int = 1000,
                 val_size: int = 5000, split_seed: int = 0, shuffle_seed: int = 0, download: bool = True,
                 drop_last: bool = False, cache_dir: str | None = None):
        super().__init__()
        check_batch_sizes(batch_size, eval_batch_size)
        self.save_hyperparameters()
        self.raw_dir = Path(data_dir).expanduser() / self.folder / "raw"

    def prepare_data(self) -> None:
        missing = [(name, md5) for pair in self.files.values() for name, md5 in pair if self._find(name) is None]
        if not missing:
            return
        expected = ", ".join(name for pair in self.files.values() for name, _ in pair)
        fix = (f"Point paths.data_dir (or the DATA_DIR environment variable) at a folder that holds "
               f"{self.folder}/raw/ with these files, e.g. `DATA_DIR=/path/to/data python run.py`")
        if not self.hparams.download:
            raise UserError(f"{self.folder} files not found: expected {expected} in {self.raw_dir.resolve()} "
                            f"and data.download=false. {fix}, or set data.download=true.")
        for name, md5 in missing:
            try:
                download_file(self.hparams.mirrors, name, md5, self.raw_dir / name)
            except UserError as error:
                raise UserError(f"{self.folder} files not found: expected {expected} in {self.raw_dir.resolve()}, "
                                f"and downloading them failed ({error}). {fix}.") from None

    def _find(self, name: str) -> Path | None:
        """The file as published (.gz) or already gunzipped beside it."""
        for candidate in (self.raw_dir / name, self.raw_dir / name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
        return None

    def read_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        (images_name, _), (labels_name, _) = self.files[split]
        images_path, labels_path = self._find(images_name), self._find(labels_name)
        images, labels = (read_idx(path, self.hparams.cache_dir) for path in (images_path, labels_path))
        if images.shape[1:] != self.input_shape[1:] or len(images) != len(labels):
            raise UserError(f"{images_path} holds images of shape {list(images.shape)} and {labels_path} "
                            f"{len(labels)} labels; expected [N, 28, 28] and N labels. Are these the "
                            f"{self.folder} files? Replace them with the published ones.")
        if int(labels.max()) >= self.num_classes:
            raise UserError(f"{labels_path} holds label {int(labels.max())}; {self.folder} has classes "
                            f"0-{self.num_classes - 1}. Replace the file with the published one.")
        return images, labels.long()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # uint8 crosses to the device (4x fewer bytes than float32); scaling happens there, batched.
        images, labels = batch
        return self.normalize(images.unsqueeze(1)), labels


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: Zalando's article images in MNIST's exact format and sizes, 10 clothing classes."""

    folder = "FashionMNIST"
    files = {
        "train": (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                  ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe")),
        "test": (("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                 ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
    }
    class_names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
    mean, std = 0.2860, 0.3530
