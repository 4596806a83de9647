"""How well a box encloses one object that the networks predict (``dii_box_fit``).

DII judges a box by what it claims about pixels.  Where objects touch and fill much of
the field, a box two or three times too large still claims mostly object, and no
judgement by claimed pixels can single it out (``benchmarks/box_claims.py``).  What
such a box gets wrong is *which* object it encloses.  Here the predicted class map is
cut into objects (the distance transform's basins, one per peak that stands clearly
above its saddles, as a watershed separates touching nuclei), and a box is scored by its
IoU with the bounding box of the object that holds most of its predicted pixels: about 1
for a tight box, low for a box much larger than its object, off it, or on background.

The scores mean nothing by themselves (a network that under-segments lowers them all),
so, like DII's evidence, they are measured against controls: the tight boxes of the full
masks' objects (touching ones cut apart in the same way), scored on the same networks'
predictions of the strong images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from ..data.controls import MIN_OBJECT_PIXELS

# a peak of the distance transform is an object of its own when it stands above the
# saddle towards its neighbours by this share of the class's typical object radius
PEAK_SHARE = 0.1


@dataclass(frozen=True)
class FitBox:
    """One box to fit: its index among the boxes fitted, the plane it lies on (the
    leading indices of a volume; empty for an image), its rectangle and its class."""

    index: int
    plane: tuple[int, ...]
    rect: tuple[int, int, int, int]  # y0, x0, y1, x1
    cls: int


def boxes_of_map(boxmap: np.ndarray, box_class: np.ndarray) -> list[FitBox]:
    """The boxes of a training sample's box map (a box's index is its value there)."""
    out = []
    for b, region in enumerate(ndi.find_objects(boxmap + 1)):
        if region is not None:
            (ys, xs), lead = region[-2:], tuple(s.start for s in region[:-2])
            out.append(FitBox(b, lead, (ys.start, xs.start, ys.stop, xs.stop), int(box_class[b])))
    return out


def _planes(target: np.ndarray):
    """``(leading index, plane)`` of every 2D plane of a full mask that says something."""
    if target.ndim == 2:
        yield (), target
    else:
        for z in range(target.shape[0]):
            if (target[z] >= 0).any():
                yield (z,), target[z]


def object_radius(targets, n_classes: int) -> dict[int, float]:
    """Each class's typical object radius in full masks: the median, over connected
    objects of at least ``MIN_OBJECT_PIXELS``, of the largest distance from their
    border (the radius of a disc, half the width of an elongated object; objects that
    touch one another do not change it)."""
    found: dict[int, list[float]] = {}
    for target in targets:
        for _, plane in _planes(target):
            for cls in range(1, n_classes + 1):
                labels, n = ndi.label(plane == cls)
                if not n:
                    continue
                sizes = np.bincount(labels.ravel())[1:]
                peaks = ndi.maximum(ndi.distance_transform_edt(labels > 0), labels, np.arange(1, n + 1))
                found.setdefault(cls, []).extend(np.asarray(peaks)[sizes >= MIN_OBJECT_PIXELS].tolist())
    return {c: float(np.median(r)) for c, r in found.items() if r}


def predicted_objects(mask: np.ndarray, radius: float) -> np.ndarray:
    """Objects of one class's mask (2D): the basins of its distance transform, one per
    peak that stands ``PEAK_SHARE * radius`` above its saddles."""
    dist = ndi.distance_transform_edt(mask)
    markers, _ = ndi.label(h_maxima(dist, max(PEAK_SHARE * radius, 0.5)))
    return watershed(-dist, markers, mask=mask)


def boxes_of_objects(target: np.ndarray, radius: dict[int, float], start: int) -> list[FitBox]:
    """Tight boxes of the objects of a full mask, touching objects cut apart as
    :func:`predicted_objects` cuts a prediction: the controls of the box fit."""
    out = []
    for lead, plane in _planes(target):
        for cls, r in radius.items():
            objects = predicted_objects(plane == cls, r)
            sizes = np.bincount(objects.ravel())
            for k, region in enumerate(ndi.find_objects(objects), start=1):
                if region is not None and sizes[k] >= MIN_OBJECT_PIXELS:
                    ys, xs = region
                    out.append(FitBox(start + len(out), lead, (ys.start, xs.start, ys.stop, xs.stop), cls))
    return out


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def box_fits(pred: np.ndarray, boxes: list[FitBox], radius: dict[int, float]) -> dict[int, float]:
    """IoU of every box with the box of the predicted object (``pred``: a class map) that
    holds most of its predicted pixels; 0 where it holds none.  Boxes of a class without
    a radius are left out."""
    cut: dict[tuple, tuple[np.ndarray, list]] = {}
    out: dict[int, float] = {}
    for box in boxes:
        if box.cls not in radius:
            continue
        key = (box.plane, box.cls)
        if key not in cut:
            objects = predicted_objects(pred[box.plane] == box.cls, radius[box.cls])
            cut[key] = (objects, ndi.find_objects(objects))
        objects, found = cut[key]
        y0, x0, y1, x1 = box.rect
        ids = objects[y0:y1, x0:x1].ravel()
        ids = ids[ids > 0]
        if not ids.size:
            out[box.index] = 0.0
            continue
        oy, ox = found[int(np.bincount(ids).argmax()) - 1]
        out[box.index] = _iou(box.rect, (oy.start, ox.start, oy.stop, ox.stop))
    return out


class BoxFitter:
    """The fits of a set of boxes, gathered sample by sample and network by network."""

    def __init__(self, boxes: list[list[FitBox]], radius: dict[int, float], device) -> None:
        self.boxes = boxes  # per sample
        self.radius = radius
        flat = [b for bs in boxes for b in bs]
        n = max((b.index for b in flat), default=-1) + 1
        self.total = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)
        self.groups = torch.full((n,), -1, dtype=torch.long, device=device)
        for b in flat:
            self.groups[b.index] = 2 * b.cls + 1  # the group of a box in DII's calibration

    def wants(self, sample: int) -> bool:
        return bool(self.boxes[sample])

    def reset(self) -> None:
        self.total.zero_()
        self.count.zero_()

    def add(self, sample: int, pred: np.ndarray) -> None:
        for index, value in box_fits(pred, self.boxes[sample], self.radius).items():
            self.total[index] += value
            self.count[index] += 1

    def values(self, dist) -> torch.Tensor:
        """Mean fit of every box over the networks (summed over ranks); NaN if unfitted."""
        total, count = dist.sum_(self.total.clone()), dist.sum_(self.count.clone())
        return torch.where(count > 0, total / count.clamp(min=1), float("nan"))
