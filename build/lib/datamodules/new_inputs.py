"""New inputs for `mode=predict predict_input=<file or folder>`: images from .png / .npy files, texts from lines.

Each input gets an id that says where it came from (`cat.png`, `batch.npy[3]`, `reviews.txt:12`), which is the
first column of predictions.csv.
"""
from pathlib import Path

import numpy as np
import torch

from lightlab.base.errors import UserError

IMAGE_SUFFIXES = (".png", ".npy")


def input_files(path: str | Path, suffixes: tuple[str, ...]) -> list[Path]:
    path = Path(path).expanduser()
    if path.is_file():
        files = [path] if path.suffix.lower() in suffixes else []
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    else:
        raise UserError(f"predict_input={path} does not exist. Give a file or a folder of {'/'.join(suffixes)} files.")
    if not files:
        raise UserError(f"predict_input={path} holds no {'/'.join(suffixes)} file: this network reads "
                        f"{'images (.png, or .npy arrays)' if suffixes == IMAGE_SUFFIXES else 'text, one per line'}.")
    return files


def as_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    """Pixels as 0-255 bytes: floats in [0, 1] are scaled, floats or integers in [0, 255] are taken as they are."""
    if array.dtype == np.uint8:
        return array
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise UserError(f"{path} holds {array.dtype} values; images are numbers (uint8 0-255, or floats 0-1).")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise UserError(f"{path} holds values from {array.min()} to {array.max()}; pixels are 0-255 (or floats 0-1).")
    if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1:
        array = array * 255
    return np.rint(array).astype(np.uint8)


def read_images(path: str | Path, input_shape: tuple[int, int, int]) -> tuple[torch.Tensor, list[str]]:
    """uint8 images (N, C, H, W) of the network's `input_shape` (C, H, W), and their ids. An .npy file holds one
    image ((H, W), (C, H, W), (H, W, C)) or several ((N, ...) of those)."""
    channels, height, width = input_shape
    images, ids = [], []
    for file in input_files(path, IMAGE_SUFFIXES):
        if file.suffix.lower() == ".png":
            from PIL import Image  # matplotlib's dependency: installed with lightlab

            with Image.open(file) as picture:
                if picture.size != (width, height):
                    raise UserError(f"{file} is {picture.size[0]}x{picture.size[1]} pixels; this network takes "
                                    f"{width}x{height} images. Resize it first.")
                array = np.asarray(picture.convert("L" if channels == 1 else "RGB"))
            images.append(array.reshape(height, width, channels).transpose(2, 0, 1)[None])
            ids.append(file.name)
            continue
        try:
            array = np.load(file, allow_pickle=False)
        except ValueError as error:
            raise UserError(f"{file} is not a readable .npy array ({error}).") from None
        if array.ndim >= 3 and array.shape[-3:] == (channels, height, width):
            array = array.reshape(-1, channels, height, width)
        elif array.ndim >= 3 and array.shape[-3:] == (height, width, channels):
            array = array.reshape(-1, height, width, channels).transpose(0, 3, 1, 2)
        elif array.ndim in (2, 3) and array.shape[-2:] == (height, width) and channels == 1:
            array = array.reshape(-1, 1, height, width)
        else:
            raise UserError(f"{file} holds an array of shape {list(array.shape)}; this network takes images of "
                            f"{channels}x{height}x{width}: one as (H, W{', C' if channels > 1 else ''}) or "
                            f"(C, H, W), several as (N, ...) of those.")
        array = as_uint8(array, file)
        images.append(array)
        ids += [file.name] if len(array) == 1 else [f"{file.name}[{i}]" for i in range(len(array))]
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(images))), ids


def read_texts(path: str | Path) -> tuple[list[str], list[str]]:
    """The non-empty lines of a .txt file (or of each .txt file in a folder), and their ids `file:line`."""
    texts, ids = [], []
    for file in input_files(path, (".txt",)):
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                texts.append(line.strip())
                ids.append(f"{file.name}:{number}")
    if not texts:
        raise UserError(f"predict_input={path}: its .txt files hold no text (one text per line).")
    return texts, ids
