"""What a table's columns are, and the preprocessing fitted on its training split.

Rules (README, "Tables"), applied to the training split only, so no other split leaks into them:
- the task: a text or boolean target, or one of integers with at most `max_integer_classes` distinct values, is
  classification; any other numeric target is regression;
- a column is categorical when it holds text or booleans, or integers with at most `max_integer_categories` distinct
  values (fastai's rule: such codes and small counts learn more as embeddings than as one slope); every other
  column is numeric. `categorical` / `numeric` lists name columns whose kind is not to be inferred;
- with `skewed_log1p`, a numeric column that is never negative and has a training skewness above 1 (areas, counts,
  money) is read as log(1 + x) first: its long tail no longer dominates the standardised scale;
- numeric columns are standardised with the training mean and standard deviation; a missing number becomes the
  training mean (0 after scaling), and a column with missing numbers in the training split gets a 0/1 indicator
  column beside it, so the network can tell an imputed value from a real one;
- categories seen at least `min_category_count` times in the training split get indices 1, 2, ...; index 0 is
  "unknown": missing values, rarer categories and categories never seen in training. Because rare training
  categories map to it, its embedding is trained, and a new category at predict time meets a learned vector;
- with `target_transform: log`, a regression target is modelled as log(y), and either way it is standardised.

Everything fitted is plain data (`Preprocessing.state()`: JSON-able dicts, lists and numbers): it travels in the
checkpoint and in mode=export's preprocessing.json, and `Preprocessing.from_state` rebuilds it exactly.
"""
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from lightlab.base.errors import UserError

NUMBER_SHARE = 0.9  # a text column whose values are at least this share numbers is a numeric column with typos


def is_text(column: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column))


def integer_valued(column: pd.Series) -> bool:
    values = column.dropna()
    if pd.api.types.is_bool_dtype(column) or is_text(column) or values.empty:
        return False
    return pd.api.types.is_integer_dtype(column) or bool((values == np.floor(values)).all())


def infer_task(target: pd.Series, max_integer_classes: int) -> str:
    """classification or regression, from the target column (the rule in this module's docstring)."""
    values = target.dropna()
    if pd.api.types.is_bool_dtype(values) or is_text(values):
        return "classification"
    if integer_valued(values) and values.nunique() <= max_integer_classes:
        return "classification"
    return "regression"


def category_name(value) -> str | None:
    """The string a category is stored under, value by value: 3 and 3.0 (an integer column read with gaps) are "3",
    whatever else the column holds in this file."""
    if pd.isna(value):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def category_names(column: pd.Series) -> pd.Series:
    return column.map(category_name)


def numbers_with_typos(column: pd.Series, name: str, file: str, target: bool = False) -> UserError | None:
    """The error for a text column that holds numbers but a few values that are not (a typo), else None."""
    values = column.dropna()
    share = pd.to_numeric(values, errors="coerce").notna().mean() if len(values) else 0.0
    return first_non_number(column, name, file, target) if NUMBER_SHARE <= share < 1 else None


def first_non_number(column: pd.Series, name: str, file: str, target: bool = False,
                     advice: str | None = None) -> UserError | None:
    """The error for the first value of a numeric column that is not a number, or None. advice: the message's last
    option (a table's: read the column as classes or categories)."""
    numbers = pd.to_numeric(column, errors="coerce")
    bad = column.notna() & numbers.isna()
    if not bad.any():
        return None
    row = bad.idxmax()
    return UserError(f"{file}: column {name!r} holds numbers, but row {row + 1} (counting data rows from 1) has "
                     f"{column[row]!r} ({int(bad.sum())} such value(s)). Correct the value, or leave it empty (a "
                     f"missing number), or "
                     + (advice or "set data.task=classification to read its values as classes." if target else
                        advice or "list the column in data.categorical to read it as categories."))


def column_kinds(train: pd.DataFrame, file: str, categorical: list[str] | None, numeric: list[str] | None,
                 max_integer_categories: int) -> tuple[list[str], list[str]]:
    """(numeric columns, categorical columns) of the feature columns, in the file's order."""
    numeric_columns, categorical_columns = [], []
    for name in train.columns:
        column = train[name]
        if name in (categorical or []):
            categorical_columns.append(name)
        elif name in (numeric or []):
            if is_text(column) and (error := first_non_number(column, name, file)):
                raise error
            numeric_columns.append(name)
        elif pd.api.types.is_bool_dtype(column) or column.dropna().map(type).eq(bool).all() and column.notna().any():
            categorical_columns.append(name)  # booleans (with blanks, pandas reads them as objects)
        elif is_text(column):
            if error := numbers_with_typos(column, name, file):  # "12.5", "13", "1O": a typo, not 3 categories
                raise error
            if pd.to_numeric(column.dropna(), errors="coerce").notna().all() and column.notna().any():
                numeric_columns.append(name)  # numbers stored as text (e.g. a Parquet string column)
            else:
                categorical_columns.append(name)
        elif integer_valued(column) and column.nunique() <= max_integer_categories:
            categorical_columns.append(name)
        else:
            numeric_columns.append(name)
    return numeric_columns, categorical_columns


@dataclass
class Preprocessing:
    task: str                                      # classification or regression
    target: str
    numeric: dict[str, dict] = field(default_factory=dict)      # column -> {log1p, mean, std, indicator}
    categorical: dict[str, list[str]] = field(default_factory=dict)  # column -> categories 1, 2, ... (0: unknown)
    classes: list[str] = field(default_factory=list)            # classification: class index -> name
    class_counts: list[int] = field(default_factory=list)       # classification: training rows per class
    target_scaling: dict = field(default_factory=dict)          # regression: {transform, mean, std}

    @classmethod
    def fit(cls, train: pd.DataFrame, task: str, target: str, numeric: list[str], categorical: list[str],
            min_category_count: int, target_transform: str | None, skewed_log1p: bool) -> "Preprocessing":
        fitted = cls(task, target)
        for name in numeric:
            values = pd.to_numeric(train[name], errors="coerce").astype("float64")
            log1p = bool(skewed_log1p and values.min() >= 0 and values.skew() > 1)
            values = np.log1p(values) if log1p else values
            mean, std = values.mean(), values.std(ddof=0)
            fitted.numeric[name] = {"log1p": log1p, "mean": 0.0 if math.isnan(mean) else float(mean),
                                    "std": float(std) if std > 0 else 1.0, "indicator": bool(values.isna().any())}
        for name in categorical:
            counts = category_names(train[name]).value_counts()
            fitted.categorical[name] = sorted(str(v) for v, count in counts.items() if count >= min_category_count)
        labels = train[target]
        if task == "classification":
            names = category_names(labels.sort_values())
            fitted.classes = list(names.drop_duplicates())
            fitted.class_counts = [int(count) for count in names.value_counts()[fitted.classes]]
        else:
            values = transform_target(labels.astype("float64"), target_transform)
            fitted.target_scaling = {"transform": target_transform, "mean": float(values.mean()),
                                     "std": float(values.std(ddof=0)) or 1.0}
        return fitted

    def state(self) -> dict:
        return asdict(self)

    def matches(self, other: "Preprocessing") -> bool:
        """The same fit, up to float rounding (another machine's pandas may sum in another order)."""
        def close(a, b) -> bool:
            if isinstance(a, float) and isinstance(b, float):
                return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
            if isinstance(a, dict) and isinstance(b, dict):
                return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
            if isinstance(a, list) and isinstance(b, list):
                return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
            return a == b
        return close(self.state(), other.state())

    @classmethod
    def from_state(cls, state: dict) -> "Preprocessing":
        return cls(**state)

    @property
    def input_width(self) -> int:
        """Columns of the numeric block: one per numeric column, plus one per missing-value indicator."""
        return len(self.numeric) + sum(spec["indicator"] for spec in self.numeric.values())

    @property
    def cardinalities(self) -> list[int]:
        """Embedding rows per categorical column: its categories plus the unknown one (index 0)."""
        return [len(categories) + 1 for categories in self.categorical.values()]

    def encode(self, frame: pd.DataFrame, file: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
        """(numeric float32 block (rows, input_width), categorical int64 block (rows, columns), the count of
        unknown categories per column): the network's inputs for these rows."""
        blocks, indicators = [], []
        for name, spec in self.numeric.items():
            column = frame[name]
            if is_text(column) and (error := first_non_number(column, name, file)):
                raise error
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64")
            if spec["log1p"]:  # (a negative value, unseen in training, stays finite: clipped to 0 first)
                values = np.log1p(np.maximum(values, 0))
            missing = np.isnan(values)
            blocks.append(np.where(missing, 0.0, (values - spec["mean"]) / spec["std"]))
            if spec["indicator"]:
                indicators.append(missing.astype("float64"))
        numeric = np.stack(blocks + indicators, axis=1) if blocks else np.zeros((len(frame), 0))
        codes, unseen = [], {}
        for name, categories in self.categorical.items():
            index = {category: i + 1 for i, category in enumerate(categories)}
            names = category_names(frame[name])
            column = names.map(index).fillna(0).to_numpy(dtype="int64")
            new = int((names.notna() & (column == 0)).sum())  # new, or too rare in training to be learned
            if new:
                unseen[name] = new
            codes.append(column)
        categorical = np.stack(codes, axis=1) if codes else np.zeros((len(frame), 0), dtype="int64")
        return (torch.tensor(numeric, dtype=torch.float32), torch.tensor(categorical, dtype=torch.int64), unseen)

    def encode_target(self, labels: pd.Series) -> torch.Tensor:
        """Class indices (int64), or the standardised (transformed) target (float32)."""
        if self.task == "classification":
            index = {name: i for i, name in enumerate(self.classes)}
            return torch.tensor(category_names(labels).map(lambda v: index.get(v, -1)).to_numpy(dtype="int64"))
        scaling = self.target_scaling
        values = transform_target(labels.astype("float64"), scaling["transform"])
        return torch.tensor(((values - scaling["mean"]) / scaling["std"]).to_numpy(), dtype=torch.float32)


def transform_target(values: pd.Series, transform: str | None) -> pd.Series:
    return np.log(values) if transform == "log" else values
