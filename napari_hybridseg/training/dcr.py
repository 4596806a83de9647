"""Dynamic co-regularisation (DCR): two networks that teach each other on CutMix images.

Each network's hard prediction of the two source images, mixed with the same
box mask as the images, supervises the *other* network on the mixed image
(cross pseudo supervision).  Every pixel's term is scaled by the mixed weight
map, so a distrusted weak annotation stops feeding either network.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..devices import Precision
from .distributed import ALONE, Distributed


def cutmix_masks(rng: np.random.Generator, batch: int, shape: tuple[int, ...], area: float = 0.5) -> np.ndarray:
    """One box per sample covering ``area`` of it on average: ``(B, 1, *shape)`` float32.

    The box's aspect ratios are drawn from [0.5, 2] between consecutive axes.
    """
    n = len(shape)
    masks = np.zeros((batch, 1, *shape), np.float32)
    volume = float(np.prod(shape))
    for i in range(batch):
        frac = rng.uniform(area * 0.5, min(1.0, area * 1.5))
        log_aspect = np.log(rng.uniform(0.5, 2.0, n - 1))
        # axis a gets half of the log-aspect with its predecessor and minus half with its successor
        log_scale = np.zeros(n)
        log_scale[:-1] += log_aspect / 2
        log_scale[1:] -= log_aspect / 2
        sides = [
            int(min(s, round(math.sqrt(frac * volume) ** (2 / n) * math.exp(g)))) for s, g in zip(shape, log_scale)
        ]
        starts = [int(rng.integers(0, s - b + 1)) for s, b in zip(shape, sides)]
        masks[(i, 0, *(slice(a, a + b) for a, b in zip(starts, sides)))] = 1.0
    return masks


def mix(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask * b + (1 - mask) * a``; ``mask`` ``(B, 1, *S)`` broadcasts over channels,
    and is squeezed for label-like ``(B, *S)`` inputs."""
    m = mask if a.ndim == mask.ndim else mask[:, 0]
    return m * b + (1 - m) * a


def cross_pseudo_loss(
    logits1_mix: torch.Tensor,
    logits2_mix: torch.Tensor,
    pseudo1: torch.Tensor,
    pseudo2: torch.Tensor,
    weight: torch.Tensor,
    count: int | None = None,
) -> torch.Tensor:
    """``mean[w * (CE(f1(x_mix), y2_hat) + CE(f2(x_mix), y1_hat))]``.

    ``pseudo*`` are hard labels ``(B, *S)`` (no gradient), ``weight`` ``(B, *S)``.
    ``count``: the number of pixels of the global batch when these are one rank's share
    of it (the sum is divided by it).
    """
    l1 = F.cross_entropy(logits1_mix, pseudo2, reduction="none")
    l2 = F.cross_entropy(logits2_mix, pseudo1, reduction="none")
    terms = weight * (l1 + l2)
    return terms.mean() if count is None else terms.sum() / count


# the weight of co-regularisation that ``lambda_cr=None`` picks, by the network's spatial
# dimensions: the paper's for 2D; a tenth of it for 3D, where a cube holds a few masked
# slices among many and the networks' own labels teach all the others (BENCHMARKS.md, section 6)
LAMBDA_CR = {2: 1.0, 3: 0.1}


def lambda_cr_for(cfg: TrainConfig, spatial_dims: int) -> float:
    """The weight of the co-regularisation term: ``cfg.lambda_cr``, or where that is
    ``None``, the weight of :data:`LAMBDA_CR` for a network of ``spatial_dims``."""
    return LAMBDA_CR[spatial_dims] if cfg.lambda_cr is None else cfg.lambda_cr


def cr_weight(cfg: TrainConfig, step: int, spatial_dims: int = 2) -> float:
    """The weight of the co-regularisation term (:func:`lambda_cr_for`) at ``step``, after
    the optional ramp-up ``exp(-5 (1 - t)^2)`` (Laine and Aila, ICLR 2017)."""
    weight = lambda_cr_for(cfg, spatial_dims)
    ramp = cfg.cr_rampup * cfg.steps
    if ramp <= 0 or step >= ramp:
        return weight
    return weight * math.exp(-5.0 * (1.0 - step / ramp) ** 2)


def co_regularisation(
    nets: list[torch.nn.Module],
    x: torch.Tensor,
    logits: list[torch.Tensor],
    weight: torch.Tensor,
    rng: np.random.Generator,
    precision: Precision,
    dist: Distributed = ALONE,
) -> torch.Tensor:
    """The cross-pseudo-supervision term of one batch: ``x`` ``(B, C, *S)`` the global
    batch, both networks' ``logits`` on this rank's share of it, and the per-pixel
    ``weight`` ``(B, *S)`` of the global batch.  Images are mixed across the whole batch
    (every rank draws the same permutation and boxes), so N ranks compute this rank's
    share of what one process computes."""
    bsz = x.shape[0]
    mine = dist.share(bsz)
    perm = torch.as_tensor(rng.permutation(bsz), device=x.device)
    m = torch.from_numpy(cutmix_masks(rng, bsz, tuple(x.shape[2:]))).to(x.device)
    x_mix = mix(x[mine], x[perm][mine], m[mine])
    pseudo = [dist.gather(z.detach().argmax(1)) for z in logits]  # the global batch's pseudo-labels
    pseudo_mix = [mix(p[mine].float(), p[perm][mine].float(), m[mine]).round().long() for p in pseudo]
    w_mix = mix(weight[mine], weight[perm][mine], m[mine])
    with precision.autocast():
        mixed = [n(x_mix) for n in nets]
    count = weight.numel() if dist.active else None
    return cross_pseudo_loss(mixed[0].float(), mixed[1].float(), pseudo_mix[0], pseudo_mix[1], w_mix, count)
