"""Training-epoch time through the framework vs a hand-written PyTorch loop, per workload.

    python benchmarks/epoch_time.py <workload: mnist_mlp, mnist_lht, cifar10_cnn, ...> [--repeats 7] [--data-dir D]

Both sides run in this one process, alternating, on the same in-memory uint8 tensors, with the same network
class, initial weights, optimizer settings, batch size and per-batch maths (scaling, and for CIFAR the per-sample
crop+flip; for text the same length-bucketed batches, from our batch iterator, so the ratio isolates the training
loop; for a table the same encoded numeric and category tensors, sliced; for a series the same windows, gathered
from the same unfold view and split into history, future covariates and targets). The framework side is run.py's own
`train(cfg)` with the default callbacks on (checkpointing, progress bar, TensorBoard); its epoch is timed from the
first training batch's start to the last one's end, so validation, checkpoint writing and set-up are excluded (the
whole fit() wall time is a row of its own). Prints a table, writes benchmarks/results/epoch_time_<workload>.json.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from benchmarks.clocks import EpochClock  # noqa: E402
from datamodules.augment import random_crop_flip  # noqa: E402
from lightlab.config.table_task import settle_task  # noqa: E402
from lightlab.run.compose import compose_config  # noqa: E402
from run import train  # noqa: E402

EPOCHS = 2  # the first epoch also pays one-time costs (first-call caches, allocations); the second is steady state


@dataclass
class Workload:
    title: str
    overrides: list[str]
    batches: int | None = None  # training batches per epoch (None: the whole training split)
    compare: list[str] = field(default_factory=list)  # a second framework variant, timed alongside


WORKLOADS = {
    "mnist_mlp": Workload("MNIST MLP 784-512-256-128-10, batch 128, Adam(fused)", []),
    # lightning-hydra-template's MNIST net: a small network, so per-step overhead is most of the difference.
    "mnist_lht": Workload("MNIST LHT-net 784-64-128-64-10 (BatchNorm), batch 128, Adam(fused)", ["model=mlp_bn",
                          "model.init=default", "model.hidden_dims=[64,128,64]", "model.dropout=0.0"]),
    # 100 of the 430 batches an epoch (~4 s): the ratio of a full epoch, in a quarter of the time.
    "mnist_cnn": Workload("MNIST BasicCNN (mnist_cnn), batch 128, Adam(fused)", ["experiment=mnist_cnn"], batches=100),
    # 80 batches (10,240 images) per epoch: the full 45,000 would take ~35 s an epoch on 2 cores, for the same ratio.
    "cifar10_cnn": Workload("CIFAR-10 BasicCNN (the seed's), batch 128, Adam(fused), crop+flip on the fly",
                            ["experiment=cifar10_cnn"], batches=80),
    # 300 of the 1,037 batches an epoch; the variant without length bucketing measures what bucketing buys.
    "sst2_bilstm_attention": Workload("SST-2 BiLSTM + attention (sst2_bilstm_attention), batch 64, Adam(fused)",
                                      ["experiment=sst2_bilstm_attention"], 300, ["data.bucketing=false"]),
    # A whole epoch: 2,051 training rows, 17 batches (the epoch is ~0.1 s, so more repeats).
    "ames_price": Workload("Ames housing TabularMLP 512-256 (ames_price), batch 128, AdamW(fused), huber",
                           ["experiment=ames_price"]),
    # A whole epoch: 14,449 training windows of 336 + 48 half-hours, 113 batches.
    "elecdemand_dayahead": Workload("Electricity demand WindowMLP 512-512 over 336+48 steps (elecdemand_dayahead), "
                                    "batch 128, AdamW(fused), l1", ["experiment=elecdemand_dayahead"]),
}


def composed(workload: Workload, data_dir: str, output_dir: str, *more: str, epochs: int = EPOCHS):
    limit = [f"trainer.limit_train_batches={workload.batches}"] if workload.batches else []
    cfg = compose_config(workload.overrides + limit + [f"trainer.max_epochs={epochs}", "test_after_fit=false",
                                                       "scheduler=none", f"paths.data_dir={data_dir}", *more],
                         output_dir=output_dir)
    settle_task(cfg)  # data=table: its task's keys
    return cfg


def framework_epochs(workload: Workload, data_dir: str, *variant: str) -> tuple[list[float], float, float]:
    """run.py's train(cfg) on the workload: (seconds of each training epoch, seconds between the two epochs
    outside validation, seconds of the whole train() call)."""
    with tempfile.TemporaryDirectory() as output_dir:
        cfg = composed(workload, data_dir, output_dir, "+callbacks.epoch_clock._target_=benchmarks.clocks.EpochClock",
                       *variant)
        started = time.perf_counter()
        train(cfg)
        return (EpochClock.epoch_seconds[-EPOCHS:], EpochClock.between_epochs_seconds[-1],
                time.perf_counter() - started)


def paired_epochs(workload: Workload, data_dir: str, hand_written: "HandWritten", epochs: int,
                  *variant: str) -> tuple[list[float], list[float], list[float]]:
    """One train(cfg) of `epochs` epochs, interleaved batch by batch with a hand-written run: after each framework
    training batch, one hand-written batch runs (from on_train_batch_end), and its seconds are taken out of the
    framework's epoch. The two sides then see the same machine at the same moment: this VM's speed wanders by up to
    2x within a minute, which made back-to-back epochs (or halves of one) differ by +-20% between pairs; batch by
    batch the pairs agree within ~2%. (framework epoch seconds, hand-written epoch seconds, framework seconds between
    epochs outside validation and the hand-written work)."""
    state = hand_written.build()
    EpochClock.hand_steps = lambda epoch: hand_written.epoch_steps(state, epoch, workload.batches)
    try:
        with tempfile.TemporaryDirectory() as output_dir:
            train(composed(workload, data_dir, output_dir,
                           "+callbacks.epoch_clock._target_=benchmarks.clocks.EpochClock", *variant, epochs=epochs))
    finally:
        EpochClock.hand_steps = None
    return (EpochClock.epoch_seconds[-epochs:], EpochClock.paired_seconds[-epochs:],
            EpochClock.between_epochs_seconds[-(epochs - 1):])


class HandWritten:
    """The loop a careful user writes by hand: permutation, slice, augment and scale on the fly, forward,
    backward, step."""

    def __init__(self, cfg, datamodule, device: str = "cpu"):  # gpu_check.py: "cuda", images resident there
        self.cfg, self.datamodule, self.device = cfg, datamodule, torch.device(device)
        self.table = hasattr(datamodule, "preprocessing")
        self.series = hasattr(datamodule, "fitted")
        self.text = not hasattr(datamodule, "input_shape") and not self.table and not self.series
        self.images, self.labels = datamodule.splits["fit"][0], datamodule.splits["fit"][-1]
        if not self.text and not self.table and not self.series:
            self.images, self.labels = self.images.to(self.device), self.labels.to(self.device)
            self.shift = 255 * torch.tensor(datamodule.mean, device=self.device).reshape(1, -1, 1, 1)
            self.scale = 1 / (255 * torch.tensor(datamodule.std, device=self.device).reshape(1, -1, 1, 1))
        self.clip, self.batch_size = cfg.trainer.gradient_clip_val, cfg.data.batch_size  # (a DictConfig read per step
        # cost the hand-written loop ~2% of an LHT-net step)
        self.crop_padding = cfg.data.get("crop_padding", 0)
        self.flip = cfg.data.get("horizontal_flip", False)
        self.generator = torch.Generator().manual_seed(0)

    def batches(self, epoch: int, count: int):
        """(inputs, labels) of the epoch's first `count` batches."""
        if self.text:
            loader = self.datamodule.train_dataloader()
            loader.sampler.set_epoch(epoch)
            for _, (ids, lengths, labels) in zip(range(count), loader):
                yield (ids, lengths), labels
            return
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(epoch))
        batch_size = self.batch_size
        for first in range(0, min(len(order), count * batch_size), batch_size):
            index = order[first:first + batch_size].to(self.device)
            if self.table:  # (numeric, categories), target
                numeric, categorical, target = self.datamodule.splits["fit"]
                rows = (numeric.index_select(0, index), categorical.index_select(0, index))
                yield rows, target.index_select(0, index)
                continue
            if self.series:  # windows (batch, features, lookback + horizon): (history, future covariates), targets
                windows, lookback = self.images.index_select(0, index), self.datamodule.lookback
                targets = len(self.datamodule.targets)
                yield ((windows[:, :, :lookback].transpose(1, 2), windows[:, targets:, lookback:].transpose(1, 2)),
                       windows[:, :targets, lookback:].transpose(1, 2))
                continue
            # index_select, as our batch iterator gathers: ~5x faster than images[index] for uint8 on this CPU
            yield (self.prepare(self.images.index_select(0, index)),), self.labels.index_select(0, index)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.view(-1, *self.datamodule.input_shape)
        if self.crop_padding or self.flip:
            images = random_crop_flip(images, self.crop_padding, self.flip, self.generator)
        return images.float().sub_(self.shift).mul_(self.scale)

    def build(self):
        torch.manual_seed(self.cfg.seed)
        shape = self.datamodule.network_inputs()
        if self.table:  # a regression: one output, the experiment's loss
            shape = {"input_shape": shape["input_shape"], "cardinalities": shape["cardinalities"], "num_classes": 1}
        if self.series:
            shape = shape["window"]
        net = instantiate(self.cfg.model, **shape, _convert_="all")
        net = net.to(self.device)
        optimizer = instantiate(self.cfg.optimizer, params=net.parameters(), _convert_="all")
        loss = (instantiate(self.cfg.loss, _convert_="all") if self.table or self.series
                else torch.nn.CrossEntropyLoss())
        return net.train(), optimizer, loss

    def step(self, net, optimizer, loss_function, inputs, y) -> torch.Tensor:
        logits = net(*inputs).squeeze(1) if self.table else net(*inputs)
        loss = loss_function(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:  # the experiment's clipping, as Lightning applies it
            torch.nn.utils.clip_grad_norm_(net.parameters(), self.clip)
        optimizer.step()
        return logits

    def epochs(self, batches: int | None) -> list[float]:
        state = self.build()
        return [self.run_epoch(state, epoch, batches) for epoch in range(EPOCHS)]

    def run_epoch(self, state, epoch: int, batches: int | None) -> float:
        """Seconds of one training epoch of the (net, optimizer, loss) in `state`."""
        return sum(self.epoch_steps(state, epoch, batches))

    def epoch_steps(self, state, epoch: int, batches: int | None):
        """One training epoch a batch at a time, yielding each batch's seconds (its gather, scaling and step); the
        last one's include reading the epoch's accuracy back and `after_epoch`. What runs between two batches is
        the caller's (paired_epochs runs a framework batch there)."""
        net, optimizer, loss_function = state
        count = min(batches or 10 ** 9, self.batches_per_epoch())
        epoch_batches = self.batches(epoch, count)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for index in range(count):
            start = time.perf_counter()
            inputs, y = next(epoch_batches)
            logits = self.step(net, optimizer, loss_function, inputs, y)
            if not self.table and not self.series:  # (a regression has no accuracy to count)
                correct += (logits.argmax(1) == y).sum()
            if index == count - 1:
                correct.item()
                yield time.perf_counter() - start + self.after_epoch(state, epoch)
            else:
                yield time.perf_counter() - start

    def after_epoch(self, state, epoch: int) -> float:
        """Seconds of the loop's work after an epoch's training batches: none here (epoch_with_validation.py)."""
        return 0.0

    def batches_per_epoch(self) -> int:
        return len(self.datamodule.train_dataloader())  # as the framework's epoch (data.drop_last included)

    def batch_costs(self, calls: int = 20) -> tuple[float, float]:
        """Median seconds of preparing one batch (augmentation + scaling) and of one training step on it."""
        net, optimizer, loss_function = self.build()
        batch, labels = self.images[:self.batch_size], self.labels[:self.batch_size]
        prepare, step = [], []
        for _ in range(calls):
            start = time.perf_counter()
            x = self.prepare(batch)
            middle = time.perf_counter()
            self.step(net, optimizer, loss_function, (x,), labels)
            prepare.append(middle - start)
            step.append(time.perf_counter() - middle)
        return statistics.median(prepare), statistics.median(step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "data")))
    args = parser.parse_args()
    workload = WORKLOADS[args.workload]

    cfg = composed(workload, args.data_dir, tempfile.gettempdir())
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    hand_written = HandWritten(cfg, datamodule)

    framework, fit_walls, hand, variant = [], [], [], []
    for _repeat in range(args.repeats):  # alternate A/B so drifts in machine speed hit both alike
        epoch_times, _, fit_wall = framework_epochs(workload, args.data_dir)
        framework.append(epoch_times)
        fit_walls.append(fit_wall)
        hand.append(hand_written.epochs(workload.batches))
        if workload.compare:
            variant.append(framework_epochs(workload, args.data_dir, *workload.compare)[0])
    images = min(len(hand_written.images), (workload.batches or 10 ** 9) * cfg.data.batch_size)

    def column(table, epoch):
        return [times[epoch] for times in table]

    rows = []
    for epoch, label in enumerate(["1st epoch", "2nd epoch"]):
        rows += [(f"hand-written loop, {label} (s)", column(hand, epoch)),
                 (f"framework, {label} (s)", column(framework, epoch)),
                 (f"ratio framework / hand, {label}",
                  [f / h for f, h in zip(column(framework, epoch), column(hand, epoch))])]
    unit = "texts" if hand_written.text else "rows" if hand_written.table else "windows" if hand_written.series \
        else "images"
    rows += [(f"framework, 2nd epoch ({unit}/s)", [images / t for t in column(framework, 1)]),
             (f"hand-written loop, 2nd epoch ({unit}/s)", [images / t for t in column(hand, 1)]),
             (f"framework fit(), {EPOCHS} epochs incl. validation, checkpoints (s)", fit_walls)]
    if workload.compare:
        name = " ".join(workload.compare)
        rows += [(f"framework with {name}, 2nd epoch (s)", column(variant, 1)),
                 (f"speed-up of the default over {name}, 2nd epoch",
                  [v / f for v, f in zip(column(variant, 1), column(framework, 1))])]
    print(f"\n{workload.title}, {images} training {unit} an epoch, {torch.get_num_threads()} threads, "
          f"{args.repeats} alternating repeats")
    print(f"{'':64s} {'median':>9s} {'min':>9s} {'max':>9s}")
    for name, values in rows:
        print(f"{name:64s} {statistics.median(values):9.3f} {min(values):9.3f} {max(values):9.3f}")
    results = {name: {"median": statistics.median(v), "min": min(v), "max": max(v), "all": v} for name, v in rows}
    images_only = not (hand_written.text or hand_written.table or hand_written.series)
    if workload.batches and images_only:  # image augmentation's cost
        prepare, step = hand_written.batch_costs()
        print(f"{'one batch: crop+flip+scale (ms)':64s} {1000 * prepare:9.2f}")
        print(f"{'one batch: forward+backward+step (ms)':64s} {1000 * step:9.2f}")
        print(f"{'augmentation share of a training step':64s} {prepare / (prepare + step):9.1%}")
        results.update({"batch_prepare_ms": 1000 * prepare, "batch_step_ms": 1000 * step})
    results.update({"threads": torch.get_num_threads(), "torch": torch.__version__,
                    "pytorch_lightning": pl.__version__})
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"epoch_time_{args.workload}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
