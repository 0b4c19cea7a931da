"""Fetching dataset files: try each mirror in turn, verify the md5, and only then move the file into place.

A download is written to `<name>.part` beside its destination and renamed when its md5 matches,
so an interrupted or corrupt transfer never leaves a file that looks complete.
"""
import hashlib
import os
import urllib.request
from pathlib import Path

from lightlab.base.errors import UserError


def md5_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(mirrors: list[str], filename: str, md5: str, destination: Path, timeout_s: float = 30.0) -> None:
    """Download `filename` from the first mirror that serves it with the right md5; UserError if none does."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, open(partial, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            actual = md5_of(partial)
            if actual != md5:
                failures.append(f"{url}: md5 {actual} != expected {md5}")
                continue
            os.replace(partial, destination)
            return
        except OSError as error:  # URLError, HTTPError, timeouts and disk errors are all OSErrors
            failures.append(f"{url}: {error}")
        finally:
            partial.unlink(missing_ok=True)
    raise UserError(f"could not download {filename} into {destination.parent}: " + "; ".join(failures))
