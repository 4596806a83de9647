"""Simulated weak labels: boxes and scribbles drawn from instance masks, in a chosen
annotator style, with a chosen share of them corrupted."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..annotations import Box


@dataclass
class WeakLabels:
    """Simulated weak labels for one image, with which of them are corrupted."""

    boxes: list[Box] = field(default_factory=list)
    scribbles: np.ndarray | None = None
    corrupted: dict[tuple[str, int], bool] = field(default_factory=dict)
    corruption: dict[tuple[str, int], str] = field(default_factory=dict)  # how, for reports


@dataclass(frozen=True)
class AnnotatorStyle:
    """How a simulated annotator draws; each range is drawn from per annotation
    (uniformly; a range of one value costs no random draw, so the default style
    reproduces earlier simulations exactly).

    ``stroke_width``: the diameter of the round brush, in pixels (1: a line; 10: a wide
    brush; as napari's brush size).
    ``stroke_length``: a stroke's half-length as a share of the square root of the
    object's area.  ``stroke_offset``: how far from the object's centre a stroke passes,
    as a share of its radius.  ``box_margin``: pixels a clean box leaves around its
    object on each side (0: tight).  ``background_stroke``: a background stroke's extent
    along each axis as a share of the image side; a range from a negative bound is the
    signed extent itself (the development style's), a positive range its size, in either
    direction.
    """

    stroke_width: tuple[int, int] = (1, 1)
    stroke_length: tuple[float, float] = (0.35, 0.35)
    stroke_offset: tuple[float, float] = (0.0, 0.0)
    box_margin: tuple[int, int] = (0, 0)
    background_stroke: tuple[float, float] = (-0.3, 0.3)


# "development": the simulation the defaults were first chosen on; "thin": 1-3 px lines
# along each object and short background lines; "brush": 5-10 px strokes; "varied":
# every style at random, boxes up to 4 px loose
ANNOTATORS = {
    "development": AnnotatorStyle(),
    "thin": AnnotatorStyle((1, 3), (0.3, 0.6), (0.0, 0.4), (0, 1), (0.05, 0.12)),
    "brush": AnnotatorStyle((5, 10), (0.2, 0.4), (0.0, 0.2), (0, 2), (0.1, 0.3)),
    "varied": AnnotatorStyle((1, 10), (0.15, 0.6), (0.0, 0.6), (0, 4), (0.05, 0.3)),
}


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return lo if lo == hi else float(rng.uniform(lo, hi))


def _integer(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    return lo if lo == hi else int(rng.integers(lo, hi + 1))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def _stroke(shape, p0, p1, width: int = 1) -> np.ndarray:
    from skimage.draw import line

    out = np.zeros(shape, bool)
    rr, cc = line(int(p0[0]), int(p0[1]), int(p1[0]), int(p1[1]))
    keep = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
    out[rr[keep], cc[keep]] = True
    if width > 1:  # a round brush of that diameter
        out = ndi.distance_transform_edt(~out) < width / 2
    return out


def simulate_weak_labels(
    labels: np.ndarray,
    rng: np.random.Generator,
    corrupt_fraction: float = 0.3,
    boxes: bool = True,
    scribbles: bool = False,
    classes: dict[int, int] | None = None,
    style: AnnotatorStyle | None = None,
) -> WeakLabels:
    """Simulate boxes and/or scribbles from instance ``labels``.

    ``classes`` maps each instance to its class (several structures): boxes get that
    class and strokes the value ``1 + class`` (``corrupted`` still numbers strokes in the
    order drawn); without it every stroke has a value of its own from 2.

    Corruptions, each for about ``corrupt_fraction`` of the annotations:
    boxes are shifted by most of their size, made 2-3x too large, or placed on
    empty background; foreground scribbles are drawn on background (a wrong
    object).  Box and scribble ids are unique per image.  ``style``: how the annotator
    draws (:data:`ANNOTATORS`; by default the development style).
    """
    style = style or ANNOTATORS["development"]
    h, w = labels.shape
    out = WeakLabels()
    ids = [int(i) for i in np.unique(labels) if i > 0]
    fg = labels > 0
    next_id = 1
    if boxes:
        for i in ids:
            y0, x0, y1, x1 = _bbox(labels == i)
            corrupt = rng.random() < corrupt_fraction
            how = "none"
            m = _integer(rng, style.box_margin)
            y0, x0, y1, x1 = y0 - m, x0 - m, y1 + m, x1 + m
            if corrupt:
                mode = rng.integers(3)
                how = ("shifted", "loose", "background")[mode]
                bh, bw = y1 - y0, x1 - x0
                if mode == 0:  # shifted
                    sy = int(rng.choice([-1, 1]) * rng.uniform(0.6, 1.0) * bh)
                    sx = int(rng.choice([-1, 1]) * rng.uniform(0.6, 1.0) * bw)
                    y0, y1, x0, x1 = y0 + sy, y1 + sy, x0 + sx, x1 + sx
                elif mode == 1:  # loose
                    f = rng.uniform(2.0, 3.0)
                    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
                    y0, y1 = int(cy - f * bh / 2), int(cy + f * bh / 2)
                    x0, x1 = int(cx - f * bw / 2), int(cx + f * bw / 2)
                else:  # on background: the object keeps its true box, an extra one is wrong
                    out.boxes.append(Box(next_id, y0, x0, y1, x1, cls=classes[i] if classes else 1))
                    out.corrupted[("box", next_id)] = False
                    next_id += 1
                    found = _background_spot(fg, bh, bw, rng)
                    if found is None:
                        continue
                    y0, x0 = found
                    y1, x1 = y0 + bh, x0 + bw
            y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
            if y1 - y0 < 2 or x1 - x0 < 2:
                continue
            out.boxes.append(Box(next_id, y0, x0, y1, x1, cls=classes[i] if classes else 1))
            out.corrupted[("box", next_id)] = bool(corrupt)
            out.corruption[("box", next_id)] = how
            next_id += 1
    if scribbles:
        scr = np.zeros(labels.shape, np.int32)
        interior = ndi.binary_erosion(fg, iterations=2)
        sid = max(next_id, 2)
        for i in ids:
            obj = (labels == i) & interior
            if obj.sum() < 4:
                continue
            corrupt = rng.random() < corrupt_fraction
            ys, xs = np.nonzero(obj)
            cy, cx = ys.mean(), xs.mean()
            length = max(2.0, _uniform(rng, style.stroke_length) * np.sqrt(obj.sum()))
            t = rng.uniform(0, np.pi)
            width = _integer(rng, style.stroke_width)
            off = _uniform(rng, style.stroke_offset) * np.sqrt(obj.sum() / np.pi)
            cy, cx = cy + off * np.cos(t), cx - off * np.sin(t)  # off the centre, across the stroke
            d = np.array([np.sin(t), np.cos(t)]) * length
            stroke = _stroke(labels.shape, (cy - d[0], cx - d[1]), (cy + d[0], cx + d[1]), width) & obj
            if corrupt:
                spot = _background_spot(fg, 7 + width, 7 + width, rng)
                if spot is None:
                    continue
                y0, x0 = spot
                stroke = _stroke(labels.shape, (y0 + 1, x0 + 1), (y0 + 6, x0 + 6), width) & ~fg
            if stroke.sum() == 0:
                continue
            scr[stroke & (scr == 0)] = 1 + classes[i] if classes else sid
            out.corrupted[("scribble", sid)] = bool(corrupt)
            out.corruption[("scribble", sid)] = "background" if corrupt else "none"
            sid += 1
        far_bg = ~ndi.binary_dilation(fg, iterations=4)
        for _ in range(max(2, len(ids) // 3)):
            p0 = rng.uniform([0, 0], [h, w])
            lo, hi = style.background_stroke
            step = rng.uniform(lo, hi, 2) if lo < 0 else rng.choice([-1, 1], 2) * rng.uniform(lo, hi, 2)
            width = _integer(rng, style.stroke_width)
            scr[_stroke(labels.shape, p0, p0 + step * [h, w], width) & far_bg & (scr == 0)] = 1
        out.scribbles = scr
    return out


def _background_spot(fg, bh, bw, rng, tries: int = 50):
    h, w = fg.shape
    if bh >= h or bw >= w:
        return None
    for _ in range(tries):
        y0, x0 = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        if not fg[y0 : y0 + bh, x0 : x0 + bw].any():
            return y0, x0
    return None
