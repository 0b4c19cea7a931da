"""Batched, per-sample image augmentation on the device: no Python loop over images, no PIL.

Each image of a batch gets its own random crop offset, flip and cutout square, drawn as small index
tensors; the pixels move in one gather. Randomness comes from a torch.Generator the caller owns, so
a DataModule can store its state in checkpoints and a resumed run draws the same augmentations.
"""
import torch


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): each image zero-padded by `padding`, cropped back to H x W at its own
    random offset, and (with `flip`) mirrored left-right with probability 1/2, as one gather."""
    batch, _, height, width = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator).to(images.device)
    mirrored = (torch.rand(batch, generator=generator) < 0.5).to(images.device) if flip else None
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)            # (B, H)
    columns = torch.arange(width, device=images.device).expand(batch, width)           # (B, W)
    if mirrored is not None:
        columns = torch.where(mirrored[:, None], columns.flip(1), columns)
    columns = offsets[1, :, None] + columns
    index = torch.arange(batch, device=images.device)[:, None, None]
    # padded[b, :, rows[b, i], columns[b, j]] for every b, i, j: advanced indexing puts C last.
    return padded.permute(0, 2, 3, 1)[index, rows[:, :, None], columns[:, None, :]].permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a size x size square at a random centre in each image (DeVries & Taylor); squares may be
    clipped at the border, as in the paper."""
    batch, _, height, width = images.shape
    centres = torch.stack([torch.randint(0, height, (batch,), generator=generator),
                           torch.randint(0, width, (batch,), generator=generator)]).to(images.device)
    rows = torch.arange(height, device=images.device)[None, :] - centres[0, :, None] + size // 2   # (B, H)
    columns = torch.arange(width, device=images.device)[None, :] - centres[1, :, None] + size // 2  # (B, W)
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((columns >= 0) & (columns < size))[:, None, :]
    return images.masked_fill(inside[:, None], 0)
