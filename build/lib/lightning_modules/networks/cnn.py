"""The seed's BasicCNN, sized from the data instead of a hand-computed `128 * 8 * 8`.

Blocks of 3x3 convolution (padding 1, so each keeps its input's size) -> BatchNorm -> ReLU, a 2x2 max-pool
after the blocks marked in `pool_after`, then a classifier head: Linear -> ReLU -> Dropout -> Linear.
The seed's network is channels [32, 64, 128], pools after the first two, head width 256, dropout 0.5.
"""
import torch
from torch import nn


class BasicCNN(nn.Module):
    def __init__(self, input_shape: list[int], num_classes: int, channels: list[int] = (32, 64, 128),
                 pool_after: list[bool] = (True, True, False), head_width: int = 256, dropout: float = 0.5):
        super().__init__()
        if len(pool_after) != len(channels):
            raise ValueError(f"pool_after has {len(pool_after)} entries for {len(channels)} conv blocks; give one "
                             f"true/false per entry of channels")
        in_channels, height, width = input_shape
        layers = []
        for out_channels, pool in zip(channels, pool_after):
            # No conv bias: the BatchNorm right after it has its own shift.
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                       nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * height * width, head_width),
                                        nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(head_width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
