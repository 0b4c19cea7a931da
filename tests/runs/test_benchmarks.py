"""The benchmark suite runs end to end and writes its table (on tiny data: only the plumbing is checked here; the
numbers are measured by running it on the real data, see README "Performance")."""
import csv
import json
import math
import subprocess
import sys

import torch
from hydra.utils import instantiate

from benchmarks import flops
from benchmarks.data_path import PerSampleTransform
from benchmarks.epoch_time import WORKLOADS, HandWritten, composed
from benchmarks.epoch_with_validation import HandWrittenWithValidation
from tests.conftest import ROOT, write_tiny_mnist, write_tiny_series, write_tiny_tables, write_tiny_text


def test_training_flops_count_three_products_per_linear_layer():
    shapes = flops.layer_shapes(784, [512, 256, 128], 10)
    assert shapes == [(784, 512), (512, 256), (256, 128), (128, 10)]
    assert flops.training_flops_per_sample(shapes) == 6 * (784 * 512 + 512 * 256 + 256 * 128 + 128 * 10)
    products = flops.step_products([(784, 512)], 4)
    assert products == [(4, 784, 512), (4, 512, 784), (512, 4, 784)]
    assert sum(2 * m * k * n for m, k, n in products) == 4 * flops.training_flops_per_sample([(784, 512)])


def test_the_per_sample_baseline_gives_what_our_batches_give():
    images, labels = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8), torch.arange(5)
    dataset = PerSampleTransform(images, labels, 0.1307, 0.3081)
    image, label = dataset[3]
    expected = (images[3].float() / 255 - 0.1307) / 0.3081
    assert image.shape == (1, 28, 28) and label == 3 and torch.allclose(image[0], expected, atol=1e-6)


def test_a_hand_written_epoch_trains_one_batch_per_step_as_the_suite_interleaves_it(tmp_path):
    # The suite runs one hand-written batch after each framework batch: each next() is exactly one optimizer step.
    data_dir = write_tiny_mnist(tmp_path / "data")
    cfg = composed(WORKLOADS["mnist_mlp"], str(data_dir), str(tmp_path), "data.val_size=64", "data.batch_size=50",
                   "data.download=false", f"paths.cache_dir={tmp_path / 'cache'}")
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    hand_written = HandWritten(cfg, datamodule)
    state = hand_written.build()
    epoch = hand_written.epoch_steps(state, 0, None)

    def optimizer_steps() -> set[float]:
        return {float(values["step"]) for values in state[1].state.values()}

    assert next(epoch) > 0 and optimizer_steps() == {1.0}
    rest = list(epoch)
    steps = -(-(len(datamodule.splits["fit"][1])) // 50)
    assert 1 + len(rest) == steps >= 3 and all(seconds > 0 for seconds in rest)
    assert optimizer_steps() == {float(steps)}
    assert len(list(hand_written.epoch_steps(state, 1, 2))) == 2  # a workload's batch limit


def test_the_hand_written_whole_epoch_validates_and_saves_what_the_framework_would(tmp_path):
    data_dir = write_tiny_mnist(tmp_path / "data")
    cfg = composed(WORKLOADS["mnist_lht"], str(data_dir), str(tmp_path), "data.val_size=64", "data.download=false",
                   f"paths.cache_dir={tmp_path / 'cache'}")
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    hand_written = HandWrittenWithValidation(cfg, datamodule)
    state = hand_written.build()
    seconds = list(hand_written.epoch_steps(state, 0, None))
    assert len(hand_written.validation_seconds) == 1 and seconds[-1] > hand_written.validation_seconds[0] > 0
    saved = torch.load(hand_written.checkpoint, weights_only=True)
    assert saved["net"].keys() == state[0].state_dict().keys() and saved["optimizer"]["state"]
    assert 0 <= saved["val_acc"] <= 1 and math.isfinite(saved["val_loss"]) and saved["val_loss"] > 0
    assert state[0].training  # back in training mode after validating


def test_the_suite_runs_every_measurement_and_writes_json_and_csv(tmp_path):
    data_dir = write_tiny_series(write_tiny_tables(write_tiny_text(write_tiny_mnist(tmp_path / "data"))))
    result = subprocess.run(
        [sys.executable, "benchmarks/suite.py", "--quick", "--data-dir", str(data_dir), "--output-dir",
         str(tmp_path / "out"), "--override", "data.val_size=64", "--override", "data.download=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "out" / "suite.json").read_text())["rows"]
    measurements = {(row["section"].split(" (")[0], row["measurement"]) for row in rows}
    for workload in ("mnist_mlp", "mnist_lht", "mnist_cnn", "sst2_bilstm_attention", "ames_price",
                     "elecdemand_dayahead"):
        assert (workload, "epoch time ratio framework / hand") in measurements
        assert (workload, "between-epoch overhead / epoch time") in measurements
    for workload in ("mnist_mlp", "mnist_lht"):  # the whole epoch: validation and checkpoint in it, in process
        assert (workload, "ratio framework / hand, validation and checkpoint included") in measurements
    for section, measurement in [("start-up", "python run.py --help (s)"),
                                 ("data path", "our iterator / per-sample-transform DataLoader"),
                                 ("series windows", "peak / series size, 200,000 steps x 7 features"),
                                 ("MLP FLOP/s", "framework / torch.mm on the step's products")]:
        assert (section, measurement) in measurements
    for net in ("MNIST LHT-net 784-64-128-64-10", "MNIST MLP 784-512-256-128-10"):
        assert (net, "per-epoch ratio framework / hand") in measurements
        assert (net, "fixed cost (run minus its epochs) above the hand-written (s)") in measurements
    # (whole-run differences of 2-epoch tiny runs are noise: finite, of either sign)
    assert all(math.isfinite(value) and (value > 0 or "whole runs" in row["section"])
               for row in rows for value in row["values"])
    assert ([row["target"].split(":")[0] for row in rows if row["target"]]
            == ["<= 1.05", "<= 1.05", "<= 1.1", "<= 1.1", "<= 1.05", "<= 1.05", "<= 1.2", "<= 1.2", "<= 1.1", "<= 1",
                "<= 1.05", "<= 1", "<= 2", "<= 3", ">= 10", ">= 0.35"])
    with open(tmp_path / "out" / "suite.csv") as file:
        table = list(csv.DictReader(file))
    assert [row["measurement"] for row in table] == [row["measurement"] for row in rows]
    assert "epoch time ratio framework / hand" in result.stdout and "target" in result.stdout


def test_the_hand_written_series_loop_trains_on_the_frameworks_windows(tmp_path):
    data_dir = write_tiny_series(tmp_path / "data")
    cfg = composed(WORKLOADS["elecdemand_dayahead"], str(data_dir), str(tmp_path))
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    hand_written = HandWritten(cfg, datamodule)
    assert hand_written.series and not hand_written.text
    (history, future), targets = next(hand_written.batches(0, 1))
    order = torch.randperm(len(datamodule.splits["fit"][0]), generator=torch.Generator().manual_seed(0))[:128]
    windows = datamodule.splits["fit"][0][order]
    assert history.shape == (128, 336, 7) and future.shape == (128, 48, 6) and targets.shape == (128, 48, 1)
    assert torch.equal(history, windows[:, :, :336].transpose(1, 2)) and torch.equal(targets[..., 0],
                                                                                  windows[:, 0, 336:])
    net, _, loss = hand_written.build()
    assert type(net).__name__ == "WindowMLP" and type(loss).__name__ == "L1Loss"
