"""Intensity normalisation and channel layout: the one preprocessing path.

Training, the DII passes, live previews, prediction and export all go through
:func:`normalize`, so a volume is scaled by the same whole-volume statistics
whether the engine trains on it, the widget previews one of its slices, or the
command line exports it.
"""

from __future__ import annotations

import numpy as np

LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.8
PERCENTILE_SAMPLE = 2_000_000  # percentiles of 2M pixels suffice


def _channels_first(image: np.ndarray, axes: str) -> np.ndarray:
    """``(C, H, W)`` for ``yx``/``yxc``, ``(Z, C, H, W)`` for ``zyx`` (views, no copy)."""
    arr = np.asarray(image)
    if axes == "yx":
        return arr[None]
    if axes == "yxc":
        return np.moveaxis(arr, -1, 0)
    if axes == "zyx":
        return arr[:, None]
    raise ValueError(f"unknown axes {axes!r}")


def intensity_ranges(image: np.ndarray, axes: str) -> list[tuple[float, float]]:
    """``(low, scale)`` of every channel, from the whole image or volume."""
    arr = _channels_first(image, axes)
    out = []
    for c in range(arr.shape[1 if axes == "zyx" else 0]):
        ch = arr[:, c] if axes == "zyx" else arr[c]
        sample = np.asarray(ch).ravel()[:: max(1, ch.size // PERCENTILE_SAMPLE)].astype(np.float32)
        lo, hi = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
        scale = hi - lo if hi > lo else (float(sample.std()) or 1.0)
        out.append((float(lo), float(scale)))
    return out


def normalize(image: np.ndarray, axes: str, z: int | None = None, ranges=None) -> np.ndarray:
    """Robust per-image, per-channel scaling to about [0, 1], channels first, float32.

    Returns ``(C, H, W)`` for ``yx``/``yxc`` images, ``(Z, C, H, W)`` for ``zyx``
    volumes, or ``(C, H, W)`` for slice ``z`` of a volume (scaled by the whole
    volume's statistics).  Percentiles (1, 99.8) make it indifferent to dtype, camera
    offsets and a few hot pixels: uint8, uint16 with an offset and float all land in
    the same range.  ``ranges``: the result of :func:`intensity_ranges` for this image,
    when already known.
    """
    if axes != "zyx" or z is not None:
        return NormalisedView(image, axes, z, ranges)[...]
    ranges = ranges if ranges is not None else intensity_ranges(image, axes)
    arr = np.asarray(_channels_first(image, axes), dtype=np.float32)  # (Z, C, H, W)
    out = np.empty(arr.shape, np.float32)
    for c, (lo, scale) in enumerate(ranges):
        out[:, c] = (arr[:, c] - np.float64(lo)) / np.float64(scale)  # float64 arithmetic, float32 result
    return out


class NormalisedView:
    """A raw image seen channels first, ``(C, *S)``, and scaled when indexed.

    Indexing reads and scales only the requested region, so a tile of a memory-mapped
    image is the only part of it in memory.  A volume is ``(C, Z, H, W)``, or one slice
    ``z`` of it ``(C, H, W)``; either way it is scaled by the whole volume's statistics
    (``ranges``, computed once when not given).  The channel axis is always taken whole.
    """

    def __init__(self, image: np.ndarray, axes: str, z: int | None = None, ranges=None) -> None:
        if z is not None and axes != "zyx":
            raise ValueError(f"slice {z} requested of a {axes} image")
        self.ranges = ranges if ranges is not None else intensity_ranges(image, axes)
        arr = _channels_first(image, axes)
        self._raw = arr[z] if z is not None else (np.moveaxis(arr, 1, 0) if axes == "zyx" else arr)
        self.shape = self._raw.shape

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        if index and index[0] is not Ellipsis and index[0] != slice(None):
            raise IndexError("a NormalisedView is indexed with all its channels")
        raw = np.asarray(self._raw[index], dtype=np.float32)
        out = np.empty(raw.shape, np.float32)
        for c, (lo, scale) in enumerate(self.ranges):
            out[c] = (raw[c] - np.float64(lo)) / np.float64(scale)  # float64 arithmetic, float32 result
        return out
