"""IDX reading, corrupt-file detection, md5-verified download, and the tensor batch iterator."""
import functools
import gzip
import http.server
import threading

import pytest
import torch

from datamodules.download import download_file, md5_of
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule, read_idx
from datamodules.tensor_batches import TensorBatches
from lightlab.base.errors import UserError
from tests.conftest import write_idx, write_tiny_mnist


def test_idx_round_trip_gzipped_and_plain(tmp_path):
    values = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    assert torch.equal(read_idx(write_idx(tmp_path / "a-idx3-ubyte.gz", values)), values)
    assert torch.equal(read_idx(write_idx(tmp_path / "b-idx3-ubyte", values, compress=False)), values)


def test_truncated_gzip_is_named(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", torch.zeros(50, 28, 28, dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte\.gz is truncated or corrupt.*DATA_DIR"):
        read_idx(path)


def test_not_gzip_is_named(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte\.gz is truncated or corrupt"):
        read_idx(path)


def test_header_that_disagrees_with_the_data_is_named(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(60)))
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte\.gz holds 68 bytes but its header .* needs 108"):
        read_idx(path)


def test_wrong_magic_is_named(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x0D, 1]) + (2).to_bytes(4, "big") + bytes(8))
    with pytest.raises(UserError, match="not an IDX file of unsigned bytes"):
        read_idx(path)


def test_datamodule_split_and_device_scaling(tmp_path):
    write_tiny_mnist(tmp_path, train=100, test=30)
    datamodule = MNISTDataModule(str(tmp_path), mirrors=[], batch_size=16, eval_batch_size=7, val_size=20,
                                 download=False)
    datamodule.setup("fit")
    datamodule.setup("test")
    train_images, train_labels = datamodule.splits["fit"]
    val_images, _ = datamodule.splits["validate"]
    assert (len(train_images), len(val_images), len(datamodule.splits["test"][0])) == (80, 20, 30)
    assert train_images.dtype == torch.uint8 and train_labels.dtype == torch.int64
    # the split is a function of split_seed only
    again = MNISTDataModule(str(tmp_path), mirrors=[], val_size=20, download=False, shuffle_seed=5)
    again.setup("fit")
    assert torch.equal(again.splits["validate"][0], val_images)
    images, labels = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert images.shape == (16, 1, 28, 28) and images.dtype == torch.float32
    raw = datamodule.train_dataloader().tensors[0]
    expected_min = (0 - 255 * MNISTDataModule.mean) / (255 * MNISTDataModule.std)
    assert images.min().item() >= expected_min - 1e-5
    assert len(datamodule.test_dataloader()) == 5  # 30 images in batches of 7
    assert raw.shape[1:] == (28, 28)


def test_label_out_of_range_is_named(tmp_path):
    write_tiny_mnist(tmp_path, train=40, test=10)
    write_idx(tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz", torch.full((10,), 12))
    datamodule = MNISTDataModule(str(tmp_path), mirrors=[], val_size=5, download=False)
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte\.gz holds label 12; MNIST has classes 0-9"):
        datamodule.setup("test")


def test_image_and_label_counts_must_agree(tmp_path):
    write_tiny_mnist(tmp_path, train=40, test=10)
    write_idx(tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz", torch.zeros(9))
    with pytest.raises(UserError, match="9 labels"):
        MNISTDataModule(str(tmp_path), mirrors=[], download=False).setup("test")


def test_missing_files_without_download_explain_where_and_how(tmp_path):
    datamodule = FashionMNISTDataModule(str(tmp_path / "nowhere"), mirrors=[], download=False)
    with pytest.raises(UserError) as error:
        datamodule.prepare_data()
    message = str(error.value)
    assert "FashionMNIST files not found" in message and "train-images-idx3-ubyte.gz" in message
    assert str((tmp_path / "nowhere" / "FashionMNIST" / "raw").resolve()) in message
    assert "DATA_DIR" in message and "data.download=true" in message


@pytest.fixture
def file_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_tries_mirrors_in_turn_and_verifies_md5(tmp_path, file_server):
    served, url = file_server
    good = write_idx(served / "good" / "t10k-labels-idx1-ubyte.gz", torch.arange(10))
    (served / "bad").mkdir()
    (served / "bad" / good.name).write_bytes(b"corrupted mirror copy")
    destination = tmp_path / "data" / good.name
    download_file([url + "missing/", url + "bad/", url + "good/"], good.name, md5_of(good), destination)
    assert md5_of(destination) == md5_of(good)
    assert not destination.with_name(destination.name + ".part").exists()


def test_download_failure_lists_every_mirror_and_leaves_nothing(tmp_path, file_server):
    served, url = file_server
    (served / "x.gz").write_bytes(b"wrong bytes")
    destination = tmp_path / "data" / "x.gz"
    with pytest.raises(UserError) as error:
        download_file([url + "nope/", url], "x.gz", "0" * 32, destination)
    assert "404" in str(error.value) and "md5" in str(error.value)
    assert list(destination.parent.iterdir()) == []


def test_datamodule_downloads_missing_files_from_a_file_mirror(tmp_path, monkeypatch):
    """The download path of the real DataModule, with a file:// mirror holding a tiny dataset."""
    mirror = write_tiny_mnist(tmp_path / "mirror", train=30, test=10) / "MNIST" / "raw"
    files = {split: tuple((name, md5_of(mirror / name)) for name, _ in pair)
             for split, pair in MNISTDataModule.files.items()}
    monkeypatch.setattr(MNISTDataModule, "files", files)  # the md5s of the tiny files, not the published ones
    datamodule = MNISTDataModule(str(tmp_path / "data"), mirrors=[mirror.as_uri()], val_size=5)
    datamodule.setup("fit")
    assert len(datamodule.splits["fit"][0]) == 25
    assert sorted(p.name for p in (tmp_path / "data" / "MNIST" / "raw").iterdir()) == sorted(
        name for pair in files.values() for name, _ in pair)


@pytest.mark.data
def test_real_files_have_the_published_md5s():
    from tests.conftest import require_real_data
    data = require_real_data("MNIST")
    for module in (MNISTDataModule, FashionMNISTDataModule):
        for pair in module.files.values():
            for name, md5 in pair:
                assert md5_of(data / module.folder / "raw" / name) == md5


def test_tensor_batches_cover_each_sample_once_in_a_new_order_each_epoch():
    data = torch.arange(103)
    batches = TensorBatches((data, data * 2), batch_size=10, shuffle=True, seed=3)
    assert len(batches) == 11
    orders = []
    for epoch in range(2):
        batches.sampler.set_epoch(epoch)
        seen = [batch for batch in batches]
        assert all(torch.equal(b * 2, c) for b, c in seen)  # fields stay aligned
        orders.append(torch.cat([b for b, _ in seen]))
        assert sorted(orders[-1].tolist()) == list(range(103))
    assert not torch.equal(orders[0], orders[1])
    batches.sampler.set_epoch(0)  # the order is a function of (seed, epoch): a resumed run sees the same
    assert torch.equal(torch.cat([b for b, _ in batches]), orders[0])
    other_seed = TensorBatches((data,), batch_size=10, shuffle=True, seed=4)
    assert not torch.equal(torch.cat([b for (b,) in other_seed]), orders[0])


def test_tensor_batches_drop_last_and_zero_copy_evaluation_batches():
    data = torch.arange(25)
    assert len(TensorBatches((data,), batch_size=10, shuffle=True, drop_last=True)) == 2
    first = next(iter(TensorBatches((data,), batch_size=10, shuffle=False)))[0]
    assert first.data_ptr() == data.data_ptr()  # a view, no gather
    with pytest.raises(ValueError, match="same length"):
        TensorBatches((data, data[:3]), batch_size=4, shuffle=False)


def test_decompressed_copy_is_cached_outside_the_data_folder_and_follows_the_file(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    path = write_idx(data / "train-images-idx3-ubyte.gz", torch.arange(24, dtype=torch.uint8).view(2, 3, 4))
    before = sorted(p.name for p in data.iterdir())
    assert torch.equal(read_idx(path, str(cache)), torch.arange(24, dtype=torch.uint8).view(2, 3, 4))
    [entry] = (cache / "idx").iterdir()
    assert sorted(p.name for p in data.iterdir()) == before  # nothing written beside the data
    assert entry.read_bytes() == gzip.open(path).read()
    # The cached copy is what is read next time (the .gz is not opened)...
    entry.write_bytes(entry.read_bytes()[:-1] + b"\x07")
    assert read_idx(path, str(cache))[-1, -1, -1] == 7
    # ...a replaced file (new size / time) gets its own entry...
    write_idx(path, torch.full((1, 3, 4), 9, dtype=torch.uint8))
    assert torch.equal(read_idx(path, str(cache)), torch.full((1, 3, 4), 9, dtype=torch.uint8))
    assert len(list((cache / "idx").iterdir())) == 2
    # ...and a damaged entry is replaced from the original rather than reported.
    [newest] = [p for p in (cache / "idx").iterdir() if p != entry]
    newest.write_bytes(b"\x00\x00\x08")
    assert torch.equal(read_idx(path, str(cache)), torch.full((1, 3, 4), 9, dtype=torch.uint8))
    assert newest.read_bytes() == gzip.open(path).read()
