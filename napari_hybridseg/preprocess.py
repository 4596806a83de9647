"""Intensity normalisation and channel layout shared by training and prediction."""

from __future__ import annotations

import numpy as np

LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.8


def normalize(image: np.ndarray, axes: str) -> np.ndarray:
    """Robust per-image, per-channel scaling to about [0, 1], channels first.

    Returns ``(C, H, W)`` for ``yx``/``yxc`` images and ``(Z, C, H, W)`` for
    ``zyx`` volumes.  Percentiles (1, 99.8) make it indifferent to dtype, camera
    offsets and a few hot pixels: uint8, uint16 with an offset and float all land
    in the same range.
    """
    arr = np.asarray(image, dtype=np.float32)
    if axes == "yx":
        arr = arr[None]
    elif axes == "yxc":
        arr = np.moveaxis(arr, -1, 0)
    elif axes == "zyx":
        arr = arr[:, None]
    else:
        raise ValueError(f"unknown axes {axes!r}")
    chan_axis = 1 if axes == "zyx" else 0
    out = np.empty_like(arr)
    for c in range(arr.shape[chan_axis]):
        ch = arr[:, c] if axes == "zyx" else arr[c]
        sample = ch.ravel()[:: max(1, ch.size // 2_000_000)]  # percentiles of 2M pixels suffice
        lo, hi = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
        scale = hi - lo if hi > lo else (float(ch.std()) or 1.0)
        norm = (ch - lo) / scale
        if axes == "zyx":
            out[:, c] = norm
        else:
            out[c] = norm
    return out
