"""A user's series (CSV or Parquet) as forecasting windows:

    python run.py data=time_series data.path=load.csv data.target=Demand data.horizon=48

The file is read as a table (datamodules/table_files.py) and put on its regular time grid (datamodules/time_steps.py).
The periods are chronological: training, then validation, then test, at the end of the series. Targets and covariates
are standardised with the training period's mean and standard deviation alone, and calendar features (sine and
cosine of the time of day, week and year) join the covariates, which are known for future steps too.

The whole series is one float tensor of (steps, features). A window is `lookback` steps of history followed by
`horizon` steps to forecast; all windows are one `unfold` view of that tensor, so they cost no memory, and a batch is
a gather of window indices (datamodules/tensor_batches.py). Training windows lie wholly inside the training period.
Validation and test score every target of their period at every horizon step (so each step's score is over the same
targets as the seasonal-naive forecast the task module compares it with): their windows start up to `horizon` steps
before the period, inputs may reach back across its start, and a mask leaves out targets outside it. (The last
horizon - 1 test windows reach past the series' end, where the covariates are unknown: they read the training mean.)
"""
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from datamodules.table_columns import first_non_number
from datamodules.table_files import find_file, read_table
from datamodules.tensor_batches import SplitTensors, TensorBatches, check_batch_sizes
from datamodules.time_steps import (
    FILLS,
    TimeGrid,
    calendar_features,
    fill_missing,
    parse_times,
    regular_grid,
    size_in_steps,
)
from lightlab.base.errors import UserError


class TimeSeriesDataModule(SplitTensors):
    # No defaults where conf/data/time_series.yaml sets them: conf/ is their one source.
    def __init__(self, data_dir: str, path: str, target: str | list[str], horizon: int, *, batch_size: int,
                 eval_batch_size: int, test_size: int | float | str, val_size: int | float | str,
                 covariates: list[str], time_column: str | None = None,
                 calendar: str | list[str] = "auto", lookback: int | None = None, season: int | None = None,
                 fill: str | None = None, predict_path: str | None = None, separator: str = ",",
                 shuffle_seed: int = 0, drop_last: bool = False):
        super().__init__()
        check_batch_sizes(batch_size, eval_batch_size)
        self.save_hyperparameters()
        for key, value in (("horizon", horizon), ("lookback", lookback), ("season", season)):
            if value is not None and value < 1:
                raise UserError(f"data.{key}={value}: a number of steps, at least 1.")
        if fill not in (None, *FILLS):
            raise UserError(f"data.fill={fill}: null (gaps are refused), or one of {', '.join(FILLS)}.")
        # lookback null: a week of a daily season (7 x season), else ten horizons
        self.lookback = lookback or (7 * season if season else 10 * horizon)
        self.targets = [target] if isinstance(target, str) else list(target)
        self.fitted: dict | None = None  # names, scaling and grid: plain data, the DataModule's state_dict
        self.splits: dict[str, tuple[torch.Tensor, ...]] = {}
        self.origins: dict[str, np.ndarray] = {}  # each split's window origins (the last input step), as positions
        self.grid: TimeGrid | None = None
        self.predict_input: str | None = None  # mode=predict's predict_input, else data.predict_path
        self.prediction_origins, self.prediction_grid = np.zeros(0), None

    # --- reading ---------------------------------------------------------------------------------------------
    def read(self, name: str, key: str) -> tuple[pd.DataFrame, str, str]:
        """The file's rows, its name, and its time column (data.time_column, else the first column)."""
        file = find_file(name, self.hparams.data_dir, key)
        frame = read_table(file, key, self.hparams.separator)
        time_column = self.hparams.time_column or frame.columns[0]
        wanted = {"time_column": [time_column], "target": self.targets, "covariates": self.hparams.covariates}
        for setting, names in wanted.items():
            missing = [name for name in names if name not in frame.columns]
            if missing:
                raise UserError(f"{file}: no column {', '.join(map(repr, missing))} (data.{setting}). Its columns: "
                                f"{', '.join(frame.columns)}.")
        for name in [*self.targets, *self.hparams.covariates]:
            if (error := first_non_number(frame[name], name, str(file), advice="leave it out of data.target and "
                                          "data.covariates (a series' columns are numbers).")) is not None:
                raise error
            frame[name] = pd.to_numeric(frame[name])
        return frame, str(file), time_column

    def series_columns(self) -> list[str]:
        return [*self.targets, *self.hparams.covariates]

    # --- the series as one tensor, and its windows -----------------------------------------------------------------
    def scaled_series(self, values: np.ndarray, times) -> torch.Tensor:
        """(steps, features): standardised targets and covariates, then calendar features of `times`."""
        fitted = self.fitted
        scaled = (values - np.array(fitted["mean"])) / np.array(fitted["std"])
        _, calendar = calendar_features(fitted["calendar"], self.grid_of(fitted), times)
        return torch.tensor(np.concatenate([scaled, calendar], axis=1), dtype=torch.float32)

    @staticmethod
    def grid_of(fitted: dict) -> TimeGrid:
        return TimeGrid.from_state(fitted["grid"])

    def fit(self, values: np.ndarray, grid: TimeGrid, train_steps: int, file: str) -> dict:
        """What is fitted on the training period alone: its mean and standard deviation, per column."""
        training = values[:train_steps]
        std = training.std(axis=0)
        calendar_names, _ = calendar_features(self.hparams.calendar, grid, grid.times(np.arange(1)))
        return {"targets": self.targets, "covariates": list(self.hparams.covariates),
                "calendar": [name[:-4] for name in calendar_names[::2]], "mean": training.mean(axis=0).tolist(),
                "std": np.where(std > 1e-12, std, 1.0).tolist(), "grid": grid.state(), "lookback": self.lookback,
                "horizon": self.hparams.horizon, "season": self.hparams.season, "file_sha1": file_digest(file)}

    def setup(self, stage: str) -> None:
        if stage == "predict" or self.splits:
            return
        settings, lookback, horizon = self.hparams, self.lookback, self.hparams.horizon
        frame, file, time_column = self.read(settings.path, "path")
        full, grid = regular_grid(frame, time_column, self.series_columns(), file)
        steps = len(full)
        test = size_in_steps(settings.test_size, "test_size", grid, steps)
        val = size_in_steps(settings.val_size, "val_size", grid, steps)
        train = steps - test - val
        # One training window, and the seasonal-naive forecast of the first validation target, need this much.
        history, key = max((lookback, "lookback"), (settings.season or 1, "season"))
        need = history + horizon
        if train < need:
            raise UserError(f"{file}: the series has {steps} steps; the test ({test}) and validation ({val}) periods "
                            f"leave {train} for training, and one training window needs data.{key} ({history}) "
                            f"+ data.horizon ({horizon}) = {need}. Use a longer series, or make data.{key}, "
                            f"data.test_size or data.val_size smaller.")
        full, missing = fill_missing(full, grid, settings.fill, file, causal_from=train)
        values = full.to_numpy(dtype=np.float64)
        fitted = self.fit(values, grid, train, file)
        if self.fitted is not None and not same_fit(self.fitted, fitted):  # a resumed run, or mode=test
            raise UserError("the checkpoint's fitted scaling and columns differ from the series now (the file or the "
                            "data settings changed since it was saved). Use the same data.")
        self.fitted = self.fitted or fitted
        self.grid = grid
        # Padding: the last validation and test windows forecast up to horizon - 1 steps past the series' end
        # (masked out), and their future calendar features are known.
        padded = np.concatenate([values, np.tile(np.array(self.fitted["mean"]), (horizon, 1))])
        series = self.scaled_series(padded, grid.times(np.arange(steps + horizon)))
        self.splits, self.origins = windows_of(series, len(self.targets), lookback, horizon, settings.season,
                                               {"fit": (0, train), "validate": (train, train + val),
                                                "test": (train + val, steps)},
                                               unscored=missing[:, :len(self.targets)].any(axis=1))
        self.series = series

    # --- what the rest of the framework asks of a DataModule -------------------------------------------------
    def network_inputs(self) -> dict:
        """The window's shape and the target's scaling (restored from a checkpoint in mode=test/predict/export,
        else fitted now)."""
        if self.fitted is None:
            self.setup("fit")
        fitted = self.fitted
        count = len(fitted["targets"])
        return {"window": {"lookback": fitted["lookback"], "horizon": fitted["horizon"], "targets": count,
                           "covariates": len(fitted["covariates"]) + 2 * len(fitted["calendar"])},
                "season": fitted["season"],
                "target_scaling": {"mean": fitted["mean"][:count], "std": fitted["std"][:count]}}

    def predict_dataloader(self) -> TensorBatches:
        """mode=predict: the horizon after a file's history (predict_input, data.predict_path, or a data.path other
        than the training file), else the training file's test period."""
        name = self.predict_input or self.hparams.predict_path
        trained_on = self.fitted.get("file_sha1")  # (by content: the training file may have moved since)
        if name is None and trained_on and file_digest(find_file(self.hparams.path, self.hparams.data_dir,
                                                                 "path")) != trained_on:
            name = self.hparams.path
        if name is None:
            self.setup("test")
            tensors, self.prediction_origins, self.prediction_grid = self.splits["test"], self.origins["test"], \
                self.grid
        else:
            tensors, self.prediction_origins, self.prediction_grid = self.future_window(name)
        return TensorBatches(tensors, self.hparams.eval_batch_size, shuffle=False)

    def future_window(self, name: str) -> tuple[tuple[torch.Tensor], np.ndarray, TimeGrid]:
        """The one window that forecasts the `horizon` steps after a file's last target: its history, and the known
        covariates of those steps (rows after the last target, with the target left empty). No dummy target."""
        fitted, lookback, horizon = self.fitted, self.fitted["lookback"], self.fitted["horizon"]
        frame, file, time_column = self.read(name, "predict_path")
        known = frame[self.targets].notna().all(axis=1).to_numpy()
        history_rows = int(np.flatnonzero(known)[-1]) + 1 if known.any() else 0
        if history_rows < max(lookback, 3):
            raise UserError(f"{file}: {history_rows} row(s) up to the last one with {', '.join(self.targets)} known, "
                            f"and the model reads data.lookback={lookback} steps of history. Give at least "
                            f"{lookback}.")
        times, _ = parse_times(frame[time_column], file)  # (every row's: the future rows' times are checked below)
        history, future = frame.iloc[:history_rows], frame.iloc[history_rows:]
        full, grid = regular_grid(history, time_column, self.series_columns(), file)
        full, _ = fill_missing(full, grid, self.hparams.fill, file)  # (all of it is the forecast's past)
        trained = self.grid_of(fitted)
        if grid.step != trained.step:
            raise UserError(f"{file}: its step is {grid.step_text}, but the model was trained on steps of "
                            f"{trained.step_text}. Resample the file to {trained.step_text}.")
        coming_times = grid.times(np.arange(len(full), len(full) + len(future)))
        mismatched = (np.asarray(times[history_rows:]) != np.asarray(coming_times) if grid.timestamps else
                      ~np.isclose(times[history_rows:], coming_times, rtol=0, atol=1e-3 * grid.step))
        if mismatched.any():
            row = history_rows + int(np.flatnonzero(mismatched)[0])
            raise UserError(f"{file}: row {row + 1} (counting data rows from 1), after the last known "
                            f"{', '.join(self.targets)}, is at {grid.text(times[row])}, not at "
                            f"{grid.text(coming_times[row - history_rows])}: the rows to forecast must continue the "
                            f"series step by step ({grid.step_text}).")
        covariates = fitted["covariates"]
        if covariates and (len(future) < horizon or future[covariates].iloc[:horizon].isna().any().any()):
            raise UserError(f"{file}: forecasting the {horizon} steps after its last {', '.join(self.targets)} needs "
                            f"the known covariates ({', '.join(covariates)}) of those steps: add {horizon} rows after "
                            f"the last target, with the time and covariates filled in and the target left empty "
                            f"({min(len(future), horizon)} such complete row(s) now).")
        coming = (future[covariates].iloc[:horizon].to_numpy(dtype=np.float64) if covariates
                  else np.zeros((horizon, 0)))
        padded = np.concatenate([np.tile(np.array(fitted["mean"][:len(self.targets)]), (horizon, 1)), coming], 1)
        values = np.concatenate([full.to_numpy(dtype=np.float64)[-lookback:], padded])
        positions = np.arange(len(full) - lookback, len(full) + horizon)
        series = self.scaled_series(values, grid.times(positions))
        return (series.unfold(0, lookback + horizon, 1),), np.array([len(full) - 1]), grid

    def forecast_rows(self, forecast: torch.Tensor, actual: torch.Tensor, mask: torch.Tensor) -> tuple[list, list]:
        """forecast.csv's header and rows: one per (window, step) scored: the window's origin (its last known time),
        the forecast step's time, the step (1 = next), then the forecast and the actual (empty where unknown) per
        target."""
        grid, count = self.prediction_grid, len(self.targets)
        names = ["forecast", "actual"] if count == 1 else [f"{kind}_{t}" for t in self.targets
                                                            for kind in ("forecast", "actual")]
        window, step = mask.nonzero().T.numpy()
        origins = self.prediction_origins[window]
        forecasts, actuals = forecast[window, step].double().numpy(), actual[window, step].double().numpy()
        values = [[f"{f:.8g}", "" if a != a else f"{a:.8g}"] for f, a in zip(forecasts.ravel(), actuals.ravel())]
        rows = [[origin, time, int(s) + 1, *(v for pair in values[i * count:(i + 1) * count] for v in pair)]
                for i, (origin, time, s) in enumerate(zip(grid.texts(origins), grid.texts(origins + step + 1), step))]
        return ["origin", "timestamp", "step", *names], rows

    def example_inputs(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(history, future covariates) of the network's shape from the fitted state alone (mode=export reads no
        file)."""
        shape = self.network_inputs()["window"]
        covariates = shape["covariates"]
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(count, shape["lookback"], shape["targets"] + covariates, generator=generator),
                torch.randn(count, shape["horizon"], covariates, generator=generator))

    def training_sample(self, count: int) -> tuple[torch.Tensor, ...]:
        return (self.splits["fit"][0][:count],)

    # In every checkpoint: the columns, the training period's scaling and the time grid, as plain data.
    def state_dict(self) -> dict:
        return dict(self.fitted) if self.fitted else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.fitted is not None and self.splits and not same_fit(self.fitted, state_dict):
            raise UserError("the checkpoint's fitted scaling and columns differ from the series now (the file or the "
                            "data settings changed since it was saved). Use the same data.")
        self.fitted = dict(state_dict)
        self.lookback = state_dict["lookback"]


def file_digest(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def same_fit(now: dict, saved: dict) -> bool:
    """The same columns, settings and grid, and the same scaling up to float rounding (wherever the file is now)."""
    def exact(fitted: dict) -> dict:
        return {k: v for k, v in fitted.items() if k not in ("mean", "std", "file_sha1")}
    return exact(now) == exact(saved) and all(np.allclose(now[k], saved[k], rtol=1e-9, atol=0) for k in ("mean", "std"))


def windows_of(series: torch.Tensor, targets: int, lookback: int, horizon: int, season: int | None,
               periods: dict[str, tuple[int, int]], unscored: np.ndarray | None = None) -> tuple[dict, dict]:
    """Each split's tensors and window origins. Window i of `series.unfold` starts at step i, so its origin (last
    input step) is i + lookback - 1. Training: (windows,), targets inside the period. Validation and test: (windows,
    the seasonal-naive source, mask): every window with a target in the period, and which of its targets are.
    The naive source is the `season` steps up to the origin (one step, the last value, for season null), a view too,
    and so is the mask (of one flag per step). `unscored` steps (targets data.fill made up) are never scored."""
    windows = series.unfold(0, lookback + horizon, 1)
    period = season or 1
    seasons = series[:, :targets].unfold(0, period, 1)  # origin o -> index o + 1 - period
    splits, origins = {}, {}
    for split, (start, end) in periods.items():
        if split == "fit":
            first, last = lookback - 1, end - horizon - 1
            splits[split] = (windows[first - lookback + 1:last - lookback + 2],)
        else:
            first, last = start - horizon, end - 2
            inside = torch.zeros(len(series), dtype=torch.bool)
            inside[start:end] = True
            if unscored is not None:
                inside[:len(unscored)] &= ~torch.from_numpy(unscored)
            # Row i: whether each of window i's targets (steps first + i + 1 ...) lies in the period; a view too.
            mask = inside.unfold(0, horizon, 1)[first + 1:last + 2]
            splits[split] = (windows[first - lookback + 1:last - lookback + 2],
                             seasons[first + 1 - period:last + 2 - period], mask)
        origins[split] = np.arange(first, last + 1)
    return splits, origins
