"""The table experiments on the real files in DATA_DIR, to the scores README states."""
import json

import pytest

from tests.conftest import require_real_data, run_cli

pytestmark = pytest.mark.data


@pytest.mark.parametrize("experiment, folder, limits", [
    # test RMSE of log(Sale_Price): ridge 0.159, gradient-boosted trees 0.135 on this file
    ("ames_price", "ames_housing", {"test/rmse_log": (None, 0.14)}),
    # majority class 0.859, logistic regression 0.866, gradient-boosted trees 0.959
    ("churn", "churn", {"test/acc": (0.93, None), "test/auroc": (0.90, None)}),
])
def test_table_experiment_reaches_its_score(tmp_path, experiment, folder, limits):
    data = require_real_data(folder, inside="")
    result = run_cli(f"experiment={experiment}", f"paths.data_dir={data}", f"paths.log_dir={tmp_path}",
                     "print_config=false", "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(next((tmp_path / experiment).glob("run_*/metrics.json")).read_text())["metrics"]
    for name, (low, high) in limits.items():
        assert (low is None or metrics[name] >= low) and (high is None or metrics[name] <= high), (name, metrics)
