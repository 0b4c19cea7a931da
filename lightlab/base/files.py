"""Files that are written whole or not at all: a kill, a full disk or a failed check mid-write leaves the previous
version (or no file), never a truncated one that a reader, a resumed sweep or a deployment would take for good."""
import json
import os
from pathlib import Path
from typing import Callable


def write_atomically(path: Path, write: Callable[[Path], None], verify: Callable[[Path], str] = lambda path: "") -> str:
    """write(a temporary path beside `path`), verify(it) (raises on a mismatch, returns what it measured), then rename
    it to `path` (atomic on one file system)."""
    temporary = path.with_name(f".{path.name}.partial")
    try:
        write(temporary)
        measured = verify(temporary)
        os.replace(temporary, path)
        return measured
    finally:
        temporary.unlink(missing_ok=True)



def write_text(path: Path, text: str) -> None:
    """A text file (a record, a table, a traceback), whole or not at all."""
    write_atomically(Path(path), lambda partial: partial.write_text(text, encoding="utf-8"))


def write_json(path: Path, data, indent: int = 2) -> None:
    """A JSON record (status, metrics, provenance, preprocessing): other ranks, a re-run sweep and deployments read
    these, and a kill must not leave a truncated one."""
    write_text(path, json.dumps(data, indent=indent) + "\n")
