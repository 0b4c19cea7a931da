"""The floor for start-up: a hand-written PyTorch script that reads MNIST from its .gz files, builds the same MLP
and Adam(fused), and takes one training step. Prints the wall-clock time at which that step ends, like
benchmarks.clocks.FirstStepClock does for run.py. Any PyTorch training pays `import torch` and, at the first
optimizer call, `import torch._dynamo` (torch's optimizers are wrapped in torch._disable_dynamo, which imports it).

    python benchmarks/first_step_floor.py <data_dir>
"""
import gzip
import sys
import time
from pathlib import Path

import torch

raw = Path(sys.argv[1]) / "MNIST" / "raw"
images = torch.frombuffer(bytearray(gzip.open(raw / "train-images-idx3-ubyte.gz").read()), dtype=torch.uint8,
                          offset=16).view(-1, 784)
labels = torch.frombuffer(bytearray(gzip.open(raw / "train-labels-idx1-ubyte.gz").read()), dtype=torch.uint8,
                          offset=8).long()
net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256), torch.nn.ReLU(),
                          torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
index = torch.randperm(len(labels))[:128]
loss = torch.nn.functional.cross_entropy(net(images[index].float().div(255)), labels[index])
optimizer.zero_grad()
loss.backward()
optimizer.step()
print(f"FIRST_STEP_AT {time.time():.6f}", flush=True)
