"""A user's table (CSV or Parquet) as tensors: `python run.py data=table data.path=houses.csv data.target=price`.

pandas reads the file (with pyarrow for Parquet): its parser handles quoting, encodings, gzip and dtype inference,
and its dtypes carry the text / integer / float distinction the column rules need (datamodules/table_columns.py).
The rows are split (stratified by class for classification), the preprocessing is fitted on the training split alone,
and each split becomes three tensors: a float block of numeric columns, an int block of category indices, and the
target. Batches are slices of them (datamodules/tensor_batches.py), as for images.

The fitted preprocessing is the DataModule's `state_dict`, so it is in every checkpoint as plain data: mode=predict
encodes new rows with it (no training file needed), and a resumed run checks that the data still gives the same.
"""
import logging
from typing import Literal

import numpy as np
import pandas as pd
import torch

from datamodules.table_columns import Preprocessing, column_kinds, infer_task, numbers_with_typos
from datamodules.table_files import find_file, read_table, split_rows
from datamodules.tensor_batches import SplitTensors, TensorBatches, check_batch_sizes
from lightlab.base.errors import UserError

log = logging.getLogger(__name__)


class TableDataModule(SplitTensors):
    # No defaults where conf/data/table.yaml sets them: conf/ is their one source.
    def __init__(self, data_dir: str, target: str, *, batch_size: int, eval_batch_size: int, test_fraction: float,
                 val_fraction: float, min_category_count: int, max_integer_categories: int, max_integer_classes: int,
                 path: str | None = None, train_path: str | None = None, val_path: str | None = None,
                 test_path: str | None = None, predict_path: str | None = None,
                 task: Literal["auto", "classification", "regression"] = "auto", columns: list[str] | None = None,
                 drop: list[str] | None = None, categorical: list[str] | None = None,
                 numeric: list[str] | None = None, id_column: str | None = None,
                 target_transform: Literal["log"] | None = None, drop_missing_target: bool = False,
                 class_weights: Literal["balanced"] | None = None, skewed_log1p: bool = True,
                 separator: str = ",", split_seed: int = 0,
                 shuffle_seed: int = 0, drop_last: bool = False):
        super().__init__()
        check_batch_sizes(batch_size, eval_batch_size)
        self.save_hyperparameters()
        if (path is None) == (train_path is None):
            raise UserError("data=table reads one file, data.path=<file> (split into train, val and test), or "
                            "given splits, data.train_path=<file> (with data.val_path / data.test_path, each "
                            "split off the training rows when not given). Set exactly one of data.path and "
                            "data.train_path.")
        for key, share in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
            if not 0 < share < 1:
                raise UserError(f"data.{key}={share}: the share of the rows held out, between 0 and 1 (e.g. 0.2).")
        if test_fraction + val_fraction >= 1:
            raise UserError(f"data.test_fraction + data.val_fraction = {test_fraction + val_fraction}: no rows are "
                            f"left to train on. Make them smaller (0.2 and 0.1 are usual).")
        self.preprocessing: Preprocessing | None = None
        self.splits: dict[str, tuple[torch.Tensor, ...]] = {}
        self.ids: dict[str, list[str]] = {}  # each split's row ids (data.id_column, else data row numbers)
        self.predict_input: str | None = None  # mode=predict's predict_input, else data.predict_path
        self.prediction_ids: list[str] = []

    # --- reading ---------------------------------------------------------------------------------------------
    def read(self, key: str) -> tuple[pd.DataFrame, str]:
        path = find_file(self.hparams[key], self.hparams.data_dir, key)
        return read_table(path, key, self.hparams.separator), str(path)

    def features(self, frame: pd.DataFrame, file: str, need_target: bool) -> pd.DataFrame:
        """The feature columns this data's settings choose (columns / drop / id_column), checked against the file."""
        settings = self.hparams
        wanted = [settings.target, *(settings.columns or []), *(settings.drop or []), *(settings.categorical or []),
                  *(settings.numeric or []), *([settings.id_column] if settings.id_column else [])]
        missing = [name for name in wanted if name not in frame.columns and (need_target or name != settings.target)]
        if missing:
            raise UserError(f"{file}: no column {', '.join(map(repr, missing))} (data.target / columns / drop / "
                            f"categorical / numeric / id_column). Its columns: {', '.join(frame.columns)}.")
        kept = settings.columns or [c for c in frame.columns if c not in (settings.drop or [])]
        return frame[[c for c in kept if c not in (settings.target, settings.id_column)]]

    def labelled(self, frame: pd.DataFrame, file: str) -> pd.DataFrame:
        """Rows with a target: missing targets are refused (with their rows) or, with drop_missing_target, dropped."""
        missing = frame[self.hparams.target].isna()
        if missing.any() and not self.hparams.drop_missing_target:
            rows = ", ".join(str(i + 1) for i in np.flatnonzero(missing)[:10])
            raise UserError(f"{file}: {int(missing.sum())} row(s) have no {self.hparams.target!r} (data rows "
                            f"{rows}{', ...' if missing.sum() > 10 else ''}). Fill them in, or set "
                            f"data.drop_missing_target=true to train without those rows.")
        return frame[~missing]

    def training_frames(self) -> tuple[dict[str, tuple[pd.DataFrame, str]], str]:
        """{"fit", "validate", "test"} -> (rows, the file they come from), and the task."""
        settings = self.hparams
        frame, file = self.read("path" if settings.path else "train_path")
        self.features(frame, file, need_target=True)
        frame = self.labelled(frame, file)
        if settings.task != "classification" and (error := numbers_with_typos(frame[settings.target],
                                                                              settings.target, file, target=True)):
            raise error  # a price column with one "1O" is not a classification with a class per price
        task = settings.task if settings.task != "auto" else infer_task(frame[settings.target],
                                                                          settings.max_integer_classes)
        given = {split: self.read(key) for split, key in (("validate", "val_path"), ("test", "test_path"))
                 if settings[key]}
        for rows, name in given.values():
            self.features(rows, name, need_target=True)  # their target and id columns too
        given = {split: (self.labelled(rows, name), name) for split, (rows, name) in given.items()}
        carved = [split for split in ("test", "validate") if split not in given]
        shares = [settings.test_fraction if split == "test" else settings.val_fraction for split in carved]
        labels = frame[settings.target].astype(str) if task == "classification" else None
        *held_out, fit = split_rows(labels, len(frame), shares, settings.split_seed)
        frames = {"fit": (frame.iloc[fit], file), **{s: (frame.iloc[rows], file) for s, rows in zip(carved, held_out)},
                  **given}
        for split, (rows, name) in frames.items():
            if len(rows) < 2:  # (R², and a standard deviation, need two)
                raise UserError(f"{name}: {len(rows)} row(s) for the {split} split, and each split needs at least 2. "
                                f"Use a table with more rows, or larger data.test_fraction / data.val_fraction.")
        return frames, task

    # --- fitting (training split only) and encoding -----------------------------------------------------------
    def fit_preprocessing(self) -> dict[str, tuple[pd.DataFrame, str]]:
        settings = self.hparams
        frames, task = self.training_frames()
        train, file = frames["fit"]
        if task == "classification" and train[settings.target].nunique() < 2:
            raise UserError(f"{file}: the target {settings.target!r} has one class in the training rows "
                            f"({train[settings.target].iloc[0]!r}): there is nothing to tell apart. Choose another "
                            f"data.target, or data.task=regression for a numeric one.")
        targets = pd.concat([rows[settings.target] for rows, _ in frames.values()])
        if task == "regression" and settings.target_transform == "log" and (targets <= 0).any():
            bad = targets <= 0
            raise UserError(f"{file}: data.target_transform=log needs positive targets, but {int(bad.sum())} "
                            f"row(s) have {settings.target!r} <= 0 (e.g. data row {bad.idxmax() + 1}). Set "
                            f"data.target_transform=null.")
        numeric, categorical = column_kinds(self.features(train, file, True), file, settings.categorical,
                                            settings.numeric, settings.max_integer_categories)
        self.preprocessing = Preprocessing.fit(train, task, settings.target, numeric, categorical,
                                               settings.min_category_count, settings.target_transform,
                                               settings.skewed_log1p)
        return frames

    def encode(self, frame: pd.DataFrame, file: str, with_target: bool,
               known_classes: bool = False) -> tuple[torch.Tensor, ...]:
        """The network's inputs and the target of these rows. known_classes: a class the training rows lack is an
        error (a validation or test file); in new rows it is only not scored."""
        fitted = self.preprocessing
        missing = [c for c in [*fitted.numeric, *fitted.categorical] if c not in frame.columns]
        if missing:
            raise UserError(f"{file}: no column {', '.join(map(repr, missing))}, which the model was trained on. "
                            f"Its columns: {', '.join(frame.columns)}. Add them (empty values count as missing).")
        numeric, categorical, unseen = fitted.encode(frame, file)
        if unseen:
            log.warning(f"{file}: categories the model did not learn (new, or rarer than data.min_category_count "
                        f"in training) are read as 'unknown': "
                        + ", ".join(f"{name} {count}" for name, count in unseen.items()))
        target = (fitted.encode_target(frame[fitted.target]) if with_target else
                  torch.full((len(frame),), -1 if fitted.task == "classification" else float("nan")))
        if known_classes and fitted.task == "classification" and (target < 0).any():
            row = int((target < 0).nonzero()[0])
            raise UserError(f"{file}: data row {frame.index[row] + 1} has {fitted.target}="
                            f"{frame[fitted.target].iloc[row]!r}, a class the training rows do not have (they have "
                            f"{', '.join(fitted.classes)}). Remove such rows, or give the training rows that class.")
        return numeric, categorical, target

    def row_ids(self, frame: pd.DataFrame) -> list[str]:
        """Each row's id in predictions: data.id_column's value, else its data row number in its file."""
        column = self.hparams.id_column
        return [str(v) for v in frame[column]] if column else [str(i + 1) for i in frame.index]

    def example_inputs(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs of the network's shape from the fitted preprocessing alone (mode=export needs no file)."""
        generator = torch.Generator().manual_seed(0)
        fitted = self.preprocessing
        numeric = torch.randn(count, fitted.input_width, generator=generator)
        categorical = torch.stack([torch.randint(0, rows, (count,), generator=generator)
                                   for rows in fitted.cardinalities], dim=1) if fitted.cardinalities else \
            torch.zeros(count, 0, dtype=torch.int64)
        return numeric, categorical

    # --- what the rest of the framework asks of a DataModule -------------------------------------------------
    def network_inputs(self) -> dict:
        """What the network and task module are built from: the fitted preprocessing (restored from a checkpoint in
        mode=test/predict/export, else fitted now)."""
        if self.preprocessing is None:
            self.setup("fit")
        fitted = self.preprocessing
        shape = {"input_shape": [fitted.input_width], "cardinalities": fitted.cardinalities}
        if fitted.task == "regression":
            return {**shape, "target_scaling": fitted.target_scaling}
        return {**shape, "num_classes": len(fitted.classes), "class_weights": self.class_weights()}

    def class_weights(self) -> list[float] | None:
        """data.class_weights=balanced: count / (classes x count of the class), from the training split."""
        if self.hparams.class_weights is None:
            return None
        counts = torch.tensor(self.preprocessing.class_counts, dtype=torch.float64)
        return (counts.sum() / (len(counts) * counts.clamp(min=1))).tolist()

    @property
    def classes(self) -> list[str]:
        return self.preprocessing.classes if self.preprocessing else []

    def setup(self, stage: str) -> None:
        if stage == "predict" or self.splits:
            return
        restored = self.preprocessing
        frames = self.fit_preprocessing()
        if restored is not None and not restored.matches(self.preprocessing):
            raise_changed(self.preprocessing, restored)
        self.preprocessing = restored or self.preprocessing
        self.splits = {split: self.encode(rows, file, with_target=True, known_classes=True)
                       for split, (rows, file) in frames.items()}
        self.ids = {split: self.row_ids(rows) for split, (rows, _) in frames.items()}

    def predict_dataloader(self) -> TensorBatches:
        """mode=predict: the rows of predict_input (or data.predict_path), in the file's order; the test split
        when neither is set. A new file needs no target column and may order its columns differently."""
        name = self.predict_input or self.hparams.predict_path
        if name is None:
            self.setup("test")
            tensors = self.splits["test"]
            self.prediction_ids = self.ids["test"]
        else:
            frame = read_table(find_file(name, self.hparams.data_dir, "predict_path"), "predict_path",
                               self.hparams.separator)
            id_column = self.hparams.id_column
            if id_column and id_column not in frame.columns:
                raise UserError(f"{name}: no id column {id_column!r} (data.id_column). Its columns: "
                                f"{', '.join(frame.columns)}.")
            has_target = self.preprocessing.target in frame.columns and frame[self.preprocessing.target].notna().all()
            tensors = self.encode(frame, name, with_target=has_target)
            self.prediction_ids = self.row_ids(frame)
        return TensorBatches(tensors, self.hparams.eval_batch_size, shuffle=False)

    def training_sample(self, count: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[:count] for t in self.splits["fit"][:2])

    # In every checkpoint: what turns a raw row into the network's inputs, as plain data.
    def state_dict(self) -> dict:
        return self.preprocessing.state() if self.preprocessing else {}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = Preprocessing.from_state(state_dict)
        if self.preprocessing is not None and self.splits and not saved.matches(self.preprocessing):
            raise_changed(self.preprocessing, saved)
        self.preprocessing = saved


def raise_changed(now: Preprocessing, saved: Preprocessing) -> None:
    changed = [name for name, value in now.state().items() if saved.state()[name] != value]
    raise UserError(f"the checkpoint's preprocessing differs from the one fitted on the table now "
                    f"({', '.join(changed)} changed): the file or the data settings changed since it was saved. "
                    f"Use the same data.")
