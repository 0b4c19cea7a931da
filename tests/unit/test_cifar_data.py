"""CIFAR-10/100 DataModules on tiny files written in the exact python-pickle format, and the batched
per-sample augmentation."""
import hashlib
import io
import pickle
import tarfile

import pytest
import torch

from datamodules.augment import cutout, random_crop_flip
from datamodules.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightlab.base.errors import UserError
from tests.conftest import write_cifar10, write_cifar100


def test_cifar10_reads_every_batch_channel_major(tmp_path):
    batches = write_cifar10(tmp_path)
    data = CIFAR10DataModule(str(tmp_path), [], val_size=10, download=False)
    data.setup("fit"), data.setup("test")
    images, labels = data.splits["test"]
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    # row 7 of the file: 1024 red values, then green, then blue, each row-major over 32x32
    assert torch.equal(images[7, 1], torch.from_numpy(batches[5]["data"][7, 1024:2048]).view(32, 32))
    assert labels.tolist() == batches[5]["labels"]
    assert len(data.splits["fit"][0]) + len(data.splits["validate"][0]) == 100  # five files of 20


def test_cifar100_reads_fine_labels(tmp_path):
    write_cifar100(tmp_path, 30)
    data = CIFAR100DataModule(str(tmp_path), [], val_size=5, download=False)
    data.setup("test")
    assert data.num_classes == 100 and data.splits["test"][1].max() < 100 and len(data.splits["test"][1]) == 30


@pytest.mark.parametrize("damage,message", [
    ("truncate", r"test_batch is not a readable CIFAR batch"),
    ("shape", r"test_batch is not a CIFAR batch: expected a dict with 'data' \(uint8, N x 3072\)"),
    ("label", r"holds labels 0..12; cifar-10-batches-py has 0..9"),
    ("missing", r"cifar-10-batches-py not found in .* and data.download=false"),
])
def test_damaged_or_missing_files_are_named(damage, message, tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "shape":
        batch = pickle.loads(path.read_bytes())
        batch["data"] = batch["data"][:, :1000]
        path.write_bytes(pickle.dumps(batch))
    elif damage == "label":
        batch = pickle.loads(path.read_bytes())
        batch["labels"][3] = 12
        path.write_bytes(pickle.dumps(batch))
    else:
        path.unlink()
    with pytest.raises(UserError, match=message):
        CIFAR10DataModule(str(tmp_path), [], val_size=10, download=False).setup("test")


def test_missing_folder_is_downloaded_from_a_mirror_verified_and_extracted(tmp_path, monkeypatch):
    source = tmp_path / "source"
    batches = write_cifar10(source)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "cifar-10-python.tar.gz").write_bytes(archive.getvalue())
    md5 = hashlib.md5(archive.getvalue()).hexdigest()  # the published archive's md5 is checked the same way
    monkeypatch.setattr(CIFAR10DataModule, "archive", ("cifar-10-python.tar.gz", md5))
    data = CIFAR10DataModule(str(tmp_path / "data"), [f"file://{mirror}/"], val_size=10)
    data.setup("test")
    assert data.splits["test"][1].tolist() == batches[5]["labels"]

    monkeypatch.setattr(CIFAR10DataModule, "archive", ("cifar-10-python.tar.gz", "0" * 32))
    with pytest.raises(UserError, match="downloading it failed"):
        CIFAR10DataModule(str(tmp_path / "other"), [f"file://{mirror}/"], val_size=10).setup("test")


def numbered_images(count=64):
    """Images whose pixels say where they came from: value = (10 * image + row + column) % 256."""
    index = torch.arange(count)[:, None, None, None]
    rows, columns = torch.arange(32)[None, None, :, None], torch.arange(32)[None, None, None, :]
    return ((10 * index + rows + columns) % 256).expand(count, 3, 32, 32).to(torch.uint8).contiguous()


def test_every_image_gets_its_own_crop_and_flip():
    images = numbered_images()
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(images, padding=4, flip=True, generator=generator)
    assert out.shape == images.shape and out.dtype == torch.uint8
    generator = torch.Generator().manual_seed(0)  # the same draws, for the expected values
    offsets = torch.randint(0, 9, (2, 64), generator=generator)
    mirrored = torch.rand(64, generator=generator) < 0.5
    padded = torch.nn.functional.pad(images, (4,) * 4)
    for b in range(64):  # the reference: one image at a time, the slow obvious way
        expected = padded[b, :, offsets[0, b]: offsets[0, b] + 32, offsets[1, b]: offsets[1, b] + 32]
        expected = expected.flip(2) if mirrored[b] else expected
        assert torch.equal(out[b], expected), b  # image b's own pixels: labels stay aligned
    assert len(set(map(tuple, offsets.T.tolist()))) > 32 and 10 < int(mirrored.sum()) < 54  # different per image


def test_cutout_zeroes_one_square_per_image():
    images = torch.full((16, 3, 32, 32), 7, dtype=torch.uint8)
    out = cutout(images, 8, torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(dim=1)  # all channels
    assert ((out == 0) | (out == 7)).all() and zeroed.flatten(1).sum(1).le(64).all()
    assert zeroed.flatten(1).sum(1).gt(0).all() and len({tuple(z.nonzero()[0].tolist()) for z in zeroed}) > 4


def test_augmentation_is_for_training_only_and_off_means_exactly_normalised(tmp_path):
    write_cifar10(tmp_path)
    images, labels = numbered_images(8), torch.arange(8)
    plain = CIFAR10DataModule(str(tmp_path), [], crop_padding=0, horizontal_flip=False)
    mean = torch.tensor(plain.mean).view(1, 3, 1, 1)
    std = torch.tensor(plain.std).view(1, 3, 1, 1)
    expected = (images.float() / 255 - mean) / std
    out, out_labels = plain.on_after_batch_transfer((images, labels), 0)
    torch.testing.assert_close(out, expected)
    assert torch.equal(out_labels, labels)

    augmented = CIFAR10DataModule(str(tmp_path), [])

    class Training:
        training = True

    augmented.trainer = Training()
    out, _ = augmented.on_after_batch_transfer((images, labels), 0)
    assert not torch.allclose(out, expected)
    # Its generator state is what a checkpoint keeps: restoring it repeats the draws.
    state = augmented.state_dict()
    again = augmented.on_after_batch_transfer((images, labels), 0)[0]
    augmented.load_state_dict(state)
    torch.testing.assert_close(augmented.on_after_batch_transfer((images, labels), 0)[0], again)
    assert isinstance(torch.load(io.BytesIO(_saved(state)), weights_only=True)["augmentation_generator"], torch.Tensor)


def _saved(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
