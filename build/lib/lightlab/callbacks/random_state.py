"""Exact resume: every checkpoint carries the random generators' states, and a resumed fit continues from them.

Lightning's checkpoint holds weights, optimizer, schedulers and loop counters but no random state (Lightning
#17543): a resumed run draws other dropout masks than the uninterrupted one would have, and drifts from it. The
batch order needs nothing here (datamodules/tensor_batches.py: a function of seed and epoch), and CIFAR's
augmentation generator travels in the datamodule's own state; this callback adds the global ones: torch (CPU and
the process's CUDA device), Python's `random` and NumPy's.

The states are taken when a checkpoint is written (after the epoch's training and validation: validation draws no
random numbers) and put back when the resumed fit starts training, after Lightning has restored everything else,
so nothing between restoring and the first step can draw from them. They are stored as tensors and lists of
numbers: a checkpoint still loads with `torch.load(path, weights_only=True)`.
"""
import random

import numpy as np
import pytorch_lightning as pl
import torch


class RestoreRandomState(pl.Callback):
    def __init__(self):
        self.saved: dict | None = None  # from the checkpoint being resumed; applied when training starts

    def state_dict(self) -> dict:
        if self.saved is not None:  # stopped again before training restarted: the states to resume are still these
            return self.saved
        version, state, gaussian = random.getstate()
        name, keys, position, has_gaussian, cached_gaussian = np.random.get_state()
        # CUDA: this process's device only (each DDP process has its own; another machine may have fewer devices).
        return {"torch": torch.get_rng_state(),
                "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
                "python": [version, list(state), gaussian],
                "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gaussian, cached_gaussian]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.saved = state_dict

    def on_train_start(self, trainer, module) -> None:
        if self.saved is None:
            return
        saved, self.saved = self.saved, None
        torch.set_rng_state(saved["torch"])
        if saved["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(saved["cuda"][0])
        version, state, gaussian = saved["python"]
        random.setstate((version, tuple(state), gaussian))
        name, keys, position, has_gaussian, cached_gaussian = saved["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gaussian, cached_gaussian))
