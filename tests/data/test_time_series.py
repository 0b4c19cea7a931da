"""The forecasting experiments on the real files in DATA_DIR, to the scores README states, and forecast.csv of the
electricity experiment against its test/mae."""
import json

import pandas as pd
import pytest

from tests.conftest import require_real_data, run_cli

pytestmark = pytest.mark.data


def test_day_ahead_electricity_demand_beats_the_seasonal_naive_forecast_by_a_quarter(tmp_path):
    data = require_real_data("elecdemand", inside="")
    result = run_cli("experiment=elecdemand_dayahead", f"paths.data_dir={data}", f"paths.log_dir={tmp_path}",
                     "print_config=false", "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = next((tmp_path / "elecdemand_dayahead").glob("run_*"))
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    # The same half-hour the day before, over the last 28 days: 0.305 GW (measured independently).
    assert metrics["test/naive_mae"] == pytest.approx(0.305, rel=0.01)
    assert metrics["test/mae"] <= 0.229, metrics
    predicted = run_cli("mode=predict", f"ckpt_path={next((folder / 'checkpoints').glob('epoch*.ckpt'))}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    forecast = pd.read_csv(folder / "predict_001" / "forecast.csv")
    assert list(forecast.columns) == ["origin", "timestamp", "step", "forecast", "actual"]
    assert len(forecast) == 28 * 48 * 48  # every half-hour of the 28 days, from each of the 48 steps before it
    assert forecast.timestamp.min() == "2014-12-04 00:00:00" and forecast.timestamp.max() == "2014-12-31 23:30:00"
    assert (forecast.forecast - forecast.actual).abs().mean() == pytest.approx(metrics["test/mae"], rel=1e-5)


def test_sunspots_beat_the_last_value_over_twelve_months(tmp_path):
    data = require_real_data("sunspots", inside="")
    result = run_cli("experiment=sunspots", f"paths.data_dir={data}", f"paths.log_dir={tmp_path}",
                     "print_config=false", "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(next((tmp_path / "sunspots").glob("run_*/metrics.json")).read_text())["metrics"]
    # The last value over the last 300 months, 1 to 12 months ahead: 12.9 to 26.0, 19.4 over all.
    assert metrics["test/naive_mae"] == pytest.approx(19.41, rel=0.01)
    assert metrics["test/mase"] <= 0.90, metrics
