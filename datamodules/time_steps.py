"""A series' time column: parsed, its step found, gaps reported (or filled); sizes given in steps, shares or durations;
calendar features of each step.

The time column holds timestamps ("2014-01-01 00:30"; monthly ones too, a calendar month apart) or plain numbers (a
step index, or a decimal year such as the sunspots file's 1749.08333). Either way the series must lie on a regular
grid: one step between rows. Steps or values that are missing are reported with their count and the first one;
`data.fill` fills them instead, never from the future of a forecast (see fill_missing).
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lightlab.base.errors import UserError

FILLS = ("linear", "previous")
CALENDAR = ("time_of_day", "day_of_week", "month")
DAY, WEEK, MONTH = pd.Timedelta(days=1), pd.Timedelta(days=7), pd.DateOffset(months=1)


@dataclass
class TimeGrid:
    """The regular grid a series lies on: its first time, its step (a number, a duration, or a calendar month), and
    whether times are timestamps."""
    start: float | pd.Timestamp
    step: float | pd.Timedelta | pd.DateOffset
    timestamps: bool

    def times(self, positions: np.ndarray) -> pd.DatetimeIndex | np.ndarray:
        """The times of grid positions (0: the first row)."""
        positions = np.asarray(positions)
        if self.step == MONTH:
            return pd.DatetimeIndex([self.start + pd.DateOffset(months=int(p)) for p in positions])
        if self.timestamps:
            return self.start + pd.to_timedelta(positions.astype(np.int64) * self.step.value, unit="ns")
        return self.start + self.step * positions.astype(float)

    def text(self, time) -> str:
        return str(pd.Timestamp(time)) if self.timestamps else f"{time:.10g}"

    def texts(self, positions: np.ndarray) -> list[str]:
        """The times of grid positions as text (2014-12-04 00:30:00, or 2013.666667)."""
        times = self.times(positions)
        return list(times.strftime("%Y-%m-%d %H:%M:%S")) if self.timestamps else [f"{t:.10g}" for t in times]

    @property
    def step_text(self) -> str:
        return "1 month" if self.step == MONTH else str(self.step) if self.timestamps else f"{self.step:.6g}"

    @property
    def span(self) -> pd.Timedelta:
        """A timestamped step's length (a month: its longest)."""
        return pd.Timedelta(days=31) if self.step == MONTH else self.step

    def state(self) -> dict:
        if not self.timestamps:
            return {"start": self.start, "step": self.step, "timestamps": False}
        return {"start": str(self.start), "step": "month" if self.step == MONTH else self.step.isoformat(),
                "timestamps": True}

    @classmethod
    def from_state(cls, state: dict) -> "TimeGrid":
        if state["timestamps"]:
            step = MONTH if state["step"] == "month" else pd.Timedelta(state["step"])
            return cls(pd.Timestamp(state["start"]), step, True)
        return cls(float(state["start"]), float(state["step"]), False)


def parse_times(column: pd.Series, file: str) -> tuple[np.ndarray | pd.DatetimeIndex, bool]:
    """The column's times (floats, or timestamps) and whether they are timestamps; unparsable or missing ones refused
    with their row. Timestamps with different UTC offsets (summer time) are read in UTC."""
    name = f"{file}: time column {column.name!r} (data.time_column)"
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        parsed = None
    else:
        try:
            parsed = pd.to_datetime(column, errors="coerce", format="mixed")
        except ValueError:  # mixed UTC offsets: one time line in UTC, where summer time leaves no gap or repeat
            parsed = pd.to_datetime(column, errors="coerce", format="mixed", utc=True)
        bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(f"{name}: row {row + 1} (counting data rows from 1) holds {column.iloc[row]!r}, which is not a "
                        f"{'number' if parsed is None else 'timestamp'} ({int(bad.sum())} such row(s)). Times are "
                        f"timestamps (2014-01-01 00:30) or numbers (a step index, a decimal year); fix the row.")
    times = values if parsed is None else pd.DatetimeIndex(parsed)
    order = np.diff(np.asarray(times, dtype="datetime64[ns]" if parsed is not None else float))
    if (order <= order.dtype.type(0)).any():
        row = int(np.flatnonzero(order <= order.dtype.type(0))[0]) + 1
        raise UserError(f"{name}: row {row + 1} ({column.iloc[row]}) does not come after row {row} "
                        f"({column.iloc[row - 1]}). Sort the file by time and remove repeated times.")
    return times, parsed is not None


def grid_positions(times, timestamps: bool) -> tuple[TimeGrid, np.ndarray]:
    """The grid the times lie on and each time's position on it (a float; off the grid when not whole)."""
    if timestamps and len(times) > 1:
        months = np.asarray(times.year * 12 + times.month - 1)
        steps = np.diff(months)
        expected = pd.DatetimeIndex([times[0] + pd.DateOffset(months=int(m - months[0])) for m in months[:50]])
        if np.median(steps) == 1 and (expected == times[:50]).all():  # a calendar month apart (30 and 31 days)
            grid = TimeGrid(times[0], MONTH, True)
            exact = np.asarray(grid.times(months - months[0]) == times)
            return grid, np.where(exact, months - months[0], months - months[0] + 0.5)
    raw = np.asarray(times, dtype="datetime64[ns]").astype(np.int64) if timestamps else np.asarray(times)
    differences = np.diff(raw)
    step = float(pd.Series(differences).mode().iloc[0]) if timestamps else float(np.median(differences))
    grid = (TimeGrid(times[0], pd.Timedelta(int(step), unit="ns"), True) if timestamps
            else TimeGrid(float(times[0]), step, False))
    return grid, (raw - raw[0]) / step


def regular_grid(frame: pd.DataFrame, time_column: str, columns: list[str],
                 file: str) -> tuple[pd.DataFrame, TimeGrid]:
    """The frame's `columns` on a regular grid, one row per step from the first time to the last; steps the file
    lacks are rows of NaN (fill_missing refuses or fills them)."""
    if len(frame) < 3:
        raise UserError(f"{file}: {len(frame)} row(s); a series needs many more (at least data.lookback + "
                        f"data.horizon + the validation and test periods).")
    times, timestamps = parse_times(frame[time_column], file)
    grid, positions = grid_positions(times, timestamps)
    rounded = np.round(positions)
    off_grid = np.abs(positions - rounded) > 1e-3
    if off_grid.any():
        row = int(np.flatnonzero(off_grid)[0])
        raise UserError(f"{file}: the times are not evenly spaced: the usual step is {grid.step_text}, but row "
                        f"{row + 1} ({grid.text(times[row])}) lies between two steps ({int(off_grid.sum())} such "
                        f"row(s)). Resample the series to one step first.")
    full = pd.DataFrame(index=pd.RangeIndex(int(rounded[-1]) + 1), columns=columns, dtype=float)
    full.loc[rounded.astype(np.int64), columns] = frame[columns].to_numpy(dtype=float)
    full.attrs["absent_steps"] = len(full) - len(frame)
    return full, grid


def fill_missing(full: pd.DataFrame, grid: TimeGrid, fill: str | None, file: str,
                 causal_from: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The series with its missing steps and values filled, and which (step, column) were missing. fill=None refuses
    them, naming how many and the first. Before `causal_from` (the training period) fill=linear interpolates; from
    there on every fill carries the last value forward, so no forecast's inputs are filled from its own future."""
    missing = full.isna().to_numpy()
    if not missing.any():
        return full, missing
    rows = missing.any(axis=1)
    first = int(np.flatnonzero(rows)[0])
    if fill is None:
        absent = full.attrs.get("absent_steps", 0)
        raise UserError(f"{file}: the series has gaps: {absent} missing step(s) of {grid.step_text} and "
                        f"{int(rows.sum()) - absent} row(s) with a missing value; the first at "
                        f"{grid.texts(np.array([first]))[0]}. Set data.fill=linear (interpolate) or data.fill=previous "
                        f"(carry the last value forward) to fill them, or fix the file.")
    empty = [name for name in full.columns if full[name].isna().all()]
    if empty:
        raise UserError(f"{file}: column {', '.join(map(repr, empty))} has no value at all, so data.fill has nothing "
                        f"to fill from. Give it values, or leave it out of data.target / data.covariates.")
    causal_from = len(full) if causal_from is None else causal_from
    past = full.iloc[:causal_from]
    past = past.interpolate(method="linear") if fill == "linear" else past.ffill()
    filled = pd.concat([past, full.iloc[causal_from:]]).ffill().bfill()  # bfill: a series that starts with a gap
    return filled, missing


def size_in_steps(value, key: str, grid: TimeGrid, total: int) -> int:
    """data.test_size / val_size as steps: a whole number of steps, a share of the series (0 < x < 1), or a
    duration of a timestamped series ("28D", "28 days", "12h")."""
    if isinstance(value, bool):
        value = None  # (refused below)
    elif isinstance(value, int) and value >= 1:
        return value
    elif isinstance(value, float) and 0 < value < 1:
        return max(1, round(value * total))
    elif isinstance(value, str) and grid.timestamps:
        try:
            steps = pd.Timedelta(value) / grid.step
        except (ValueError, TypeError):  # (a monthly grid: in steps)
            steps = None
        if steps is not None and steps >= 1 and abs(steps - round(steps)) < 1e-9:
            return int(round(steps))
    duration = f', or a duration such as "28D" (a whole number of steps of {grid.step_text})' if grid.timestamps else ""
    raise UserError(f"data.{key}={value!r}: the size of that period, as a number of steps (e.g. 300), a share of "
                    f"the series (e.g. 0.1){duration}.")


def calendar_features(names: list[str] | str, grid: TimeGrid, times) -> tuple[list[str], np.ndarray]:
    """Sine and cosine of where each time falls in its day, week and year (features known for any future step).
    names=auto: those that vary at the series' step (time of day below a day's step, and so on); none for numeric
    times, which carry no calendar."""
    if names == "auto":
        limits = (DAY, WEEK, pd.Timedelta(days=32))  # each feature's step must be shorter than this
        names = [name for name, limit in zip(CALENDAR, limits) if grid.span < limit] if grid.timestamps else []
    unknown = [name for name in names if name not in CALENDAR]
    if unknown or (names and not grid.timestamps):
        raise UserError(f"data.calendar={list(names)}: " + (f"unknown feature(s) {unknown}; choose from "
                        f"{', '.join(CALENDAR)}, or auto, or []." if unknown else "calendar features need timestamps "
                        "in the time column, and this series' times are numbers. Set data.calendar=[]."))
    if not names:
        return [], np.zeros((len(times), 0))
    times = pd.DatetimeIndex(times)
    phases = {"time_of_day": (times.hour * 60 + times.minute + times.second / 60) / 1440,
              "day_of_week": times.day_of_week / 7, "month": (times.month - 1) / 12}
    columns, features = [], []
    for name in names:
        angle = 2 * np.pi * np.asarray(phases[name], dtype=float)
        columns += [f"{name}_sin", f"{name}_cos"]
        features += [np.sin(angle), np.cos(angle)]
    return columns, np.stack(features, axis=1)
