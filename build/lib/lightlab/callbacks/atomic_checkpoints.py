"""Checkpoints written whole or not at all (see lightlab/base/files.py)."""
from pathlib import Path

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from lightlab.base.errors import UserError
from lightlab.base.files import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer (conf/trainer/default.yaml, `plugins`), made atomic. Lightning's own writes
    through fsspec, whose local "transaction" stages the bytes in /tmp and moves them over: not a rename when /tmp
    is another file system, so a kill mid-save could leave a truncated last.ckpt, and with it nothing to resume."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_atomically(path, lambda partial: torch.save(checkpoint, partial))
        except OSError as error:  # disk full, no permission: the previous file is still there
            raise UserError(f"could not write the checkpoint {path} ({error.strerror or error}). The previous "
                            f"{path.name}, if any, is intact. Free disk space or fix the folder's permissions, then "
                            f"re-run the same command to continue from it.") from None
