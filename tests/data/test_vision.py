"""Vision experiments on real data: the accuracy each conf/experiment file states."""
import json

import pytest

from tests.conftest import require_real_data, run_cli


@pytest.mark.parametrize("experiment,folder,minimum", [("mnist_cnn", "MNIST", 0.99),
                                                        ("fashion_mnist_cnn", "FashionMNIST", 0.91)])
def test_cnn_experiment_on_real_data(experiment, folder, minimum, tmp_path):
    data = require_real_data(folder)
    result = run_cli(f"experiment={experiment}", "run_name=real", f"paths.data_dir={data}", f"paths.log_dir={tmp_path}",
                     timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / experiment / "real" / "metrics.json").read_text())["metrics"]
    assert metrics["test/acc"] >= minimum
