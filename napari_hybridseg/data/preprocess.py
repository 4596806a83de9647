"""Intensity normalisation and channel layout: the one preprocessing path.

Training, the DII passes, live previews, prediction and export all go through
:func:`normalize`, so a volume is scaled by the same whole-volume statistics
whether the engine trains on it, the widget previews one of its slices, or the
command line exports it.

The scheme (percentile, z-score or CT) is the task's :class:`~napari_hybridseg.intensity.Intensity`;
every path asks :func:`ranges_for` for an image's ranges under it.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..intensity import Intensity, sample

LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.8
PERCENTILE_SAMPLE = 2_000_000  # percentiles of 2M pixels suffice

# (offset, scale, low, high) of one channel: clip to [low, high], subtract offset, divide by scale
Range = tuple[float, float, float, float]


def ranges_for(intensity: Intensity | None, image: np.ndarray, axes: str) -> list[Range]:
    """The :data:`Range` of every channel of ``image`` under a task's ``intensity``
    (``percentile`` when ``None``)."""
    intensity = intensity or Intensity()
    if intensity.scheme == "ct":
        n = _channels_first(image, axes).shape[1 if axes == "zyx" else 0]
        if n != len(intensity.stats):
            raise ConfigError(f"the model's CT statistics cover {len(intensity.stats)} channels; the image has {n}")
        return [(mean, std, low, high) for mean, std, low, high in intensity.stats]
    return intensity_ranges(image, axes, intensity.scheme)


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


def intensity_ranges(image: np.ndarray, axes: str, scheme: str = "percentile") -> list[Range]:
    """The :data:`Range` of every channel, from the whole image or volume, for a
    per-image scheme (``percentile`` or ``zscore``)."""
    arr = _channels_first(image, axes)
    out = []
    for c in range(arr.shape[1 if axes == "zyx" else 0]):
        values = sample(arr[:, c] if axes == "zyx" else arr[c], PERCENTILE_SAMPLE)
        if scheme == "zscore":
            out.append((float(values.mean()), float(values.std()) or 1.0, -np.inf, np.inf))
            continue
        lo, hi = np.percentile(values.astype(np.float32), [LOW_PERCENTILE, HIGH_PERCENTILE])
        scale = hi - lo if hi > lo else (float(values.std()) or 1.0)
        out.append((float(lo), float(scale), -np.inf, np.inf))
    return out


def _scale(raw: np.ndarray, rng: Range) -> np.ndarray:
    """One channel clipped and scaled by its :data:`Range` (float64 arithmetic, float32 out)."""
    offset, scale, low, high = rng
    if np.isfinite(low) or np.isfinite(high):
        raw = np.clip(raw, low, high)
    return ((raw - np.float64(offset)) / np.float64(scale)).astype(np.float32)


def normalize(image: np.ndarray, axes: str, z: int | None = None, ranges=None) -> np.ndarray:
    """Robust per-image, per-channel scaling to about [0, 1], channels first, float32.

    Returns ``(C, H, W)`` for ``yx``/``yxc`` images, ``(Z, C, H, W)`` for ``zyx``
    volumes, or ``(C, H, W)`` for slice ``z`` of a volume (scaled by the whole
    volume's statistics).  ``ranges``: the image's ranges under the task's
    :class:`Intensity`; by default the ``percentile`` scheme, whose percentiles (1, 99.8)
    make it indifferent to dtype, camera offsets and a few hot pixels: uint8, uint16 with
    an offset and float all land in the same range.
    """
    if axes != "zyx" or z is not None:
        return NormalisedView(image, axes, z, ranges)[...]
    ranges = ranges if ranges is not None else intensity_ranges(image, axes)
    arr = np.asarray(_channels_first(image, axes), dtype=np.float32)  # (Z, C, H, W)
    out = np.empty(arr.shape, np.float32)
    for c, rng in enumerate(ranges):
        out[:, c] = _scale(arr[:, c], rng)
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
        for c, rng in enumerate(self.ranges):
            out[c] = _scale(raw[c], rng)
        return out
