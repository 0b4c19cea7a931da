"""Bad input of every kind (config, data, checkpoint) as a user types it: `python run.py …` must fail fast, name the key
or file and the fix, exit non-zero without a traceback, and leave every file already written as it was."""
import gzip
import pickle
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import quick_overrides, run_cli, write_tiny_mnist, write_tiny_text


class NotPlainData:  # pickled into a "checkpoint": loading it would run this module's code
    pass


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A good run already in the log folder, and the bad files the cases point at."""
    root = tmp_path_factory.mktemp("bad_inputs")
    data = write_tiny_mnist(root / "data")
    write_tiny_text(root / "data")
    good = run_cli(*quick_overrides(data, root / "logs"), "trainer.max_epochs=1", "run_name=good", "print_config=false")
    assert good.returncode == 0, good.stderr[-3000:]
    checkpoint = root / "logs" / "mnist_mlp" / "good" / "checkpoints" / "last.ckpt"
    files = root / "files"
    files.mkdir()
    (files / "truncated.ckpt").write_bytes(checkpoint.read_bytes()[:5000])
    (files / "foreign.ckpt").write_text("this is not a checkpoint\n")
    torch.save({"state_dict": {}, "payload": NotPlainData()}, files / "pickled.ckpt")
    wide = torch.load(checkpoint, weights_only=True)
    wide["state_dict"]["net.classifier.weight"] = torch.zeros(10, 64)  # another architecture's shape
    torch.save(wide, files / "other_network.ckpt")
    torch.save(wide["state_dict"], files / "bare_state_dict.pt")
    broken = {name: root / f"data_{name}" for name in ("empty", "truncated", "header", "labels")}
    for name, folder in broken.items():
        if name != "empty":
            write_tiny_mnist(folder)
    raw = {name: folder / "MNIST" / "raw" for name, folder in broken.items()}
    images = raw["truncated"] / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[: len(images.read_bytes()) // 2])
    (raw["header"] / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x12\x34\x56\x78" + bytes(100)))
    labels = raw["labels"] / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[8] = 12  # a label MNIST does not have
    labels.write_bytes(gzip.compress(bytes(content)))
    (root / "data_cifar" / "cifar-10-batches-py").mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / "data_cifar" / "cifar-10-batches-py" / name).write_bytes(pickle.dumps({"data": "not images"}))
    sst2 = root / "data" / "sst2" / "train.tsv"
    sst2.write_text(sst2.read_text() + "a line without its label column\n")
    return root


# (arguments, exit code, message, seconds to fail at most). DATA / LOGS / FILES / CHECKPOINT are filled in below.
CASES = [
    # config: unknown keys, wrong types, out-of-range values, unknown targets
    (["trainer.max_epoch=3"], 1, "Could not override 'trainer.max_epoch'", 10),
    (["trainer.max_epochs=abc"], 2, "'trainer.max_epochs' is 'abc' (str) but pytorch_lightning.Trainer expects int",
     10),
    (["+model.hiden_dims=[8]"], 2, "'model.hiden_dims' is not a parameter of lightning_modules.networks.mlp.MLP", 10),
    (["model.activation=relux"], 2, "'model.activation' is 'relux'", 10),
    (["optimizer._target_=torch.optim.Adamm"], 2, "optimizer._target_: cannot import 'torch.optim.Adamm'", 10),
    (["seed=zero"], 2, "'seed' is 'zero' (str) but the run settings expect int", 10),
    (["mode=evaluate"], 2, "'mode' is 'evaluate' (str)", 10),
    (["data.batch_size=???"], 2, "config value(s) not set: data.batch_size", 10),
    (["optimizer.lr=-1"], 2, "'optimizer.lr' is -1: must be at least 0 (a learning rate is not negative)", 10),
    (["data.batch_size=0"], 2, "'data.batch_size' is 0: must be at least 1 (a batch holds at least one sample)", 10),
    (["data.eval_batch_size=-5"], 2, "'data.eval_batch_size' is -5: must be at least 1", 10),
    (["model.hidden_dims=[64,0]"], 2, "'model.hidden_dims' is [64, 0]: each entry must be at least 1", 10),
    (["trainer.max_epochs=-2"], 2, "'trainer.max_epochs' is -2: must be at least -1", 10),
    (["seed=-1"], 2, "'seed' is -1: a seed is a whole number from 0 to 4294967295 (2**32-1)", 10),
    (["run_name=../../escape"], 2, "'run_name' is '../../escape': a run name is one folder name", 10),
    (["data.val_size=256"], 2, "data.val_size=256 must be between 1 and 255: the training split has 256 images", 20),
    (["model.dropout=1.5"], 2, "dropout=1.5: a probability of zeroing a unit, from 0 (none) to below 1", 15),
    (["data.val_size=0"], 2, "'data.val_size' is 0: must be at least 1", 10),
    (["model=lstm"], 2, "reads token ids, but this data gives images", 15),
    (["data=sst2", "model=lstm", "data.tokenizer=spacy"], 2, "data.tokenizer='spacy': choose one of", 15),
    (["callbacks.evaluation_images.misclassified_examples=-1"], 2,
     "callbacks.evaluation_images.misclassified_examples=-1: it must be at least 0", 15),
    # data: missing, truncated, wrong format, wrong content
    (["paths.data_dir=DATA_empty", "data.download=false"], 2, "MNIST files not found: expected", 15),
    (["paths.data_dir=DATA_empty", "data.download=true", "data.mirrors=[file:///nowhere/]"], 2,
     "and downloading them failed", 15),
    (["paths.data_dir=DATA_truncated"], 2, "train-images-idx3-ubyte.gz is truncated or corrupt", 15),
    (["paths.data_dir=DATA_header"], 2, "t10k-images-idx3-ubyte.gz is not an IDX file of unsigned bytes", 15),
    (["paths.data_dir=DATA_labels"], 2, "t10k-labels-idx1-ubyte.gz holds label 12; MNIST has classes 0-9", 15),
    (["paths.data_dir=DATA_cifar", "data=cifar10", "model=cnn", "data.download=false"], 2,
     "data_batch_1 is not a CIFAR batch", 15),
    (["data=sst2", "model=lstm"], 2, "train.tsv line", 15),
    # checkpoints: missing, truncated, foreign, pickled objects, another network, not a training checkpoint
    (["ckpt_path=FILES/missing.ckpt"], 2, "ckpt_path=FILES/missing.ckpt: no such file", 15),
    (["ckpt_path=FILES/truncated.ckpt"], 2, "ckpt_path=FILES/truncated.ckpt does not load as plain tensors", 15),
    (["ckpt_path=FILES/foreign.ckpt"], 2, "ckpt_path=FILES/foreign.ckpt does not load as plain tensors", 15),
    (["ckpt_path=FILES/pickled.ckpt"], 2, "holds pickled objects, which are never loaded", 15),
    (["ckpt_path=FILES/other_network.ckpt"], 2,
     "ckpt_path=FILES/other_network.ckpt is a different network (other shape: net.classifier.weight)", 15),
    (["ckpt_path=FILES/bare_state_dict.pt"], 2, "is not a Lightning training checkpoint", 15),
    (["init_from=FILES/pickled.ckpt"], 2, "init_from=FILES/pickled.ckpt does not load as plain tensors", 15),
    (["init_from=FILES/other_network.ckpt"], 2, "init_from=FILES/other_network.ckpt is a different network", 15),
    (["mode=test", "ckpt_path=FILES/foreign.ckpt"], 2, "Keep checkpoints inside their run folder", 15),
]


def files_and_contents(folder: Path) -> dict[Path, tuple[bytes, int] | None]:
    """Every file and folder below `folder` (folders as None), with each file's bytes and modification time."""
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) if path.is_file() else None
            for path in folder.rglob("*")}


@pytest.mark.parametrize("arguments, code, message, seconds", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_fails_fast_names_it_and_overwrites_nothing(workspace, arguments, code, message, seconds):
    def fill(text: str) -> str:
        for name, value in (("DATA_", f"{workspace}/data_"), ("FILES", str(workspace / "files"))):
            text = text.replace(name, value)
        return text

    data_given = any(a.startswith("paths.data_dir=") for a in arguments)
    base = [o for o in quick_overrides(workspace / "data", workspace / "logs")
            if not (data_given and o.startswith("paths.data_dir="))]
    if any(a.startswith(("data=", "model=")) for a in arguments):  # the MLP's and MNIST's settings do not apply
        base = [o for o in base if not o.startswith(("model.hidden_dims", "data.download"))]
    before = files_and_contents(workspace / "logs")
    started = time.monotonic()
    result = run_cli(*base, *map(fill, arguments), "print_config=false", f"paths.cache_dir={workspace / 'cache'}")
    elapsed = time.monotonic() - started
    assert result.returncode == code, result.stdout[-2000:] + result.stderr[-3000:]
    assert fill(message) in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert elapsed < seconds, f"failed after {elapsed:.1f} s"
    after = files_and_contents(workspace / "logs")
    assert after == before  # nothing already written was changed or removed, and no folder or file was added
