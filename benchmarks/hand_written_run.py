"""A hand-written PyTorch training run: the reference for a whole `python run.py` process (benchmarks/whole_runs.py).

    python benchmarks/hand_written_run.py <data_dir> <out_dir> --epochs 5 --hidden 64,128,64 [--batch-norm]

What run.py does on MNIST, written plainly: read the .gz files, hold out 5,000 training images for validation, train
an MLP (Linear [-> BatchNorm] -> ReLU per hidden layer, dropout off) with Adam(fused, lr 1e-3) at batch 128, and after
each epoch validate (accuracy, batches of 1,000) and save a checkpoint (weights and optimizer state). No test.
"""
import argparse
import gzip
from pathlib import Path

import torch
from torch import nn


def read(raw: Path, name: str, offset: int) -> torch.Tensor:
    return torch.frombuffer(bytearray(gzip.open(raw / name).read()), dtype=torch.uint8, offset=offset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--hidden", default="64,128,64")
    parser.add_argument("--batch-norm", action="store_true")
    parser.add_argument("--val-size", type=int, default=5000, help="training images held out (run.py: data.val_size)")
    args = parser.parse_args()
    torch.manual_seed(0)
    raw = args.data_dir / "MNIST" / "raw"
    images = read(raw, "train-images-idx3-ubyte.gz", 16).view(-1, 784)
    labels = read(raw, "train-labels-idx1-ubyte.gz", 8).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    val, train = order[:args.val_size], order[args.val_size:]
    train_images, train_labels, val_images, val_labels = images[train], labels[train], images[val], labels[val]
    widths = [784, *map(int, args.hidden.split(","))]
    layers = []
    for width, next_width in zip(widths, widths[1:]):
        layers += [nn.Linear(width, next_width), *([nn.BatchNorm1d(next_width)] if args.batch_norm else []), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Linear(widths[-1], 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    shift, scale = 255 * 0.1307, 1 / (255 * 0.3081)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(args.epochs):
        net.train()
        permutation = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(epoch))
        for first in range(0, len(permutation), 128):
            index = permutation[first:first + 128]
            x = train_images.index_select(0, index).float().sub_(shift).mul_(scale)
            loss = nn.functional.cross_entropy(net(x), train_labels.index_select(0, index))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for first in range(0, len(val_labels), 1000):
                x = val_images[first:first + 1000].float().sub_(shift).mul_(scale)
                correct += int((net(x).argmax(1) == val_labels[first:first + 1000]).sum())
        torch.save({"epoch": epoch, "net": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "val_acc": correct / len(val_labels)}, args.out_dir / "last.ckpt")
    print(f"val_acc {correct / len(val_labels):.4f}")


if __name__ == "__main__":
    main()
