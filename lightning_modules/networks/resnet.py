"""The seed's ResNet (He et al., 2016), sized from the data: basic residual blocks in stages,
then average pool + Linear.

A block is 3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> BN, added to a shortcut, then ReLU. The shortcut is the
input itself, or a 1x1 conv (stride) + BN where the block changes the size or the channel count.
ResNet-18 is blocks_per_stage [2, 2, 2, 2], ResNet-34 [3, 4, 6, 3], both with widths [64, 128, 256, 512].
Two stems: "imagenet" (7x7 conv stride 2 + 3x3 max-pool stride 2, 224 -> 56, the seed's and torchvision's) and
"cifar" (one 3x3 conv stride 1, no pool), since quartering a 28x28 or 32x32 image before the first stage leaves
the last stage a 1x1 map.
"""
from typing import Literal

import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        # No conv biases: each conv feeds a BatchNorm with its own shift.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            # The sum needs the input at the output's size and channel count.
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, input_shape: list[int], num_classes: int, *, blocks_per_stage: list[int],  # resnet18/34
                 widths: list[int] = (64, 128, 256, 512), stem: Literal["cifar", "imagenet"] = "cifar",
                 zero_init_last_bn: bool = False):
        super().__init__()
        if len(blocks_per_stage) != len(widths):
            raise ValueError(f"blocks_per_stage has {len(blocks_per_stage)} entries for {len(widths)} widths; give "
                             f"one block count per stage")
        in_channels = input_shape[0]
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        elif stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', not {stem!r}")
        in_channels = widths[0]
        stages = []
        for index, (num_blocks, width) in enumerate(zip(blocks_per_stage, widths)):
            # The first stage keeps the stem's size; each later one halves it in its first block.
            blocks = [ResidualBlock(in_channels, width, stride=1 if index == 0 else 2)]
            blocks += [ResidualBlock(width, width) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        # Average pooling makes the head independent of the image size.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(in_channels, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_last_bn:
            # Goyal et al. (2017): the residual branch starts at zero, so each block starts as relu(shortcut(x)).
            for module in self.modules():
                if isinstance(module, ResidualBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stages(self.stem(x))))
