"""Shared test helpers: tiny datasets written in the real file formats, and runs of the real run.py."""
import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker, and per `python run.py` a test starts (it inherits the environment): two workers
    # with two threads each would oversubscribe the two cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
REAL_DATA = Path(os.environ.get("DATA_DIR", ROOT.parent / "shared" / "data"))


def write_idx(path: Path, values: torch.Tensor, compress: bool = True) -> Path:
    """Write a uint8 tensor as an IDX file (big-endian header: 0, 0, 0x08, ndim, then each dimension)."""
    header = bytes([0, 0, 0x08, values.dim()]) + b"".join(d.to_bytes(4, "big") for d in values.shape)
    payload = header + values.to(torch.uint8).contiguous().numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_tiny_mnist(data_dir: Path, folder: str = "MNIST", train: int = 256, test: int = 64) -> Path:
    """A learnable MNIST-format dataset: the label is written into the image as a bright band, plus noise."""
    generator = torch.Generator().manual_seed(0)
    raw = data_dir / folder / "raw"
    for prefix, count in (("train", train), ("t10k", test)):
        labels = torch.randint(0, 10, (count,), generator=generator)
        images = torch.randint(0, 60, (count, 28, 28), generator=generator)
        for index, label in enumerate(labels):
            images[index, 2 * label: 2 * label + 3, :] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return data_dir


def write_cifar_batch(path: Path, count: int, label_key: str = "labels", classes: int = 10, seed: int = 0) -> dict:
    """One CIFAR python-pickle batch file: a dict with uint8 `data` (N x 3072, channel-major) and labels."""
    generator = np.random.default_rng(seed)
    batch = {"batch_label": "synthetic", "data": generator.integers(0, 256, (count, 3072), dtype=np.uint8),
             label_key: generator.integers(0, classes, count).tolist(), "filenames": [f"{i}.png" for i in range(count)]}
    if label_key == "fine_labels":
        batch["coarse_labels"] = [label // 5 for label in batch[label_key]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return batch


def write_cifar10(root: Path, per_batch: int = 20) -> list[dict]:
    """CIFAR-10's folder: data_batch_1..5 and test_batch, `per_batch` random images each."""
    return [write_cifar_batch(root / "cifar-10-batches-py" / name, per_batch, seed=i)
            for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])]


def write_cifar100(root: Path, count: int = 30) -> None:
    for name in ("train", "test"):
        write_cifar_batch(root / "cifar-100-python" / name, count, label_key="fine_labels", classes=100)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return write_tiny_mnist(tmp_path / "data")


def quick_overrides(data_dir: Path, log_dir: Path) -> list[str]:
    """A run of a few seconds on tiny data: small network, two short epochs."""
    return [f"paths.data_dir={data_dir}", f"paths.log_dir={log_dir}", f"paths.cache_dir={log_dir.parent / 'cache'}",
            "data.val_size=64", "data.batch_size=32",
            "data.eval_batch_size=64", "data.download=false", "model.hidden_dims=[32]", "trainer.max_epochs=2",
            "trainer.log_every_n_steps=2"]


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python run.py <args>` in a fresh process, from the repository root, as a user runs it."""
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def require_real_data(folder: str, inside: str = "raw") -> Path:
    """The real data folder (holding `folder/inside`); in CI (CI=true) its absence is a failure, elsewhere a skip."""
    path = REAL_DATA / folder / inside
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data missing in CI: {path} (set DATA_DIR)")
        pytest.skip(f"real data not found at {path} (set DATA_DIR)")
    return REAL_DATA


def synthetic_sentences(count: int, classes: int, seed: int = 0) -> list[tuple[str, int]]:
    """Learnable texts: filler words of random length (1 to 30) with one class word ("topic3") among them."""
    generator = np.random.default_rng(seed)
    filler = ["the", "a", "movie", "plot", "was", "very", "quite", "and", "it", "of", "story", "actors", ",", "."]
    rows = []
    for _ in range(count):
        label = int(generator.integers(classes))
        words = list(generator.choice(filler, int(generator.integers(1, 30))))
        words.insert(int(generator.integers(len(words) + 1)), f"topic{label}")
        rows.append((" ".join(words), label))
    return rows


def write_tiny_text(data_dir: Path, train: int = 300, test: int = 80) -> Path:
    """Every text dataset's folder in its published format (see datamodules/text_formats.py), small and learnable."""
    trec_coarse = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    for name, classes in (("sst2", 2), ("trec", 6), ("mr", 2), ("sms_spam", 2), ("ag_news", 4)):
        folder = data_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        splits = {"train": synthetic_sentences(train, classes, 1), "test": synthetic_sentences(test, classes, 2)}
        if name == "sst2":
            for split, file in (("train", "train.tsv"), ("test", "dev.tsv")):
                lines = ["sentence\tlabel"] + [f"{text}\t{label}" for text, label in splits[split]]
                (folder / file).write_text("\n".join(lines) + "\n", encoding="utf-8")
        elif name == "trec":
            for split, file in (("train", "train_5500.label"), ("test", "TREC_10.label")):
                lines = [f"{trec_coarse[label]}:other {text} ?" for text, label in splits[split]]
                (folder / file).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
        elif name == "mr":
            for label, file in ((1, "rt-polarity.pos"), (0, "rt-polarity.neg")):
                lines = [text for text, row_label in splits["train"] if row_label == label]
                (folder / file).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
        elif name == "sms_spam":
            lines = [f"{['ham', 'spam'][label]}\t{text}" for text, label in splits["train"]]
            (folder / "SMSSpamCollection").write_text("\n".join(lines) + "\n", encoding="utf-8")
        else:
            for split in ("train", "test"):
                lines = [f'"{label + 1}","{text.split()[0]} title","{text}"' for text, label in splits[split]]
                (folder / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data_dir


def synthetic_table(rows: int, seed: int = 0, noise: float = 0.5):
    """A table with a known answer: y = 3 x1 - 2 x2 + effect[colour] + noise (noise's standard deviation `noise`),
    x3 pure noise, size an integer with few values, and a yes/no label `big` (y > 0)."""
    import pandas as pd

    generator = np.random.default_rng(seed)
    effect = {"red": 2.0, "green": -1.0, "blue": 0.5, "black": -3.0}
    colour = generator.choice(list(effect), rows)
    x1, x2, x3 = generator.normal(size=(3, rows))
    y = 3 * x1 - 2 * x2 + np.vectorize(effect.get)(colour) + generator.normal(scale=noise, size=rows)
    return pd.DataFrame({"id": [f"r{i}" for i in range(rows)], "x1": x1, "colour": colour, "x2": x2, "x3": x3,
                         "size": generator.integers(1, 4, rows), "y": y, "big": np.where(y > 0, "yes", "no")})


def write_tiny_tables(data_dir: Path) -> Path:
    """The experiments' table files (ames_housing/ames.csv, churn/mlc_churn.csv), small, with their target columns."""
    table = synthetic_table(400)
    (data_dir / "ames_housing").mkdir(parents=True, exist_ok=True)
    (data_dir / "churn").mkdir(parents=True, exist_ok=True)
    table.assign(Sale_Price=np.exp(12 + table.y / 10)).drop(columns=["y", "big"]).to_csv(
        data_dir / "ames_housing" / "ames.csv", index=False)
    churn = table.rename(columns={"big": "churn"}).drop(columns=["y"]).assign(state="KS")
    churn.to_csv(data_dir / "churn" / "mlc_churn.csv", index=False)
    table.to_csv(data_dir / "table.csv", index=False)
    return data_dir


def synthetic_series(steps: int, seed: int = 0, noise: float = 0.1, start: str | None = "2020-01-01",
                     freq: str = "30min"):
    """A series of known form: y = sin(2 pi t / 24) + 0.001 t + 0.5 x + noise (standard deviation `noise`), with a
    covariate x known in advance (standard normal, as a temperature's deviation). Times: timestamps from `start`
    every `freq`, or step numbers."""
    import pandas as pd

    generator = np.random.default_rng(seed)
    t = np.arange(steps)
    x = generator.normal(0, 1, steps)
    y = np.sin(2 * np.pi * t / 24) + 0.001 * t + 0.5 * x + generator.normal(0, noise, steps)
    time = pd.date_range(start, periods=steps, freq=freq) if start else t
    return pd.DataFrame({"time": time, "y": y, "x": x})


def write_tiny_series(data_dir: Path) -> Path:
    """The experiments' series files (elecdemand/elecdemand.csv: 70 days of half-hours; sunspots/sunspot_month.csv:
    900 months), and series.csv, with their columns."""
    (data_dir / "elecdemand").mkdir(parents=True, exist_ok=True)
    (data_dir / "sunspots").mkdir(parents=True, exist_ok=True)
    series = synthetic_series(70 * 48)
    series.assign(timestamp=series.time.dt.strftime("%Y-%m-%d %H:%M"), Demand=series.y + 4,
                  WorkDay=(series.time.dt.dayofweek < 5).astype(int), Temperature=series.x * 10 + 20)[
        ["timestamp", "Demand", "WorkDay", "Temperature"]].to_csv(data_dir / "elecdemand" / "elecdemand.csv",
                                                                  index=False)
    months = synthetic_series(900, start=None)
    months.assign(time=1749 + months.time / 12, value=months.y * 50 + 80)[["time", "value"]].to_csv(
        data_dir / "sunspots" / "sunspot_month.csv", index=False)
    series.to_csv(data_dir / "series.csv", index=False)
    return data_dir


# The tiers, one folder each (README, Tests): a test's tier is its folder's, unless it is marked with another
# (a real-data test among a folder of unit tests). `python -m pytest -m unit` runs the fast tier alone.
TIERS = {"unit": "in-process, synthetic data, no subprocess: seconds each",
         "config": "every option of every conf/ group, composed, checked and trained for two steps",
         "data": "the real datasets in DATA_DIR, trained to their reference scores",
         "runs": "whole `python run.py` processes: modes, sweeps, DDP, TensorBoard files",
         "reliability": "signals, kills, faults and the bad-input table"}
# Seconds the longest tests take on one thread of this 2-core machine (pytest --durations); the others count as
# their tier's typical time. Only the order of the tests depends on it.
SLOW_TEST_SECONDS = {"[fashion_mnist_cnn-": 270, "[sst2_bilstm_attention-": 245, "[mnist_cnn-": 220}
TIER_SECONDS = {"unit": 0, "config": 5, "runs": 10, "data": 60, "reliability": 60}


def tier_of(item) -> str:
    marked = [mark.name for mark in item.iter_markers() if mark.name in TIERS]
    return marked[0] if marked else Path(item.fspath).parent.name


def pytest_collection_modifyitems(items):
    """Each test gets its tier's marker; then longest first. The two xdist workers take tests one at a time from
    this list (pyproject: --dist load --maxschedchunk 1), so the long real-data runs start at once and the short
    tests fill in around them."""
    for item in items:
        tier = tier_of(item)
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)

    def seconds(item):
        return next((s for key, s in SLOW_TEST_SECONDS.items() if key in item.nodeid), TIER_SECONDS[tier_of(item)])
    items.sort(key=seconds, reverse=True)  # stable: the short tests keep their order


@pytest.fixture(autouse=True)
def unit_tests_start_no_python_process(request, monkeypatch):
    """The unit tier's promise, enforced: a unit test that starts a Python process of its own (`python run.py`, a
    `python -c` script) fails and says where it belongs. (What the code under test starts is not a test's process:
    a run's `git` call for provenance.json, torch.compile's compile workers.)"""
    if tier_of(request.node) != "unit":
        return
    start = subprocess.Popen.__init__

    def refuse_python(self, command, *args, **kwargs):
        words = [str(word) for word in command] if isinstance(command, (list, tuple)) else str(command).split()
        if "python" in Path(words[0]).name and any(word == "-c" or word.endswith("run.py") for word in words[1:]):
            raise AssertionError(f"a unit test started a Python process ({command}): move it to tests/runs/ or "
                                 f"mark it @pytest.mark.runs")
        start(self, command, *args, **kwargs)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse_python)


def options_reading_token_ids(group: str) -> tuple[list[str], list[str]]:
    """conf/<group>'s options (model or data) split by what their `_target_` is: (token-id ones, image ones). A
    sequence network's constructor takes `vocabulary_size`; a text DataModule gives it. Table and series options (a
    network taking `cardinalities` or `lookback`, data=table or time_series) are in neither: their own tests."""
    import inspect

    from datamodules.text import TextClassificationDataModule
    from lightlab.base.objects import locate
    from lightlab.run.compose import CONFIG_DIR, compose_config

    text, images = [], []
    for option in sorted(p.stem for p in (CONFIG_DIR / group).glob("[!_]*.yaml")):
        target = locate(compose_config([f"{group}={option}"], output_dir="unused")[group]._target_)
        parameters = inspect.signature(target).parameters
        if "cardinalities" in parameters or "lookback" in parameters or target.__name__ in ("TableDataModule",
                                                                                             "TimeSeriesDataModule"):
            continue  # (tables' and series' own tests: test_tables.py, test_time_series.py)
        reads_text = ("vocabulary_size" in inspect.signature(target).parameters if group == "model"
                      else issubclass(target, TextClassificationDataModule))
        (text if reads_text else images).append(option)
    return text, images
