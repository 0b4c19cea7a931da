"""A series' time column: parsed, its step found, gaps reported (or filled); sizes given in steps, shares or durations;
calendar features of each step.

The time column holds timestamps ("2014-01-01 00:30") or plain numbers (a step index, or a decimal year such as the
sunspots file's 1749.08333). Either way the series must lie on a regular grid: one step between rows. A gap, or a row
whose values are missing, is reported with its count and the first one; `data.fill` fills them instead.
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lightlab.base.errors import UserError

FILLS = ("linear", "previous")
CALENDAR = ("time_of_day", "day_of_week", "month")
DAY, WEEK = pd.Timedelta(days=1), pd.Timedelta(days=7)


@dataclass
class TimeGrid:
    """The regular grid a series lies on: its first time, its step, and whether times are timestamps."""
    start: float | pd.Timestamp
    step: float | pd.Timedelta
    timestamps: bool

    def times(self, positions: np.ndarray) -> pd.DatetimeIndex | np.ndarray:
        """The times of grid positions (0: the first row)."""
        positions = np.asarray(positions)
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
        return str(self.step) if self.timestamps else f"{self.step:.6g}"

    def state(self) -> dict:
        start, step = (str(self.start), self.step.isoformat()) if self.timestamps else (self.start, self.step)
        return {"start": start, "step": step, "timestamps": self.timestamps}

    @classmethod
    def from_state(cls, state: dict) -> "TimeGrid":
        if state["timestamps"]:
            return cls(pd.Timestamp(state["start"]), pd.Timedelta(state["step"]), True)
        return cls(float(state["start"]), float(state["step"]), False)


def parse_times(column: pd.Series, file: str) -> tuple[np.ndarray | pd.DatetimeIndex, bool]:
    """The column's times (floats, or timestamps) and whether they are timestamps; unparsable or missing ones refused
    with their row."""
    name = f"{file}: time column {column.name!r} (data.time_column)"
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        parsed = None
    else:
        parsed = pd.to_datetime(column, errors="coerce", format="mixed")
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


def regular_grid(frame: pd.DataFrame, time_column: str, columns: list[str], fill: str | None,
                 file: str) -> tuple[pd.DataFrame, TimeGrid]:
    """The frame's `columns` on a regular grid (one row per step, first to last time). Missing steps and missing
    values are refused, naming how many and the first; with fill=linear or previous they are filled instead."""
    if len(frame) < 3:
        raise UserError(f"{file}: {len(frame)} row(s); a series needs many more (at least data.lookback + "
                        f"data.horizon + the validation and test periods).")
    times, timestamps = parse_times(frame[time_column], file)
    raw = np.asarray(times, dtype="datetime64[ns]").astype(np.int64) if timestamps else times
    differences = np.diff(raw)
    step = float(pd.Series(differences).mode().iloc[0]) if timestamps else float(np.median(differences))
    positions = (raw - raw[0]) / step
    rounded = np.round(positions)
    off_grid = np.abs(positions - rounded) > 1e-3
    grid = (TimeGrid(times[0], pd.Timedelta(int(step), unit="ns"), True) if timestamps
            else TimeGrid(float(times[0]), step, False))
    if off_grid.any():
        row = int(np.flatnonzero(off_grid)[0])
        raise UserError(f"{file}: the times are not evenly spaced: the usual step is {grid.step_text}, but row "
                        f"{row + 1} "
                        f"({grid.text(times[row])}) lies between two steps ({int(off_grid.sum())} such row(s)). "
                        f"Resample the series to one step first.")
    full = pd.DataFrame(index=pd.RangeIndex(int(rounded[-1]) + 1), columns=columns, dtype=float)
    full.loc[rounded.astype(np.int64), columns] = frame[columns].to_numpy(dtype=float)
    missing_steps = len(full) - len(frame)
    missing_values = full[columns].isna().any(axis=1)
    if missing_values.any() and fill is None:
        first = int(np.flatnonzero(missing_values.to_numpy())[0])
        gap_steps = np.flatnonzero(differences > 1.5 * step)
        where = (f"the first after {grid.text(times[gap_steps[0]])} (data row {gap_steps[0] + 1})" if len(gap_steps)
                 else f"the first at {grid.text(grid.times(np.array([first]))[0])} (data row {first + 1})")
        raise UserError(f"{file}: the series has gaps: {missing_steps} missing step(s) of {grid.step_text} and "
                        f"{int(missing_values.sum()) - missing_steps} row(s) with a missing value; {where}. Set "
                        f"data.fill=linear (interpolate) or data.fill=previous (carry the last value forward) to fill "
                        f"them, or fix the file.")
    if missing_values.any():
        filled = full.interpolate(method="linear") if fill == "linear" else full.ffill()
        full = filled.bfill()  # (a series starting with a gap: its first value, backwards)
    return full, grid


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
        except ValueError:
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
        step = grid.step
        limits = (DAY, WEEK, pd.Timedelta(days=32))  # each feature's step must be shorter than this
        names = [name for name, limit in zip(CALENDAR, limits) if step < limit] if grid.timestamps else []
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
