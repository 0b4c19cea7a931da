"""A whole epoch in one process: training, validation and a checkpoint, framework against hand-written.

The hand-written side (an image workload's HandWritten loop) validates after its training batches, in eval mode and
batches of data.eval_batch_size (loss and accuracy, as the framework's validation logs them), then saves its
weights and optimizer state with torch.save, as benchmarks/hand_written_run.py does. The framework's whole epoch is
the time from one epoch's first training batch to the next one's (benchmarks/clocks.EpochClock.full_epoch_seconds):
its validation loop, epoch-end logging, pictures, checkpoints and progress bar are all in it.
"""
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.epoch_time import HandWritten


class HandWrittenWithValidation(HandWritten):
    def __init__(self, cfg, datamodule):
        super().__init__(cfg, datamodule)
        self.val_images, self.val_labels = datamodule.splits["validate"]
        self.checkpoint = Path(tempfile.mkdtemp()) / "last.ckpt"
        self.validation_seconds: list[float] = []  # validation and save, each epoch

    def after_epoch(self, state, epoch: int) -> float:
        started = time.perf_counter()
        self.validate_and_save(state, epoch)
        self.validation_seconds.append(time.perf_counter() - started)
        return self.validation_seconds[-1]

    def validate_and_save(self, state, epoch: int) -> None:
        net, optimizer, loss_function = state
        net.eval()
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        size = self.cfg.data.eval_batch_size
        with torch.no_grad():
            for first in range(0, len(self.val_labels), size):
                logits = net(self.prepare(self.val_images[first:first + size]))
                labels = self.val_labels[first:first + size]
                loss_sum += loss_function(logits, labels) * len(labels)
                correct += (logits.argmax(1) == labels).sum()
        net.train()
        torch.save({"epoch": epoch, "net": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "val_loss": float(loss_sum) / len(self.val_labels),
                    "val_acc": int(correct) / len(self.val_labels)}, self.checkpoint)
