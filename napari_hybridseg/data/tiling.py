"""The one tiler: padding and windows over images of any size and dimensionality.

Prediction blends overlapping windows; the DII passes use the same windows but
count each pixel in exactly one of them (its *core*); the patch sampler pads
small images with the same padding rules.  Shapes are spatial only; channel axes
in front are carried along untouched.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


def axis_layout(size: int, max_tile: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """Tile length and start offsets covering ``size`` with at least ``overlap`` shared pixels.

    The tile length is a multiple of ``multiple`` and chosen so that the tiles cover
    the axis nearly exactly (no tile mostly outside the image): redundancy stays near
    ``1 + overlap / tile``.  An axis that fits one tile gets one tile, padded up to
    the multiple.  An overlap of half a tile or more is cut to half a tile (a larger one
    would need ever more tiles, and one as large as the tile, infinitely many).
    """
    padded = -(-size // multiple) * multiple
    if padded <= max_tile:
        return padded, [0]
    overlap = min(overlap, max_tile // 2)
    n = int(np.ceil((size - overlap) / (max_tile - overlap)))
    tile = int(np.ceil((size + (n - 1) * overlap) / n / multiple)) * multiple
    starts = np.round(np.linspace(0, size - tile, n)).astype(int).tolist()
    return tile, starts


def _core_bounds(size: int, tile: int, starts: list[int]) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into one interval per tile, cutting halfway through overlaps."""
    cuts = [0] + [(nxt + start + tile) // 2 for start, nxt in zip(starts, starts[1:])] + [size]
    return list(zip(cuts, cuts[1:]))


@dataclass(frozen=True)
class Tile:
    """``window``: slices of the padded array fed to the network; ``core``: the part
    of the window (in array coordinates) that this tile alone owns."""

    window: tuple[slice, ...]
    core: tuple[slice, ...]

    def core_in_window(self) -> tuple[slice, ...]:
        return tuple(slice(c.start - w.start, c.stop - w.start) for c, w in zip(self.core, self.window))


class Tiling:
    """Windows of at most ``max_tile`` pixels per axis over a ``shape``, overlapping
    by at least ``overlap`` and sized in multiples of ``multiple``.

    An axis shorter than ``at_least`` (the side of the patches a network was trained on)
    is centred in one window of that side and mirrored on both sides, exactly as the
    patch sampler pads it: the network sees such an image as it saw it in training.
    Window coordinates are those of the padded array; the image lies at :attr:`inner`.
    """

    def __init__(
        self, shape: tuple[int, ...], max_tile: int, overlap: int = 0, multiple: int = 1, at_least: int = 0
    ) -> None:
        max_tile = max(multiple * 4, (max_tile // multiple) * multiple)
        at_least = -(-at_least // multiple) * multiple
        self.shape = tuple(int(s) for s in shape)
        layouts = [(at_least, [0]) if s < at_least else axis_layout(s, max_tile, overlap, multiple) for s in self.shape]
        self.tile_shape = tuple(t for t, _ in layouts)
        self.starts = [starts for _, starts in layouts]
        self.padded_shape = tuple(max(s, t) for s, t in zip(self.shape, self.tile_shape))
        # the patch sampler's own rule, so both always agree
        self.offsets = tuple(before for before, _ in centred_pads(self.shape, at_least))
        self.inner = tuple(slice(o, o + s) for o, s in zip(self.offsets, self.shape))
        cores = [
            [(o + a, o + b) for a, b in _core_bounds(s, t, st)]
            for o, s, (t, st) in zip(self.offsets, self.shape, layouts)
        ]
        self.tiles = [
            Tile(
                tuple(slice(s, s + t) for s, t in zip(start, self.tile_shape)),
                tuple(slice(a, b) for a, b in core),
            )
            for start, core in zip(itertools.product(*self.starts), itertools.product(*cores))
        ]

    def __len__(self) -> int:
        return len(self.tiles)

    def pad(self, arr: np.ndarray, fill: float | None = None) -> np.ndarray:
        """Pad the trailing spatial axes of ``arr`` up to :attr:`padded_shape`."""
        pads = [(o, p - s - o) for o, s, p in zip(self.offsets, self.shape, self.padded_shape)]
        return pad_spatial(arr, pads, fill)

    def read(self, image, tile: Tile) -> np.ndarray:
        """One window of a ``(C, *S)`` image (an array or anything sliced like one, read
        only under the window), mirrored where the window reaches past the image."""
        lo = [w.start - o for w, o in zip(tile.window, self.offsets)]
        hi = [w.stop - o for w, o in zip(tile.window, self.offsets)]
        inside = tuple(slice(max(a, 0), min(b, s)) for a, b, s in zip(lo, hi, self.shape))
        pads = [(i.start - a, b - i.stop) for a, b, i in zip(lo, hi, inside)]
        return pad_spatial(np.asarray(image[(slice(None), *inside)]), pads)

    def axis_weights(self) -> list[np.ndarray]:
        """The blending window along each axis: a raised cosine, never exactly 0 so that
        pixels covered by one tile only keep some weight (all ones for a single tile)."""
        if len(self.tiles) == 1:
            return [np.ones(n, np.float32) for n in self.tile_shape]
        return [
            (0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32) + 1e-3
            for n in self.tile_shape
        ]

    def blend_weights(self) -> np.ndarray:
        """The window over one tile: the outer product of :meth:`axis_weights`."""
        out = np.ones((), np.float32)
        for w in self.axis_weights():
            out = np.multiply.outer(out, w)
        return out

    def weight_totals(self) -> list[np.ndarray]:
        """Per axis, the summed window of all tiles at each position of the padded image.
        The tiles form a grid, so the total weight at a pixel is the product of these:
        no image-sized array is needed to normalise the blend."""
        totals = []
        for w, starts, size in zip(self.axis_weights(), self.starts, self.padded_shape):
            total = np.zeros(size, np.float32)
            for s in starts:
                total[s : s + len(w)] += w
            totals.append(total)
        return totals


def pad_spatial(arr: np.ndarray, pads: list[tuple[int, int]], fill: float | None = None) -> np.ndarray:
    """Pad the last ``len(pads)`` axes; ``fill=None`` mirrors the image (symmetric, or
    edge for axes of one pixel), a number fills label maps."""
    if not any(a or b for a, b in pads):
        return arr
    full = [(0, 0)] * (arr.ndim - len(pads)) + list(pads)
    if fill is not None:
        return np.pad(arr, full, constant_values=fill)
    spatial = arr.shape[arr.ndim - len(pads) :]
    return np.pad(arr, full, mode="symmetric" if min(spatial) > 1 else "edge")


def centred_pads(shape: tuple[int, ...], at_least: int) -> list[tuple[int, int]]:
    """Pads that centre an array of ``shape`` in one at least ``at_least`` per axis."""
    out = []
    for s in shape:
        p = max(0, at_least - s)
        out.append((p // 2, p - p // 2))
    return out
