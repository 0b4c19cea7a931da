"""A table's file found, read (pandas: CSV, gzip-compressed CSV, TSV; Parquet via pyarrow) and its rows split."""
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lightlab.base.errors import UserError

PARQUET = (".parquet", ".pq")


def find_file(name: str, data_dir: str, key: str) -> Path:
    """A path as given (absolute, or relative to the current folder), else relative to paths.data_dir."""
    path = Path(name).expanduser()
    for candidate in (path, Path(data_dir).expanduser() / path):
        if candidate.is_file():
            return candidate
    raise UserError(f"data.{key}={name}: no such file (looked in {Path.cwd()} and in paths.data_dir "
                    f"{Path(data_dir).expanduser().resolve()}). Give the path of a .csv or .parquet file.")


def read_table(path: Path, key: str, separator: str) -> pd.DataFrame:
    try:
        if path.suffix.lower() in PARQUET:
            frame = pd.read_parquet(path)
        else:  # .csv, .tsv, .txt, also gzip-compressed (.csv.gz)
            frame = pd.read_csv(path, sep="\t" if ".tsv" in path.suffixes else separator, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise UserError(f"data.{key}: {path} is empty. A table needs a header line and at least one row.") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as error:
        raise UserError(f"data.{key}: {path} could not be read as a {'Parquet' if path.suffix in PARQUET else 'CSV'} "
                        f"table ({str(error).strip()}). Check the file (data.separator for CSV).") from None
    if frame.empty:
        raise UserError(f"data.{key}: {path} has a header ({', '.join(map(str, frame.columns))}) but no rows.")
    frame.columns = [str(c) for c in frame.columns]
    frame = frame.reset_index(drop=True)  # (a Parquet file may keep a pandas index): row numbers are positions
    return frame


def split_rows(labels: pd.Series | None, count: int, shares: list[float], seed: int) -> list[np.ndarray]:
    """Row positions of each share (e.g. test, val), then the rest; stratified by `labels` when given."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).numpy()
    groups = [order] if labels is None else [order[labels.to_numpy()[order] == c]
                                             for c in pd.unique(labels.to_numpy()[order])]
    parts = [[] for _ in range(len(shares) + 1)]
    for group in groups:
        start = 0
        for part, share in zip(parts, shares):
            size = round(share * len(group))
            part.append(group[start:start + size])
            start += size
        parts[-1].append(group[start:])
    return [np.sort(np.concatenate(part)) for part in parts]
