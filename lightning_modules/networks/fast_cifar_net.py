"""A fast CIFAR network after Keller Jordan's airbench94 (94% CIFAR-10 in 3.8 s on an A100).

    whitening conv (2x2, frozen, set from the data) -> GELU
    3 blocks of  conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU   (widths 64, 256, 256)
    max-pool 3 -> Linear (no bias) -> x output_scale

What makes it train fast, and why each piece is here:
- The first layer whitens 2x2 patches: its filters are the eigenvectors of the training patches' covariance,
  scaled by 1/sqrt(eigenvalue) (and their negatives, so GELU keeps both signs). It is computed once from the
  data (`initialize_from_data`, called by the task module before training) and never trained: the later
  layers see decorrelated inputs from the first step. Only its bias trains.
- BatchNorm weights stay at 1 (only the shift trains) and momentum is high (airbench's 0.6 = PyTorch's 0.4):
  few steps, so running statistics must follow the weights quickly.
- Convolutions start as identities on their first in_channels filters (dirac init): a deep stack of
  them passes the signal through unchanged at the start.
- The output is scaled down (1/9), which keeps early logits small: a gentler start than a temperature.
"""
import torch
from torch import nn


class ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, batchnorm_momentum: float):
        super().__init__(
            identity_initialized_conv(in_channels, out_channels), nn.MaxPool2d(2),
            frozen_scale_batchnorm(out_channels, batchnorm_momentum), nn.GELU(),
            identity_initialized_conv(out_channels, out_channels),
            frozen_scale_batchnorm(out_channels, batchnorm_momentum), nn.GELU())


def identity_initialized_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding="same", bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:in_channels])
    return conv


def frozen_scale_batchnorm(channels: int, momentum: float) -> nn.BatchNorm2d:
    # airbench's momentum 0.6 weighs the old statistics; PyTorch's momentum weighs the new batch: 1 - 0.6.
    norm = nn.BatchNorm2d(channels, momentum=1 - momentum, eps=1e-12)
    norm.weight.requires_grad_(False)
    return norm


class FastCIFARNet(nn.Module):
    def __init__(self, input_shape: list[int], num_classes: int, widths: list[int] = (64, 256, 256),
                 whitening_patch: int = 2, whitening_epsilon: float = 5e-4, batchnorm_momentum: float = 0.6,
                 output_scale: float = 0.1111111):  # ~1/9
        super().__init__()
        channels = input_shape[0]
        whitening_width = 2 * channels * whitening_patch ** 2  # each eigenvector and its negative
        self.whitening_epsilon = whitening_epsilon
        self.whiten = nn.Conv2d(channels, whitening_width, whitening_patch, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        # Saved with the weights: a network loaded from a checkpoint (or init_from) is not re-whitened.
        self.register_buffer("whitening_from_data", torch.tensor(False))
        blocks, in_channels = [], whitening_width
        for width in widths:
            blocks.append(ConvBlock(in_channels, width, batchnorm_momentum))
            in_channels = width
        self.features = nn.Sequential(nn.GELU(), *blocks, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(in_channels, num_classes, bias=False)
        self.output_scale = output_scale

    @torch.no_grad()
    def initialize_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening filters from normalised training images (N, C, H, W); a few thousand suffice."""
        if self.whitening_from_data:
            return
        channels, size = images.shape[1], self.whiten.kernel_size[0]
        patches = images.float().unfold(2, size, 1).unfold(3, size, 1)              # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * size * size)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues[:, None] + self.whitening_epsilon))
        filters = filters.reshape(-1, channels, size, size)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
        self.whitening_from_data.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.whiten(x))) * self.output_scale
