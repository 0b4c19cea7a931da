"""The pictures of lightlab/callbacks/evaluation_images.py, drawn with PIL (milliseconds a picture) or, for the
attention plot only, matplotlib: confusion matrix, misclassified grid, channel grid, attention weights; and the
TensorBoard summary they are written as."""
import functools
import math
import struct
import zlib

import numpy as np
import torch


def scaled(values: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Min-max scaled to [0, 1] over `dims`: normalised images and activations have no fixed range."""
    low, high = values.amin(dims, keepdim=True), values.amax(dims, keepdim=True)
    return (values - low) / (high - low).clamp_min(1e-12)


def display_image(image: torch.Tensor) -> torch.Tensor:
    """A normalised (C, H, W) image as greyscale (1, H, W) or RGB (3, H, W) in [0, 1]."""
    image = image.float() if image.shape[0] in (1, 3) else image[:1].float()
    return scaled(image, (0, 1, 2))


def enlarge(images: torch.Tensor, min_side: int = 64) -> torch.Tensor:
    """Nearest-neighbour upscaled by a whole factor: a 7x7 map is otherwise a speck on the page."""
    factor = max(1, min_side // max(images.shape[-2:]))
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def channel_grid(maps: torch.Tensor) -> torch.Tensor:
    """(C, H, W) activations as one (1, H', W') greyscale image: each channel scaled on its own, tiled in a
    near-square grid with white 1-pixel lines between them."""
    maps = enlarge(scaled(maps.float(), (1, 2)))
    count, height, width = maps.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = maps.new_ones(rows * (height + 1) - 1, columns * (width + 1) - 1)
    for index, channel in enumerate(maps):
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        grid[top:top + height, left:left + width] = channel
    return grid[None]


def _blue(rate: float) -> tuple[int, int, int]:  # white to matplotlib's darkest "Blues"
    return tuple(round(a + (b - a) * rate) for a, b in zip((247, 251, 255), (8, 48, 107)))


@functools.lru_cache(maxsize=4)
def _confusion_frame(names: tuple[str, ...]):
    """What a confusion picture of these classes shares from epoch to epoch: class names, axis titles and the colour
    scale (half its drawing time), drawn once; with the font, the cell size and the grid's top-left corner."""
    from PIL import Image, ImageDraw, ImageFont

    classes = len(names)
    cell = max(8, min(44, 560 // classes))
    font = ImageFont.load_default(size=max(9, min(13, cell // 3)))
    labelled = classes <= 30
    label_width = max(font.getbbox(name)[2] for name in names) + 8 if labelled else 0
    bar = 60  # the colour scale on the right
    left, top = 24 + label_width, 12
    width, height = left + classes * cell + 16 + bar, top + classes * cell + label_width + 40
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    grid_bottom = top + classes * cell
    if labelled:
        for index, name in enumerate(names):
            draw.text((left - 4, top + index * cell + cell / 2), name, font=font, anchor="rm", fill="black")
            # Column names written vertically: a strip of text turned a quarter turn.
            strip = Image.new("RGB", (label_width, cell), "white")
            ImageDraw.Draw(strip).text((label_width - 4, cell / 2), name, font=font, anchor="rm", fill="black")
            picture.paste(strip.rotate(90, expand=True), (left + index * cell, grid_bottom + 4))
    draw.text((left + classes * cell / 2, height - 14), "predicted class", font=font, anchor="mm", fill="black")
    axis_title = Image.new("RGB", (classes * cell, 16), "white")
    ImageDraw.Draw(axis_title).text((classes * cell / 2, 8), "true class", font=font, anchor="mm", fill="black")
    picture.paste(axis_title.rotate(90, expand=True), (2, top))
    scale_left, scale_height = left + classes * cell + 16, classes * cell
    for row in range(scale_height):
        draw.line([scale_left, top + row, scale_left + 14, top + row], fill=_blue(1 - row / max(scale_height - 1, 1)))
    for rate, anchor in ((1.0, "lt"), (0.5, "lm"), (0.0, "lb")):
        draw.text((scale_left + 18, top + (1 - rate) * scale_height), f"{rate:g}", font=font, anchor=anchor,
                  fill="black")
    return picture, font, cell, left, top


def confusion_image(matrix: torch.Tensor, names: list[str]) -> torch.Tensor:
    """The matrix as an RGB (3, H, W) uint8 picture: true classes in rows, predicted in columns, each cell coloured by
    the share of its true class (so rare classes read as well as common ones), counts written in the cells up to 20
    classes, names shown up to 30. Drawn with PIL in a few milliseconds: matplotlib took ~0.2 s, a share of a small
    model's epoch, and this is drawn after every validation epoch."""
    from PIL import ImageDraw

    frame, font, cell, left, top = _confusion_frame(tuple(names))
    picture = frame.copy()
    draw = ImageDraw.Draw(picture)
    counts = matrix.long()
    rates = (counts / counts.sum(dim=1, keepdim=True).clamp_min(1)).tolist()
    classes = len(names)
    for true, (row, row_counts) in enumerate(zip(rates, counts.tolist())):
        for predicted, (rate, count) in enumerate(zip(row, row_counts)):
            x, y = left + predicted * cell, top + true * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=_blue(rate))
            if classes <= 20:
                draw.text((x + cell / 2, y + cell / 2), str(count), font=font, anchor="mm",
                          fill="white" if rate > 0.5 else "black")
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)


def misclassified_image(images: list[torch.Tensor], titles: list[str]) -> torch.Tensor:
    """The images in a near-square grid, each under its "true / predicted" title, as an RGB (3, H, W) uint8 picture
    (PIL, like the confusion matrix: no matplotlib import and figure layout for a picture drawn every test)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    pictures = [enlarge(display_image(image), min_side=84) for image in images]
    columns = math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    title_height = 18
    cell_width = max(max(p.shape[2] for p in pictures), max(font.getbbox(t)[2] for t in titles)) + 10
    cell_height = max(p.shape[1] for p in pictures) + title_height + 8
    sheet = Image.new("RGB", (columns * cell_width, rows * cell_height + 22), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((sheet.width / 2, 4), "true / predicted", font=font, anchor="mt", fill="black")
    for index, (picture, title) in enumerate(zip(pictures, titles)):
        x, y = (index % columns) * cell_width, 22 + (index // columns) * cell_height
        draw.text((x + cell_width / 2, y + 2), title, font=font, anchor="mt", fill="black")
        pixels = (picture * 255).round().byte().expand(3, -1, -1).permute(1, 2, 0).numpy()  # greyscale as RGB
        sheet.paste(Image.fromarray(np.ascontiguousarray(pixels)),
                    (x + (cell_width - picture.shape[2]) // 2, y + title_height))
    return torch.from_numpy(np.asarray(sheet).copy()).permute(2, 0, 1)


def attention_figure(tokens: list[list[str]], weights: list[torch.Tensor], titles: list[str]):
    """One row per text: its tokens along the x axis, each cell coloured by the token's attention weight (one
    scale for all rows, from 0: attention spread evenly reads as an even colour, a focused one as a bright cell)."""
    from matplotlib.figure import Figure

    longest = max(len(words) for words in tokens)
    highest = max(float(weight.max()) for weight in weights)
    figure = Figure(figsize=(min(2 + 0.32 * longest, 24), 1.6 * len(tokens)), dpi=80, layout="constrained")
    rows = figure.subplots(len(tokens), 1, squeeze=False)[:, 0]
    for axes, words, weight, title in zip(rows, tokens, weights, titles):
        shown = axes.imshow(weight[None].numpy(), cmap="viridis", aspect="auto", vmin=0, vmax=highest)
        axes.set_xticks(range(len(words)), words, rotation=60, ha="right", fontsize=8)
        axes.set_xlim(-0.5, longest - 0.5)  # the same cell width in every row
        axes.set_yticks([])
        axes.set_title(title, fontsize=9, loc="left")
    figure.colorbar(shown, ax=rows, pad=0.01, label="attention weight")
    return figure


def misclassified_table(examples: list[tuple[torch.Tensor, int, int]], vocabulary, names: list[str]) -> str:
    """A markdown table (TensorBoard's TEXT tab renders it) of the texts, decoded from their token ids."""
    lines = ["| text | true | predicted |", "|---|---|---|"]
    for ids, true, predicted in examples:
        text = " ".join(vocabulary.tokens[i] for i in ids.tolist())
        # "|" would end the cell; "<unk>" would be taken for an HTML tag and dropped.
        text = text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| {text} | {names[true]} | {names[predicted]} |")
    return "\n".join(lines)


def png_bytes(image: torch.Tensor) -> bytes:
    """A uint8 (C, H, W) picture (C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA) as PNG: every row unfiltered, zlib
    level 1. PIL's encoder tries its filters on every row: 5.4 ms for the 10-class confusion matrix written after
    every validation epoch, against 1.9 ms here for a file of the same size (flat colours compress as well)."""
    channels, height, width = image.shape
    rows = np.zeros((height, width * channels + 1), dtype=np.uint8)  # each row: filter type 0, then its pixels
    rows[:, 1:] = image.permute(1, 2, 0).reshape(height, -1).numpy()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]  # grey, grey + alpha, RGB, RGBA; 8 bits each
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
            + chunk(b"IEND", b""))


def png_summary(tag: str, image: torch.Tensor):
    """A TensorBoard image summary of a uint8 (C, H, W) picture. (SummaryWriter.add_image converts the picture
    through floats and encodes it with PIL at its default level: 13 ms for the confusion matrix.)"""
    from tensorboard.compat.proto.summary_pb2 import Summary

    channels, height, width = image.shape
    encoded = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png_bytes(image))
    return Summary(value=[Summary.Value(tag=tag, image=encoded)])
