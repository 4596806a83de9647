"""A U-Net for 2D images or 3D volumes, with its final 1x1 classifier exposed.

The classifier is separate (``features`` then ``classifier``) because the dynamic
instance indicator takes its gradients in closed form for that layer alone.
"""

from __future__ import annotations

import torch
from torch import nn

_LAYERS = {
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ConvTranspose2d),
    3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.ConvTranspose3d),
}


class UNet(nn.Module):
    """U-Net (Ronneberger et al., MICCAI 2015) with ``depth`` poolings and ``width`` base channels.

    Input ``(B, in_channels, *S)`` with ``S`` the ``spatial_dims`` spatial axes, each a
    multiple of ``2**depth``; output logits ``(B, n_outputs, *S)``.  ``pools`` gives each
    level's pooling kernel (2 or 1 per axis; default 2 everywhere): a volume with thick
    slices is pooled in-plane only until its voxels are near-isotropic (see
    :func:`napari_hybridseg.task.pool_kernels`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_outputs: int = 2,
        depth: int = 3,
        width: int = 16,
        spatial_dims=2,
        pools: tuple[tuple[int, ...], ...] | None = None,
    ):
        super().__init__()
        if spatial_dims not in _LAYERS:
            raise ValueError(f"spatial_dims must be 2 or 3; got {spatial_dims}")
        conv, norm, pool, up = _LAYERS[spatial_dims]
        pools = tuple(tuple(k) for k in pools) if pools else ((2,) * spatial_dims,) * depth
        if len(pools) != depth or any(len(k) != spatial_dims or set(k) - {1, 2} for k in pools):
            raise ValueError(f"pools must be {depth} kernels of {spatial_dims} values, each 1 or 2; got {pools}")

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                conv(cin, cout, 3, padding=1, bias=False),
                norm(cout),
                nn.ReLU(inplace=True),
                conv(cout, cout, 3, padding=1, bias=False),
                norm(cout),
                nn.ReLU(inplace=True),
            )

        self.depth = depth
        self.in_channels = in_channels
        self.n_outputs = n_outputs
        self.spatial_dims = spatial_dims
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([block(in_channels, chans[0])])
        self.down.extend(block(chans[i], chans[i + 1]) for i in range(depth))
        self.pools = pools
        self.up = nn.ModuleList(up(chans[i + 1], chans[i], pools[i], stride=pools[i]) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(block(chans[i] * 2, chans[i]) for i in reversed(range(depth)))
        self.pool = nn.ModuleList(pool(k) for k in pools)
        self.classifier = conv(chans[0], n_outputs, 1)
        self.n_features = chans[0]
        # the side of the patches it trains on: predictions pad an axis shorter than this to
        # it, centred and mirrored, as the patch sampler does (0: no such padding)
        self.patch_side = 0

    @property
    def size_multiple(self) -> int:
        """Every spatial size of the input must be a multiple of this."""
        return 2**self.depth

    def check_input(self, x: torch.Tensor) -> None:
        m = self.size_multiple
        if x.ndim != 2 + self.spatial_dims or x.shape[1] != self.in_channels:
            axes = ", ".join("DHW"[3 - self.spatial_dims :])
            raise ValueError(f"expected input (B, {self.in_channels}, {axes}), got {tuple(x.shape)}")
        spatial = x.shape[2:]
        if any(s % m for s in spatial):
            fits = "x".join(str(-(-s // m) * m) for s in spatial)
            raise ValueError(
                f"input size {'x'.join(map(str, spatial))} is not a multiple of 2**depth = {m}; pad it to {fits}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, n_features, *S)``, the classifier's input."""
        self.check_input(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool[i - 1](x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
