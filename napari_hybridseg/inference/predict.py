"""Sliding-window prediction in bounded memory, for images of any size.

Tiles of the one tiler overlap and are blended with a smooth window so that
seams vanish; only the output maps are image-sized.  A 2D network predicts a
volume slice by slice, a 3D network in 3D tiles.  Every image is normalised by
:func:`napari_hybridseg.data.preprocess.normalize`, as in training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.preprocess import normalize
from ..data.tiling import Tiling
from ..devices import precision_for
from ..networks import UNet


@dataclass
class Prediction:
    probability: np.ndarray  # probability of any structure (not background), mean of the networks
    uncertainty: np.ndarray | None  # |p1 - p2| between the two networks, if two

    def labels(self, threshold: float = 0.5) -> np.ndarray:
        from .output import labels_from_probability

        return labels_from_probability(self.probability, threshold)


@torch.no_grad()
def predict_array(
    nets: list[UNet],
    image: np.ndarray,
    tile: int = 512,
    overlap: int = 32,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
) -> Prediction:
    """Predict one normalised ``(C, *S)`` array (a 2D image, or a volume for 3D networks).

    Tiles of at most ``tile`` pixels per axis overlap by at least ``overlap`` pixels and
    are blended with a raised-cosine window.  Memory: the output maps plus one batch of
    tiles, whatever the image size.  The networks must already be in eval mode on
    ``device``.
    """
    device = torch.device(device)
    if batch_size is None:
        # on CPUs, one tile at a time stays in cache: batches of 4 were 1.6x slower (BENCHMARKS.md)
        batch_size = 8 if device.type == "cuda" else 1
    shape = image.shape[1:]
    tiling = Tiling(shape, tile, overlap, nets[0].size_multiple)
    padded = tiling.pad(image)
    win = tiling.blend_weights()
    acc = np.zeros((len(nets), *tiling.padded_shape), np.float32)
    wsum = np.zeros(tiling.padded_shape, np.float32)
    precision = precision_for(device)
    tiles = tiling.tiles
    for i in range(0, len(tiles), batch_size):
        chunk = tiles[i : i + batch_size]
        x = torch.from_numpy(np.stack([padded[(slice(None), *t.window)] for t in chunk])).to(device)
        for k, net in enumerate(nets):
            with precision.autocast():
                logits = net(x)
            fg = torch.softmax(logits.float(), dim=1)[:, 1:].sum(1).cpu().numpy()
            for t, p in zip(chunk, fg):
                acc[(k, *t.window)] += p * win
        for t in chunk:
            wsum[t.window] += win
    crop = tuple(slice(0, s) for s in shape)
    probs = acc[(slice(None), *crop)] / wsum[crop][None]
    unc = np.abs(probs[0] - probs[1]) if len(nets) > 1 else None
    return Prediction(probs.mean(0), unc)


def predict_image(
    nets: list[UNet],
    image: np.ndarray,
    axes: str,
    device: torch.device | str = "cpu",
    tile: int = 512,
    z: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Prediction:
    """Predict a raw image (``yx``, ``yxc`` or ``zyx``), or only slice ``z`` of a volume.

    A 2D network predicts a volume slice by slice, a 3D network the whole volume (of
    which slice ``z`` is then taken); every slice is normalised with the whole volume's
    statistics, as in training.
    """
    for net in nets:
        net.eval().to(device)
    volume_net = nets[0].spatial_dims == 3 and axes == "zyx"
    if not volume_net and (z is not None or axes != "zyx"):
        return predict_array(nets, normalize(image, axes, z), tile=tile, device=device)
    norm = normalize(image, axes)  # (Z, C, H, W)
    if volume_net:
        pred = predict_array(nets, np.ascontiguousarray(np.moveaxis(norm, 1, 0)), tile=tile, device=device)
        if z is None:
            return pred
        return Prediction(pred.probability[z], None if pred.uncertainty is None else pred.uncertainty[z])
    probs, uncs = [], []
    for k in range(norm.shape[0]):
        pred = predict_array(nets, norm[k], tile=tile, device=device)
        probs.append(pred.probability)
        uncs.append(pred.uncertainty)
        if progress is not None:
            progress(k + 1, norm.shape[0])
    unc = np.stack(uncs) if uncs[0] is not None else None
    return Prediction(np.stack(probs), unc)
