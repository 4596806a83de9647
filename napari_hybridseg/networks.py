"""Segmentation networks: a 2D U-Net with an exposed final 1x1 classifier.

The classifier is separate (``features`` then ``classifier``) because the dynamic
instance indicator takes its gradients in closed form for that layer alone.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net (Ronneberger et al., 2015) with ``depth`` poolings and ``width`` base channels.

    Input ``(B, in_channels, H, W)`` with H and W multiples of ``2**depth``;
    output logits ``(B, n_classes, H, W)``.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, depth: int = 3, width: int = 16):
        super().__init__()
        self.depth = depth
        self.in_channels = in_channels
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels, chans[0])])
        self.down.extend(_block(chans[i], chans[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(_block(chans[i] * 2, chans[i]) for i in reversed(range(depth)))
        self.pool = nn.MaxPool2d(2)
        self.classifier = nn.Conv2d(chans[0], n_classes, 1)
        self.n_features = chans[0]

    def check_input(self, x: torch.Tensor) -> None:
        m = 2**self.depth
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % m or x.shape[-1] % m:
            h, w = x.shape[-2:]
            raise ValueError(
                f"input size {h}x{w} is not a multiple of 2**depth = {m}; pad it to {-(-h // m) * m}x{-(-w // m) * m}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, n_features, H, W)``, the classifier's input."""
        self.check_input(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def create_model(in_channels: int = 1, depth: int = 3, width: int = 16, seed: int | None = None) -> UNet:
    """Build a U-Net; ``seed`` fixes its initialisation (DCR's two branches use two seeds)."""
    if seed is None:
        return UNet(in_channels, 2, depth, width)
    devices = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return UNet(in_channels, 2, depth, width)
