"""Segmentation networks: one factory for every task (2D or 3D, any number of classes)."""

from __future__ import annotations

import torch

from ..config import TrainConfig
from ..task import Task
from .unet import UNet

__all__ = ["UNet", "create_model", "model_for"]


def create_model(task: Task, depth: int = 3, width: int = 16, seed: int | None = None, patch_side: int = 0) -> UNet:
    """A U-Net for ``task``; ``seed`` fixes its initialisation (DCR's two networks use two
    seeds); ``patch_side``: the side of its training patches (see :attr:`UNet.patch_side`)."""

    def build() -> UNet:
        net = UNet(task.in_channels, task.n_outputs, depth, width, task.spatial_dims, task.pools or None)
        net.patch_side = patch_side
        return net

    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def model_for(task: Task, cfg: TrainConfig, seed: int | None = None) -> UNet:
    """The network a run with ``cfg`` trains for ``task``: its depth, width and the side of
    its training patches (so that predictions pad small images as training did)."""
    return create_model(task, cfg.depth, cfg.width, seed, cfg.patch_side(task.spatial_dims))
