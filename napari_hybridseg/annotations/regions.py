"""The background of a boxed image in regions, each its own weak annotation.

On an image whose objects are all boxed (*exhaustive*), everything outside the boxes is
taught as background.  With one weight for all of it, one object the user forgot to box
(or one box drawn beside its object) makes the whole background disagree with the full
masks, and DII silences every background pixel of the image.  Split into a grid of
regions, only the region holding the mistake loses its weight.

A region is named by its slice and top-left corner, ``"background@Y:X"`` (``"background@
Z:Y:X"`` on slice Z of a volume), so it keeps its name (and weight) while the boxes change;
an image no larger than one region keeps the single ``"background"`` of earlier versions.
"""

from __future__ import annotations

import math

import numpy as np

BACKGROUND = "background"


def region_edges(n: int, tile: int) -> np.ndarray:
    """Edges of ``ceil(n / tile)`` near-equal parts of an axis of ``n`` pixels."""
    parts = max(1, math.ceil(n / tile)) if tile > 0 else 1
    return np.linspace(0, n, parts + 1).round().astype(int)


def background_regions(shape: tuple[int, int], tile: int, z: int | None = None) -> tuple[np.ndarray, list[str]]:
    """``(index, names)``: the region of every pixel of a ``shape`` slice (an int32 map
    into ``names``), the image cut into regions of about ``tile`` pixels a side
    (``tile`` 0: one region)."""
    ys, xs = region_edges(shape[0], tile), region_edges(shape[1], tile)
    if len(ys) == 2 and len(xs) == 2:
        return np.zeros(shape, np.int32), [BACKGROUND if z is None else f"{BACKGROUND}@{z}:0:0"]
    row = np.repeat(np.arange(len(ys) - 1), np.diff(ys))
    col = np.repeat(np.arange(len(xs) - 1), np.diff(xs))
    index = (row[:, None] * (len(xs) - 1) + col[None, :]).astype(np.int32)
    prefix = "" if z is None else f"{z}:"
    names = [f"{BACKGROUND}@{prefix}{y}:{x}" for y in ys[:-1] for x in xs[:-1]]
    return index, names


def parse_region(name: str) -> tuple[int | None, int, int] | None:
    """``(z, y0, x0)`` of a region's name (``(None, 0, 0)`` for ``"background"``), or
    ``None`` for a name that is no region."""
    if name == BACKGROUND:
        return None, 0, 0
    if not name.startswith(BACKGROUND + "@"):
        return None
    try:
        parts = [int(v) for v in name.split("@", 1)[1].split(":")]
    except ValueError:
        return None
    if len(parts) not in (2, 3):
        return None
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else (None, parts[0], parts[1])


def region_rects(names, shape: tuple[int, ...]) -> dict[str, tuple[int | None, int, int, int, int]]:
    """``(z, y0, x0, y1, x1)`` of every region in ``names`` of an image of spatial
    ``shape``, from the names alone: a region reaches the next region's corner in its row
    and column (or the image's edge), whatever tile size cut them.  Names that are no
    region are left out."""
    h, w = shape[-2:]
    parsed = {n: p for n in names if (p := parse_region(n)) is not None}
    ys = _grid({y for _, y, _ in parsed.values()}, h)
    xs = _grid({x for _, _, x in parsed.values()}, w)
    out = {}
    for name, (z, y0, x0) in parsed.items():
        if 0 <= y0 < h and 0 <= x0 < w:
            out[name] = (z, y0, x0, ys[ys.index(y0) + 1], xs[xs.index(x0) + 1])
    return out


def _grid(corners: set[int], n: int) -> list[int]:
    """The edges along an axis of ``n`` pixels of the coarsest cut by :func:`region_edges`
    that holds every corner: regions wholly under boxes have no name, and their
    neighbours must not reach across them.  Corners of no such cut: as given."""
    inside = {c for c in corners if 0 <= c < n}
    for parts in range(1, n + 1):
        edges = np.linspace(0, n, parts + 1).round().astype(int)
        if inside <= set(edges[:-1].tolist()):
            return edges.tolist()
    return sorted(inside | {n})
