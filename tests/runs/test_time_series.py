"""Series through `python run.py`: both experiments in debug size with their TensorBoard tags and pictures, a series
never seen before with only data.path, data.target and data.horizon, and mode=predict on the test period and after a
file's history."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import run_cli, synthetic_series, write_tiny_series

TAGS = {"test/mae", "test/rmse", "test/naive_mae", "test/mase", "val/mae", "val/mase", "train/mae", "train/loss"}


def run_folder(logs, experiment: str):
    return next((logs / experiment).glob("run_*"))


@pytest.mark.parametrize("experiment", ["elecdemand_dayahead", "sunspots"])
def test_each_experiment_runs_in_debug_size_with_its_tensorboard_tags(tmp_path, experiment):
    data = write_tiny_series(tmp_path / "data")
    result = run_cli(f"experiment={experiment}", f"paths.data_dir={data}", f"paths.log_dir={tmp_path / 'logs'}",
                     "trainer.max_epochs=2", "print_config=false")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = run_folder(tmp_path / "logs", experiment)
    events = EventAccumulator(str(folder), size_guidance={"images": 0}).Reload()
    assert TAGS <= set(events.Tags()["scalars"])
    assert {"test/mae_by_step", "test/forecasts"} <= set(events.Tags()["images"])
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert metrics["test/mase"] == pytest.approx(metrics["test/mae"] / metrics["test/naive_mae"], rel=1e-5)
    checkpoint = torch.load(next((folder / "checkpoints").glob("epoch*.ckpt")), weights_only=True)
    fitted = checkpoint["TimeSeriesDataModule"]
    assert fitted["targets"] == (["Demand"] if experiment == "elecdemand_dayahead" else ["value"])
    assert fitted["calendar"] == (["time_of_day", "day_of_week"] if experiment == "elecdemand_dayahead" else [])


def test_a_new_series_with_only_path_target_and_horizon_beats_the_naive_forecast(tmp_path):
    synthetic_series(3000).to_csv(tmp_path / "load.csv", index=False)
    result = run_cli("data=time_series", f"data.path={tmp_path / 'load.csv'}", "data.target=y", "data.horizon=6",
                     f"paths.log_dir={tmp_path / 'logs'}", "print_config=false", "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_folder(tmp_path / "logs", "time_series_forecast_mlp") / "metrics.json").read_text())
    assert "best_val/mae" in metrics["metrics"]
    assert metrics["metrics"]["test/mase"] < 0.6  # (the covariate x is left out: its part of y is noise here)


def test_predict_writes_the_test_periods_forecasts_with_the_test_mae_and_forecasts_after_a_history(tmp_path):
    series = synthetic_series(1200)
    series.to_csv(tmp_path / "load.csv", index=False)
    trained = run_cli("data=time_series", f"data.path={tmp_path / 'load.csv'}", "data.target=y", "data.horizon=6",
                      "data.covariates=[x]", "data.season=24", "data.test_size=100", "data.val_size=100",
                      f"paths.log_dir={tmp_path / 'logs'}", "trainer.max_epochs=3", "print_config=false")
    assert trained.returncode == 0, trained.stderr[-3000:]
    folder = run_folder(tmp_path / "logs", "time_series_forecast_mlp")
    checkpoint = next((folder / "checkpoints").glob("epoch*.ckpt"))
    predicted = run_cli("mode=predict", f"ckpt_path={checkpoint}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    written = pd.read_csv(folder / "predict_001" / "forecast.csv")
    assert list(written.columns) == ["origin", "timestamp", "step", "forecast", "actual"]
    assert len(written) == 100 * 6 and sorted(set(written.step)) == list(range(1, 7))
    assert set(pd.to_datetime(written.timestamp)) == set(series.time[-100:])  # every test step, at every step
    assert np.allclose(written.actual, series.set_index("time").y[pd.to_datetime(written.timestamp)], atol=1e-5)
    tested = json.loads((folder / "metrics.json").read_text())["metrics"]["test/mae"]
    assert (written.forecast - written.actual).abs().mean() == pytest.approx(tested, rel=1e-5)

    # After a history: its last rows carry the coming steps' covariate and no target (no dummy values).
    history = series.iloc[:700].copy()
    history.loc[694:, "y"] = np.nan
    history.to_csv(tmp_path / "history.csv", index=False)
    ahead = run_cli("mode=predict", f"ckpt_path={checkpoint}", f"data.predict_path={tmp_path / 'history.csv'}")
    assert ahead.returncode == 0, ahead.stderr[-3000:]
    forecast = pd.read_csv(folder / "predict_002" / "forecast.csv")
    assert list(forecast.step) == [1, 2, 3, 4, 5, 6] and forecast.actual.isna().all()
    assert list(pd.to_datetime(forecast.timestamp)) == list(series.time[694:700])
    assert set(forecast.origin) == {str(series.time[693])}
    # The same steps inside the test period of a longer history are forecast the same way.
    assert (forecast.forecast - series.y[694:700].to_numpy()).abs().mean() < 3 * tested
    # data.path=<another file> asks the same: the horizon after its end (the training file: its test period).
    again = run_cli("mode=predict", f"ckpt_path={checkpoint}", f"data.path={tmp_path / 'history.csv'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert pd.read_csv(folder / "predict_003" / "forecast.csv").equals(forecast)

    history.drop(columns=["x"]).to_csv(tmp_path / "no_covariate.csv", index=False)
    refused = run_cli("mode=predict", f"ckpt_path={checkpoint}", f"data.predict_path={tmp_path / 'no_covariate.csv'}")
    assert refused.returncode == 2 and "no column 'x' (data.covariates)" in refused.stderr
    history.iloc[:697].to_csv(tmp_path / "short_future.csv", index=False)
    refused = run_cli("mode=predict", f"ckpt_path={checkpoint}", f"data.predict_path={tmp_path / 'short_future.csv'}")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "needs the known covariates (x) of those steps: add 6 rows" in refused.stderr
    late = history.assign(time=lambda f: f.time.where(f.index < 694, f.time + pd.Timedelta(days=1)))
    late.to_csv(tmp_path / "late.csv", index=False)
    refused = run_cli("mode=predict", f"ckpt_path={checkpoint}", f"data.predict_path={tmp_path / 'late.csv'}")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "row 695 (counting data rows from 1), after the last known y, is at 2020-01-16 11:00:00" in refused.stderr
    assert not (folder / "predict_004").exists()  # (a TensorBoard logger's hparams.yaml is no result either)

    # mode=export: the network and, as plain JSON, what turns a raw series into its inputs and its outputs back.
    exported = run_cli("mode=export", f"ckpt_path={checkpoint}")
    assert exported.returncode == 0, exported.stderr[-3000:]
    preprocessing = json.loads((folder / "export_001" / "preprocessing.json").read_text())
    saved = torch.load(checkpoint, weights_only=True)["TimeSeriesDataModule"]
    assert preprocessing["mean"] == saved["mean"] and preprocessing["std"] == saved["std"]
    assert preprocessing["covariates"] == ["x"] and preprocessing["grid"]["step"] == "P0DT0H30M0S"
    files = {path.name for path in (folder / "export_001").iterdir()}
    assert {"network.pt", "network.torchscript.pt", "network.onnx"} <= files
