"""Dynamic co-regularisation (DCR): two networks that teach each other on CutMix images.

Each network's hard prediction of the two source images, mixed with the same
box mask as the images, supervises the *other* network on the mixed image
(cross pseudo supervision).  Every pixel's term is scaled by the mixed weight
map, so a distrusted weak annotation stops feeding either network.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cutmix_masks(rng: np.random.Generator, batch: int, h: int, w: int, area: float = 0.5) -> np.ndarray:
    """One rectangle per sample covering ``area`` of it on average: ``(B, 1, H, W)`` float32."""
    masks = np.zeros((batch, 1, h, w), np.float32)
    for i in range(batch):
        frac = rng.uniform(area * 0.5, min(1.0, area * 1.5))
        aspect = rng.uniform(0.5, 2.0)
        bh = int(min(h, round(np.sqrt(frac * h * w * aspect))))
        bw = int(min(w, round(np.sqrt(frac * h * w / aspect))))
        y0 = int(rng.integers(0, h - bh + 1))
        x0 = int(rng.integers(0, w - bw + 1))
        masks[i, 0, y0 : y0 + bh, x0 : x0 + bw] = 1.0
    return masks


def mix(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask * b + (1 - mask) * a`` broadcasting a ``(B, 1, H, W)`` mask."""
    m = mask if a.ndim == 4 else mask[:, 0]
    return m * b + (1 - m) * a


def cross_pseudo_loss(
    logits1_mix: torch.Tensor,
    logits2_mix: torch.Tensor,
    pseudo1: torch.Tensor,
    pseudo2: torch.Tensor,
    weight: torch.Tensor,
) -> torch.Tensor:
    """``mean[w * (CE(f1(x_mix), y2_hat) + CE(f2(x_mix), y1_hat))]``.

    ``pseudo*`` are hard labels ``(B, H, W)`` (no gradient), ``weight`` ``(B, H, W)``.
    """
    l1 = F.cross_entropy(logits1_mix, pseudo2, reduction="none")
    l2 = F.cross_entropy(logits2_mix, pseudo1, reduction="none")
    return (weight * (l1 + l2)).mean()
