"""Sliding-window prediction in bounded memory, for images of any size.

Tiles overlap and are blended with a smooth window so that seams vanish; only
the output maps are image-sized.  Volumes are predicted slice by slice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .networks import UNet
from .preprocess import normalize


@dataclass
class Prediction:
    probability: np.ndarray  # foreground probability, the mean of the networks
    uncertainty: np.ndarray | None  # |p1 - p2| between the two networks, if two

    def labels(self, threshold: float = 0.5) -> np.ndarray:
        return labels_from_probability(self.probability, threshold)


def _window(n: int) -> np.ndarray:
    # raised cosine, never exactly 0 so single-covered edge pixels keep weight
    return (0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32) + 1e-3


def _layout(size: int, max_tile: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """Tile length and start offsets covering ``size`` with at least ``overlap`` shared pixels.

    The tile length is chosen so that the tiles cover the axis nearly exactly (no
    tile mostly outside the image): redundancy stays near ``1 + overlap / tile``.
    """
    padded = -(-size // multiple) * multiple
    if padded <= max_tile:
        return padded, [0]
    n = int(np.ceil((size - overlap) / (max_tile - overlap)))
    tile = int(np.ceil((size + (n - 1) * overlap) / n / multiple)) * multiple
    starts = np.round(np.linspace(0, size - tile, n)).astype(int).tolist()
    return tile, starts


@torch.no_grad()
def predict_slice(
    nets: list[UNet],
    image: np.ndarray,
    tile: int = 512,
    overlap: int = 32,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
) -> Prediction:
    """Predict one normalised ``(C, H, W)`` slice with every network.

    Tiles of at most ``tile`` pixels overlap by at least ``overlap`` pixels and are
    blended with a raised-cosine window.  Memory: the output maps plus one batch of
    tiles, whatever the image size.
    """
    device = torch.device(device)
    if batch_size is None:
        # on CPUs, one tile at a time stays in cache: batches of 4 were 1.6x slower (BENCHMARKS.md)
        batch_size = 8 if device.type == "cuda" else 1
    m = 2 ** nets[0].depth
    c, h, w = image.shape
    tile = max(m * 4, (tile // m) * m)
    th, ys = _layout(h, tile, overlap, m)
    tw, xs = _layout(w, tile, overlap, m)
    ph, pw = max(0, th - h), max(0, tw - w)
    if ph or pw:
        image = np.pad(image, ((0, 0), (0, ph), (0, pw)), mode="symmetric" if min(h, w) > 1 else "edge")
    H, W = image.shape[-2:]
    win = np.outer(_window(th), _window(tw)) if len(ys) * len(xs) > 1 else np.ones((th, tw), np.float32)
    acc = np.zeros((len(nets), H, W), np.float32)
    wsum = np.zeros((H, W), np.float32)
    coords = [(y, x) for y in ys for x in xs]
    use_amp = device.type == "cuda"
    for i in range(0, len(coords), batch_size):
        chunk = coords[i : i + batch_size]
        x = torch.from_numpy(np.stack([image[:, y : y + th, x0 : x0 + tw] for y, x0 in chunk])).to(device)
        for k, net in enumerate(nets):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(x)
            prob = torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()
            for (y, x0), p in zip(chunk, prob):
                acc[k, y : y + th, x0 : x0 + tw] += p * win
        for y, x0 in chunk:
            wsum[y : y + th, x0 : x0 + tw] += win
    probs = acc[:, :h, :w] / wsum[None, :h, :w]
    unc = np.abs(probs[0] - probs[1]) if len(nets) > 1 else None
    return Prediction(probs.mean(0), unc)


def predict_image(
    nets: list[UNet],
    image: np.ndarray,
    axes: str,
    device: torch.device | str = "cpu",
    tile: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> Prediction:
    """Predict a raw image (``yx``, ``yxc`` or ``zyx``); volumes slice by slice."""
    for net in nets:
        net.eval().to(device)
    norm = normalize(image, axes)
    if axes != "zyx":
        return predict_slice(nets, norm, tile=tile, device=device)
    probs, uncs = [], []
    for z in range(norm.shape[0]):
        pred = predict_slice(nets, norm[z], tile=tile, device=device)
        probs.append(pred.probability)
        uncs.append(pred.uncertainty)
        if progress is not None:
            progress(z + 1, norm.shape[0])
    unc = np.stack(uncs) if uncs[0] is not None else None
    return Prediction(np.stack(probs), unc)


def save_prediction(
    pred: Prediction,
    folder,
    name: str,
    meta,
    fmt: str | None = None,
    threshold: float = 0.5,
    probability: bool = False,
    uncertainty: bool = False,
) -> list:
    """Write ``NAME.tif``/``NAME.nii.gz`` (labels) and optionally ``NAME_prob``/``NAME_uncertainty``.

    ``fmt`` ``None`` keeps the source format (NIfTI in, NIfTI out with the same affine).
    Returns the written paths.
    """
    from pathlib import Path

    from .images import ImageMeta, label_suffix_for, write_image

    folder = Path(folder)
    suffix = f".{fmt.lstrip('.')}" if fmt else label_suffix_for(meta)
    out_meta = ImageMeta(spacing=meta.spacing, affine=meta.affine, format=suffix.lstrip("."))
    written = [write_image(folder / f"{name}{suffix}", pred.labels(threshold), out_meta)]
    if probability:
        written.append(write_image(folder / f"{name}_prob{suffix}", pred.probability.astype(np.float32), out_meta))
    if uncertainty and pred.uncertainty is not None:
        written.append(
            write_image(folder / f"{name}_uncertainty{suffix}", pred.uncertainty.astype(np.float32), out_meta)
        )
    return written


def labels_from_probability(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Foreground at ``probability > threshold``, objects numbered by connected components."""
    from skimage.measure import label

    lab = label(probability > threshold, connectivity=1)
    return lab.astype(np.uint16 if lab.max() < 65536 else np.int32)


def explain_empty(probability: np.ndarray, threshold: float = 0.5) -> str | None:
    """A sentence saying why a prediction is empty, or ``None`` if it is not."""
    if (probability > threshold).any():
        return None
    top = float(probability.max()) if probability.size else 0.0
    return (
        f"no pixel reached probability {threshold} (highest {top:.2f}): the model has seen too "
        "little foreground; add full masks or boxes on objects like these, or train longer"
    )
