"""Scribble strokes: every connected stroke on a slice is one annotation.

A user who says "this stroke is wrong" means one stroke, not every stroke that
happens to share its label value; so each 8-connected group of pixels of one
value on one slice is its own weak instance.  A stroke is named by its label
and its first pixel in raster order, which no edit of another stroke changes,
so unchanged strokes keep their identity (and their learned weight) across edits.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Stroke:
    """One connected stroke of one label value on one slice.

    ``pixels`` are flat indices into the slice, increasing; ``shape`` the slice's shape.
    """

    label: int
    z: int | None
    pixels: np.ndarray
    shape: tuple[int, int]

    @property
    def anchor(self) -> tuple[int, ...]:
        y, x = divmod(int(self.pixels[0]), self.shape[1])
        return (y, x) if self.z is None else (self.z, y, x)

    @property
    def instance_id(self) -> str:
        """``"LABEL@Y:X"`` (``"LABEL@Z:Y:X"`` in a volume): label and first pixel."""
        return f"{self.label}@{':'.join(map(str, self.anchor))}"

    @property
    def signature(self) -> str:
        """Changes whenever a pixel of the stroke is added, removed or moved."""
        return f"{self.pixels.size}:{zlib.crc32(self.pixels.astype(np.int64).tobytes()):08x}"


def slice_strokes(scribbles: np.ndarray, z: int | None = None) -> list[Stroke]:
    """Every connected stroke of a 2D scribble slice (0 is unlabelled), in a fixed order:
    by label, then by first pixel."""
    scribbles = np.asarray(scribbles)
    h, w = scribbles.shape
    out: list[Stroke] = []
    values = scribbles.astype(np.int64, copy=False)
    # one bounding box per label value: each value is labelled inside its own box only
    for index, region in enumerate(ndi.find_objects(values), start=1):
        if region is None:
            continue
        comps, n = ndi.label(values[region] == index, structure=EIGHT_CONNECTED)
        ys, xs = np.nonzero(comps)
        flat = (ys + region[0].start) * w + (xs + region[1].start)
        ids = comps[ys, xs]
        for k in range(1, n + 1):
            out.append(Stroke(index, z, flat[ids == k], (h, w)))
    return out


def parse_stroke_id(instance: str) -> tuple[int, tuple[int, ...]]:
    """``"2@5:14:30"`` -> ``(2, (5, 14, 30))``: the label and the first pixel."""
    label, _, where = instance.partition("@")
    return int(label), tuple(int(v) for v in where.split(":")) if where else ()
