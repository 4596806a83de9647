"""Sliding-window prediction in bounded memory, for images of any size.

Tiles of the one tiler overlap and are blended with a smooth window so that
seams vanish; only the output maps are image-sized.  A 2D network predicts a
volume slice by slice, a 3D network in 3D tiles.  Every image is normalised by
:func:`napari_hybridseg.data.preprocess.normalize`, as in training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.preprocess import NormalisedView, ranges_for
from ..data.tiling import Tiling
from ..devices import precision_for
from ..errors import ConfigError
from ..intensity import Intensity
from ..networks import UNet

SLAB = 64  # rows (or slices) combined at a time when the tiles are blended
# pixels per axis of one tile, for 2D and 3D: a 3D tile's side is cubed, so 512 would put
# a whole CT into one forward pass (tens of GiB at width 16); 128^3 takes about 1.5 GiB
TILE = {2: 512, 3: 128}


@dataclass
class Prediction:
    probability: np.ndarray  # probability of any structure (not background), mean of the networks
    uncertainty: np.ndarray | None  # |p1 - p2| of that probability between the two networks, if two
    class_probability: np.ndarray | None = None  # (K, *S) each class's probability, for K > 1 classes

    def labels(self, threshold: float = 0.5) -> np.ndarray:
        """One structure: objects numbered by connected components where the probability
        exceeds ``threshold``.  Several: each pixel's most probable class (background
        included; ``threshold`` applies to one structure only)."""
        from .output import class_labels, labels_from_probability

        if self.class_probability is None:
            return labels_from_probability(self.probability, threshold)
        return class_labels(self.probability, self.class_probability)

    def take(self, index: tuple) -> Prediction:
        """The maps at ``index`` of the spatial axes (a slice of a volume, a region)."""
        cp = self.class_probability
        return Prediction(
            self.probability[index],
            None if self.uncertainty is None else self.uncertainty[index],
            None if cp is None else cp[(slice(None), *index)],
        )


@torch.no_grad()
def predict_array(
    nets: list[UNet],
    image,
    tile: int | None = None,
    overlap: int = 32,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
) -> Prediction:
    """Predict one normalised ``(C, *S)`` image (a 2D image, or a volume for 3D networks).

    ``image`` is an array, or a :class:`~napari_hybridseg.data.preprocess.NormalisedView`
    that reads and scales each tile on its own (from a memory map, say).  Tiles of at
    most ``tile`` pixels per axis (``TILE`` by dimensionality when ``None``) overlap by at
    least ``overlap`` pixels and are blended with a raised-cosine window.  Memory, whatever
    the image size: one batch of tiles plus the output maps, 4 bytes per pixel per network.
    The networks must already be in eval mode on ``device``.
    """
    device = torch.device(device)
    if batch_size is None:
        # on CPUs, one tile at a time stays in cache: batches of 4 were 1.6x slower (BENCHMARKS.md)
        batch_size = 8 if device.type == "cuda" else 1
    shape = tuple(image.shape[1:])
    tiling = Tiling(shape, tile or TILE[len(shape)], overlap, nets[0].size_multiple, nets[0].patch_side)
    win = tiling.blend_weights()
    n_classes = nets[0].n_outputs - 1
    acc = np.zeros((len(nets), n_classes, *tiling.padded_shape), np.float32)
    precision = precision_for(device)
    tiles = tiling.tiles
    for i in range(0, len(tiles), batch_size):
        chunk = tiles[i : i + batch_size]
        x = torch.from_numpy(np.stack([tiling.read(image, t) for t in chunk])).to(device)
        for k, net in enumerate(nets):
            with precision.autocast():
                logits = net(x)
            classes = torch.softmax(logits.float(), dim=1)[:, 1:].cpu().numpy()
            for t, p in zip(chunk, classes):
                acc[(k, slice(None), *t.window)] += p * win
    return _blend(acc, tiling)


def _blend(acc: np.ndarray, tiling: Tiling) -> Prediction:
    """Divide the accumulated ``(networks, classes, *S)`` maps (over the tiling's padded
    array) by the blend's total weight and combine the networks, in place and in slabs
    of the first spatial axis."""
    shape = tiling.shape
    acc = acc[(slice(None), slice(None), *tiling.inner)]
    totals = [t[inner] for t, inner in zip(tiling.weight_totals(), tiling.inner)]
    rest = np.ones((), np.float32)
    for total in totals[1:]:
        rest = np.multiply.outer(rest, total)
    uncertainty = np.empty(shape, np.float32) if len(acc) > 1 else None
    for start in range(0, shape[0], SLAB):
        rows = slice(start, min(start + SLAB, shape[0]))
        norm = np.multiply.outer(totals[0][rows], rest)
        acc[:, :, rows] /= norm
        if uncertainty is not None:
            p0, p1 = acc[0, :, rows], acc[1, :, rows]
            np.abs(p0.sum(0) - p1.sum(0), out=uncertainty[rows])
            p0 += p1
            p0 *= 0.5
    if acc.shape[1] == 1:
        return Prediction(acc[0, 0], uncertainty)
    return Prediction(acc[0].sum(0), uncertainty, acc[0])


def predict_image(
    nets: list[UNet],
    image: np.ndarray,
    axes: str,
    device: torch.device | str = "cpu",
    tile: int | None = None,
    z: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    intensity: Intensity | None = None,
) -> Prediction:
    """Predict a raw image (``yx``, ``yxc`` or ``zyx``), or only slice ``z`` of a volume.

    A 2D network predicts a volume slice by slice, a 3D network the whole volume (of
    which slice ``z`` is then taken); every slice is normalised with the whole volume's
    statistics, as in training, under the model's ``intensity`` (its task's; percentile
    when ``None``).  The image is read tile by tile: a memory-mapped image
    (see :func:`napari_hybridseg.images.read_image`) is never in memory whole.
    """
    nets = _ready(nets, torch.device(device))
    ranges = ranges_for(intensity, image, axes)
    if nets[0].spatial_dims == 3 and axes == "zyx":
        pred = predict_array(nets, NormalisedView(image, axes, ranges=ranges), tile=tile, device=device)
        return pred if z is None else pred.take((z,))
    if z is not None or axes != "zyx":
        return predict_array(nets, NormalisedView(image, axes, z, ranges), tile=tile, device=device)
    depth, n_classes = image.shape[0], nets[0].n_outputs - 1
    prob = np.empty(image.shape, np.float32)
    unc = np.empty(image.shape, np.float32) if len(nets) > 1 else None
    classes = np.empty((n_classes, *image.shape), np.float32) if n_classes > 1 else None
    for k in range(depth):
        pred = predict_array(nets, NormalisedView(image, axes, k, ranges), tile=tile, device=device)
        prob[k] = pred.probability
        if unc is not None:
            unc[k] = pred.uncertainty
        if classes is not None:
            classes[:, k] = pred.class_probability
        if progress is not None:
            progress(k + 1, depth)
    return Prediction(prob, unc, classes)


def _ready(nets: list[UNet], device: torch.device) -> list[UNet]:
    """The networks in eval mode on ``device``: the caller's own where they already are,
    else copies, so that predicting never moves a caller's networks or leaves a live run's
    in eval mode."""
    ready = []
    for net in nets:
        here = next(net.parameters()).device
        same = here.type == device.type and (device.index is None or here.index == device.index)
        ready.append(net if same and not net.training else copy.deepcopy(net).eval().to(device))
    return ready


def check_input(model, image: np.ndarray, axes: str, name: str) -> None:
    """Raise :class:`ConfigError` naming ``name`` (a file or a layer) when ``image`` with
    ``axes`` is not what ``model`` predicts: another number of channels, or a 2D image for
    a 3D model (a 2D model predicts a volume slice by slice)."""
    channels = image.shape[-1] if axes == "yxc" else 1
    if channels != model.task.in_channels:
        raise ConfigError(f"{name}: image has {channels} channel(s), the model expects {model.task.in_channels}")
    if model.task.spatial_dims == 3 and axes != "zyx":
        raise ConfigError(f"{name}: a 2D image, but the model is 3D and predicts volumes")


def predict_with_model(model, image: np.ndarray, axes: str, **kwargs) -> Prediction:
    """:func:`predict_image` with a loaded model: its predicting networks and its
    intensity normalisation (``kwargs``: device, tile, z, progress)."""
    return predict_image(model.predictors, image, axes, intensity=model.task.intensity, **kwargs)
