"""Series: the time grid, chronological periods, windows as views, scaling fitted on the training period only, the
naive baseline's definition, the forecasting networks and the forecast module, in-process on synthetic series."""
import numpy as np
import onnxruntime
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from datamodules.time_series import TimeSeriesDataModule
from datamodules.time_steps import calendar_features, fill_missing, regular_grid, size_in_steps
from lightlab.base.errors import UserError
from lightlab.base.objects import build
from lightlab.run.compose import compose_config
from lightlab.run.export import export_network
from tests.conftest import synthetic_series

MODELS = ["forecast_mlp", "forecast_linear", "forecast_lstm", "forecast_gru"]


def config(tmp_path, *overrides: str):
    return compose_config(["data=time_series", f"data.path={tmp_path / 'series.csv'}", "data.target=y",
                           "data.horizon=6", f"paths.data_dir={tmp_path}", *overrides], output_dir=str(tmp_path))


def datamodule(tmp_path, frame: pd.DataFrame, *overrides: str) -> TimeSeriesDataModule:
    frame.to_csv(tmp_path / "series.csv", index=False)
    data = build(config(tmp_path, "data.covariates=[x]", "data.lookback=24", "data.test_size=100",
                        "data.val_size=50", *overrides).data, "data")
    data.setup("fit")
    return data


def test_windows_are_views_of_one_series_and_batches_gather_them(tmp_path):
    data = datamodule(tmp_path, synthetic_series(600))
    storage = data.series.untyped_storage().data_ptr()
    for split, tensors in data.splits.items():
        assert tensors[0].untyped_storage().data_ptr() == storage, split  # windows: no copy of the series
        if split != "fit":
            assert tensors[1].untyped_storage().data_ptr() == storage  # the naive forecast's source too
    windows = data.splits["fit"][0]
    assert windows.shape == (600 - 150 - 24 - 6 + 1, data.series.shape[1], 24 + 6)
    batch = next(iter(data.train_dataloader()))[0]
    first = int(data.train_dataloader().sampler.indices()[0])
    assert torch.equal(batch[0], data.series[first:first + 30].T)  # window i: steps i .. i + lookback + horizon - 1


def test_periods_are_chronological_and_every_target_is_scored_once_per_step(tmp_path):
    data = datamodule(tmp_path, synthetic_series(600))
    fit_origins = data.origins["fit"]
    assert fit_origins[0] == 23 and fit_origins[-1] + 6 == 449  # targets end at the last training step
    for split, (start, end) in {"validate": (450, 500), "test": (500, 600)}.items():
        _, _, mask = data.splits[split]
        targets = data.origins[split][:, None] + np.arange(1, 7)
        for step in range(6):  # each step ahead scores each target of the period exactly once
            assert sorted(targets[mask[:, step].numpy(), step]) == list(range(start, end)), (split, step)


def test_scaling_and_training_batches_ignore_everything_after_the_training_period(tmp_path):
    """No leakage: +1000 on every value after the training period changes neither the fitted scaling nor a single
    training batch."""
    series = synthetic_series(600)
    before = datamodule(tmp_path, series)
    shifted = series.copy()
    shifted.loc[450:, ["y", "x"]] += 1000
    after = datamodule(tmp_path, shifted)
    fitted_before, fitted_after = before.state_dict(), after.state_dict()
    assert fitted_before.pop("file_sha1") != fitted_after.pop("file_sha1")  # (another file: the fit is the same)
    assert fitted_before == fitted_after
    for first, second in zip(before.train_dataloader(), after.train_dataloader()):
        assert torch.equal(first[0], second[0])
    assert not torch.equal(before.splits["test"][0], after.splits["test"][0])  # (the shift did reach the data)


def test_the_naive_forecast_repeats_the_last_season_and_matches_its_definition(tmp_path):
    """test/naive_mae is the MAE of y[t - season * ceil(h / season)] for every target t and step h of the period."""
    series = synthetic_series(600)
    for season in (None, 4, 24):
        data = datamodule(tmp_path, series, f"data.season={season or 'null'}")
        module = build(config(tmp_path).lightning_module, "lightning_module", **data.network_inputs(),
                       _recursive_=False)
        windows, seasons, mask = data.splits["test"]
        naive = module.naive(seasons)[..., 0]
        y = series.y.to_numpy()
        steps = np.arange(1, 7)
        targets = data.origins["test"][:, None] + steps
        expected = y[targets - (season or 1) * np.ceil(steps / (season or 1)).astype(int)]
        assert np.allclose(naive.numpy(), expected, atol=1e-5), season
        errors = np.abs(expected - y[np.minimum(targets, 599)])[mask.numpy()]
        module.metrics["test_metrics"].update(module.original_units(module.parts(windows)[2]),
                                              module.original_units(module.parts(windows)[2]), naive[..., None],
                                              mask)
        scores = module.metrics["test_metrics"].compute()
        assert float(scores["naive_mae"]) == pytest.approx(errors.mean(), rel=1e-5)
        assert float(scores["mae"]) == pytest.approx(0, abs=1e-5) and float(scores["mase"]) < 1e-5


def test_gaps_are_reported_with_the_first_one_or_filled_never_from_a_forecasts_future():
    frame = synthetic_series(100).drop(index=[10, 11, 50]).reset_index(drop=True)
    frame.loc[70, "y"] = np.nan  # (grid position 73)
    full, grid = regular_grid(frame, "time", ["y", "x"], "s.csv")
    with pytest.raises(UserError, match=r"3 missing step\(s\) of 0 days 00:30:00 and 1 row\(s\) with a missing value; "
                                        r"the first at 2020-01-01 05:00:00"):
        fill_missing(full, grid, None, "s.csv")
    filled, missing = fill_missing(full, grid, "linear", "s.csv")
    assert len(filled) == 100 and not filled.isna().any().any()
    assert list(np.flatnonzero(missing.any(axis=1))) == [10, 11, 50, 73]
    assert filled.y[10] == pytest.approx(full.y[9] + (full.y[12] - full.y[9]) / 3)  # a third of the way
    # From causal_from (the training period's end) on, the last value is carried forward: never interpolated
    # towards a value a forecast from there is asked for.
    causal, _ = fill_missing(full, grid, "linear", "s.csv", causal_from=40)
    assert causal.y[10] == filled.y[10] and causal.y[50] == full.y[49] and causal.y[73] == full.y[72]
    previous, _ = fill_missing(full, grid, "previous", "s.csv")
    assert previous.y[11] == full.y[9]
    with pytest.raises(UserError, match="column 'x' has no value at all"):
        fill_missing(full.assign(x=np.nan), grid, "linear", "s.csv")


def test_targets_that_were_filled_are_never_scored(tmp_path):
    series = synthetic_series(600)
    series.loc[[520, 521], "y"] = np.nan
    data = datamodule(tmp_path, series, "data.fill=linear")
    _, _, mask = data.splits["test"]
    targets = data.origins["test"][:, None] + np.arange(1, 7)
    scored = set(targets[mask.numpy()])
    assert scored == set(range(500, 600)) - {520, 521}


def test_monthly_timestamps_are_a_calendar_month_apart_and_utc_offsets_are_read_as_utc():
    months = pd.DataFrame({"time": pd.date_range("2000-01-01", periods=40, freq="MS"), "y": np.arange(40.0)})
    full, grid = regular_grid(months.drop(index=[5]), "time", ["y"], "s.csv")
    assert grid.step_text == "1 month" and len(full) == 40 and full.y.isna().sum() == 1
    assert grid.texts(np.array([0, 13])) == ["2000-01-01 00:00:00", "2001-02-01 00:00:00"]
    assert calendar_features("auto", grid, grid.times(np.arange(3)))[0] == ["month_sin", "month_cos"]
    assert type(grid).from_state(grid.state()) == grid
    summer = pd.DataFrame({"time": ["2020-03-29 00:00+01:00", "2020-03-29 01:00+01:00", "2020-03-29 03:00+02:00",
                                    "2020-03-29 04:00+02:00"], "y": [1.0, 2.0, 3.0, 4.0]})
    full, grid = regular_grid(summer, "time", ["y"], "s.csv")
    assert grid.step == pd.Timedelta(hours=1) and len(full) == 4  # (01:00+01:00 is 00:00 UTC, 03:00+02:00 01:00)


@pytest.mark.parametrize("times, message", [
    (["2020-01-01 00:00", "2020-01-01 01:00", "yesterday", "2020-01-01 03:00"], r"row 3 .* holds 'yesterday'"),
    (["2020-01-01 00:00", "2020-01-01 02:00", "2020-01-01 01:00", "2020-01-01 03:00"],
     r"row 3 \(2020-01-01 01:00\) does not come after row 2"),
    ([0.0, 1.0, 2.5, 3.0], r"not evenly spaced: the usual step is 1, but row 3 \(2.5\)"),
])
def test_times_that_are_not_a_sorted_regular_grid_are_refused_by_row(times, message):
    frame = pd.DataFrame({"time": times, "y": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(UserError, match=message):
        regular_grid(frame, "time", ["y"], "s.csv")


def test_decimal_years_are_a_monthly_grid_and_sizes_take_steps_shares_or_durations():
    frame = pd.DataFrame({"time": 1749 + np.arange(120) / 12, "y": np.arange(120.0)})
    full, grid = regular_grid(frame, "time", ["y"], "s.csv")
    assert not grid.timestamps and grid.step == pytest.approx(1 / 12) and len(full) == 120
    assert size_in_steps(30, "test_size", grid, 120) == 30 and size_in_steps(0.25, "test_size", grid, 120) == 30
    with pytest.raises(UserError, match=r"data.test_size='28D': .* as a number of steps"):
        size_in_steps("28D", "test_size", grid, 120)
    _, stamped = regular_grid(synthetic_series(10), "time", ["y"], "s.csv")
    assert size_in_steps("1D", "val_size", stamped, 10) == 48 and size_in_steps("6 hours", "v", stamped, 10) == 12
    with pytest.raises(UserError, match="a whole number of steps of 0 days 00:30:00"):
        size_in_steps("45min", "val_size", stamped, 10)


def test_calendar_features_follow_the_step_and_need_timestamps():
    _, half_hours = regular_grid(synthetic_series(10), "time", ["y"], "s.csv")
    names, values = calendar_features("auto", half_hours, half_hours.times(np.arange(48)))
    assert names == ["time_of_day_sin", "time_of_day_cos", "day_of_week_sin", "day_of_week_cos", "month_sin",
                     "month_cos"]
    assert values[12, 0] == pytest.approx(1.0) and values[24, 1] == pytest.approx(-1.0)  # 06:00 and 12:00
    _, days = regular_grid(synthetic_series(10, freq="D"), "time", ["y"], "s.csv")
    assert calendar_features("auto", days, days.times(np.arange(3)))[0][0] == "day_of_week_sin"
    _, numbers = regular_grid(synthetic_series(10, start=None), "time", ["y"], "s.csv")
    assert calendar_features("auto", numbers, numbers.times(np.arange(3)))[0] == []
    with pytest.raises(UserError, match="calendar features need timestamps"):
        calendar_features(["month"], numbers, numbers.times(np.arange(3)))


@pytest.mark.parametrize("model", MODELS)
def test_every_forecasting_network_forecasts_each_step_and_follows_the_level(tmp_path, model):
    """Output (batch, horizon, targets); a constant added to the targets' history is added to the forecast (each
    network forecasts the change from the last value), so a level outside the training range stays in range."""
    data = datamodule(tmp_path, synthetic_series(600), f"model={model}")
    module = build(config(tmp_path, f"model={model}").lightning_module, "lightning_module", **data.network_inputs(),
                   _recursive_=False).eval()
    history, future, _ = module.parts(data.splits["test"][0][:5])
    forecast = module(history, future)
    assert forecast.shape == (5, 6, 1)
    shifted = history.clone()
    shifted[..., 0] += 7.0
    assert torch.allclose(module(shifted, future), forecast + 7.0, atol=1e-4)


def test_an_lstm_forecaster_reaches_the_noise_level_of_a_series_of_known_form(tmp_path):
    """sine (period 24) + trend + a known covariate + noise (sd 0.1): the test MAE is within 1.5x the noise's
    standard deviation (a perfect forecast's MAE: 0.08) and far below the last-value forecast's."""
    series = synthetic_series(3000, noise=0.1)
    overrides = ["model=forecast_lstm", "model.hidden_size=32", "data.covariates=[x]", "data.calendar=[]",
                 "data.lookback=48", "data.test_size=300", "data.val_size=300", "data.batch_size=32",
                 "optimizer.lr=3e-3", "logger=none", "callbacks=none", "trainer.enable_progress_bar=false",
                 "trainer.enable_model_summary=false"]
    series.to_csv(tmp_path / "series.csv", index=False)
    cfg = config(tmp_path, *overrides)
    pl.seed_everything(0)
    data = build(cfg.data, "data")
    module = build(cfg.lightning_module, "lightning_module", **data.network_inputs(), _recursive_=False)
    trainer = pl.Trainer(max_epochs=20, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.fit(module, datamodule=data)
    scores = trainer.test(module, datamodule=data, verbose=False)[0]
    assert scores["test/mae"] <= 1.5 * 0.1
    assert scores["test/mae"] < 0.3 * scores["test/naive_mae"]


def test_several_targets_are_forecast_together_and_written_side_by_side(tmp_path):
    data = datamodule(tmp_path, synthetic_series(600).assign(z=lambda f: 2 * f.y), "data.target=[y,z]",
                      "data.covariates=[]")
    inputs = data.network_inputs()
    assert inputs["window"] == {"lookback": 24, "horizon": 6, "targets": 2, "covariates": 6}  # + the calendar
    assert inputs["target_scaling"]["std"][1] == pytest.approx(2 * inputs["target_scaling"]["std"][0])
    module = build(config(tmp_path, "data.target=[y,z]").lightning_module, "lightning_module", **inputs,
                   _recursive_=False)
    with torch.no_grad():
        forecast, actual, mask = module.predict_step(tuple(t[:3] for t in data.splits["test"]), 0)
    assert forecast.shape == (3, 6, 2) and torch.allclose(actual[..., 1], 2 * actual[..., 0], atol=1e-4)
    data.prediction_origins, data.prediction_grid = data.origins["test"][:3], data.grid
    header, rows = data.forecast_rows(forecast, actual, mask)
    assert header == ["origin", "timestamp", "step", "forecast_y", "actual_y", "forecast_z", "actual_z"]
    assert len(rows) == int(mask.sum()) and rows[0][:3] == ["2020-01-11 07:00:00", "2020-01-11 10:00:00", 6]


@pytest.mark.parametrize("model", MODELS)
def test_every_forecasting_network_exports_and_each_file_reproduces_it(tmp_path, model):
    data = datamodule(tmp_path, synthetic_series(600), f"model={model}")
    module = build(config(tmp_path, f"model={model}").lightning_module, "lightning_module", **data.network_inputs(),
                   _recursive_=False).eval()
    history, future = data.example_inputs(8)
    lines = export_network(module, (history, future), tmp_path / "export")
    assert [line.split(":")[0] for line in lines] == ["network", "state_dict", "TorchScript", "ONNX"]
    with torch.no_grad():
        expected = module(history[:3], future[:3])  # (another batch size than the export's)
        scripted = torch.jit.load(tmp_path / "export" / "network.torchscript.pt")
        torch.testing.assert_close(scripted(history[:3], future[:3]), expected, rtol=0, atol=1e-5)
    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "network.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert [x.name for x in session.get_inputs()] == ["history", "future"]
    outputs = session.run(None, {"history": history[:3].numpy(), "future": future[:3].numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(outputs), expected, rtol=0, atol=1e-4)
