"""The network a shared model runs: the trained networks' mean class probabilities.

Inputs are normalised images (the preprocessing is declared beside the weights, or
applied by our own tools); outputs are ``(B, K + 1, *S)`` probabilities, background
first.  Two networks (DCR) give the mean of both, as :func:`napari_hybridseg.inference.predict_image` does.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..modelfile import LoadedModel


class MeanProbabilities(nn.Module):
    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = [torch.softmax(net(x), dim=1) for net in self.nets]
        return torch.stack(probs).mean(0)


def exported_network(model: LoadedModel) -> MeanProbabilities:
    """CPU float32 copies of the model's networks in eval mode, as one module (the
    model's own networks are left as they are)."""
    return MeanProbabilities([copy.deepcopy(n).float().cpu().eval() for n in model.predictors]).eval()


def example_input(model: LoadedModel, size: int | None = None) -> torch.Tensor:
    """A deterministic input of a size the networks accept: ``(1, C, *S)``."""
    m = model.nets[0].size_multiple
    side = size or max(4 * m, 64)
    shape = (1, model.task.in_channels, *([side] * model.task.spatial_dims))
    return torch.from_numpy(np.random.default_rng(0).random(shape, dtype=np.float32))


def least_side(model: LoadedModel) -> int:
    """The smallest input side a package declares: the training patch's (rounded up to a
    size the networks accept), so that a smaller image is padded to it, as in training."""
    m = model.nets[0].size_multiple
    return max(4 * m, -(-model.nets[0].patch_side // m) * m)


def traced(model: LoadedModel) -> torch.jit.ScriptModule:
    """TorchScript of :func:`exported_network` (runs without Python, in any TorchScript runtime)."""
    with torch.no_grad():
        return torch.jit.trace(exported_network(model), example_input(model), check_trace=False)
