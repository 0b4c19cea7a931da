"""Closeness to the machine: the MLP's training FLOP/s through the framework at batch 512, as a share of what
torch.mm alone reaches on this machine, measured in the same process.

A training step of a Linear layer (batch B, in K, out N) makes three matrix products of 2*B*K*N FLOPs each:
the output, the input's gradient and the weight's gradient. Everything else (bias, ReLU, dropout, the loss, the
optimizer, data) is counted as costing nothing, so the share is a lower bound on how busy the step keeps the
cores. Two references: torch.mm on exactly those products (the ceiling for this network and batch), and one
square 1024 x 1024 product (the machine's peak).
"""
import time

import torch


def layer_shapes(input_width: int, hidden: list[int], classes: int) -> list[tuple[int, int]]:
    widths = [input_width, *hidden, classes]
    return list(zip(widths[:-1], widths[1:]))


def training_flops_per_sample(shapes: list[tuple[int, int]]) -> int:
    return sum(3 * 2 * k * n for k, n in shapes)


def mm_flops_per_second(products: list[tuple[int, int, int]], seconds: float = 1.0) -> float:
    """FLOP/s of torch.mm cycling through (m, k, n) products for about `seconds`, after a warm-up pass."""
    pairs = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in products]
    flops_per_pass = sum(2 * m * k * n for m, k, n in products)
    for a, b in pairs:
        torch.mm(a, b)
    passes, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a, b in pairs:
            torch.mm(a, b)
        passes += 1
    return passes * flops_per_pass / (time.perf_counter() - start)


def step_products(shapes: list[tuple[int, int]], batch: int) -> list[tuple[int, int, int]]:
    """The (m, k, n) of each matrix product of one training step: output, input gradient, weight gradient."""
    products = []
    for k, n in shapes:
        products += [(batch, k, n), (batch, n, k), (n, batch, k)]
    return products
