"""How the learned weights are shown: colours, per-label summaries, where an annotation
is, and which image to annotate next.  Plain data in, plain data out (no Qt)."""

from __future__ import annotations

import numpy as np

from ..annotations import parse_stroke_id, slice_strokes


def weight_colors(weights) -> np.ndarray:
    """RGBA colours for weights in [0, 1]: red (ignored) through yellow to green (trusted)."""
    w = np.clip(np.asarray(weights, dtype=float), 0.0, 1.0)
    red = np.where(w < 0.5, 1.0, 2.0 * (1.0 - w))
    green = np.where(w < 0.5, 2.0 * w, 1.0)
    return np.column_stack([red, green, np.zeros_like(w), np.ones_like(w)])


def scribble_label_weights(weights, image: str) -> dict[int, float]:
    """Per scribble label value of ``image``, the lowest weight of its strokes.

    A labels layer colours by value, so strokes sharing a value share a colour: it
    shows the least trusted of them, the one worth a look.
    """
    out: dict[int, float] = {}
    for w in weights:
        if w.image == image and w.kind == "scribble":
            label, _ = parse_stroke_id(w.instance)
            out[label] = min(out.get(label, 1.0), w.weight)
    return out


def stroke_centre(scribbles: np.ndarray, instance: str) -> np.ndarray | None:
    """Array coordinates of the centre of the stroke named ``instance`` (``LABEL@[Z:]Y:X``)."""
    label, anchor = parse_stroke_id(instance)
    if len(anchor) != scribbles.ndim:
        return None
    plane = scribbles[anchor[0]] if scribbles.ndim == 3 else scribbles
    z = anchor[0] if scribbles.ndim == 3 else None
    for stroke in slice_strokes(plane, z):
        if stroke.instance_id == instance:
            ys, xs = np.divmod(stroke.pixels, plane.shape[1])
            centre = [ys.mean(), xs.mean()]
            return np.array(centre if z is None else [z, *centre], float)
    return None


def rank_next(weights, disagreement: dict[str, float] | None = None, top: int = 10) -> list[tuple[float, str, str]]:
    """Where to annotate next: ``(score, image, reason)``, highest score first.

    An image scores by the two networks' mean disagreement on it (where the model is
    unsure) plus how far its least trusted annotation is below 1 (where the labels
    look wrong).
    """
    disagreement = disagreement or {}
    lowest: dict[str, tuple[float, str]] = {}
    for w in weights:
        if w.image not in lowest or w.weight < lowest[w.image][0]:
            lowest[w.image] = (w.weight, f"{w.kind} {w.instance}")
    out = []
    for name in set(lowest) | set(disagreement):
        low, which = lowest.get(name, (1.0, ""))
        unsure = disagreement.get(name, 0.0)
        reasons = []
        if unsure > 0:
            reasons.append(f"disagreement {unsure:.3f}")
        if low < 1.0:
            reasons.append(f"lowest weight {low:.2f} ({which})")
        out.append((float(unsure * 10 + (1.0 - low)), name, ", ".join(reasons) or "no signal yet"))
    out.sort(key=lambda r: -r[0])
    return out[:top]


def unboxed_objects(foreground: np.ndarray, boxes, origin=(0, 0), z: int | None = None) -> tuple[int, int]:
    """``(outside, total)``: how many predicted objects of a 2D ``foreground`` map (a part
    of a slice starting at ``origin``) touch no box of slice ``z``, of how many objects
    of at least a quarter of the median box's area.  Many objects outside every box of
    an image marked exhaustive suggest the user boxed only some: their background is then
    taught where objects are."""
    from scipy import ndimage as ndi

    rects = [(b.y0 - origin[0], b.x0 - origin[1], b.y1 - origin[0], b.x1 - origin[1]) for b in boxes if b.z == z]
    if not rects:
        return 0, 0
    in_box = np.zeros(foreground.shape, bool)
    for y0, x0, y1, x1 in rects:
        in_box[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    labels, n = ndi.label(foreground)
    if n == 0:
        return 0, 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    touched = np.bincount(labels[in_box], minlength=n + 1)[1:] > 0
    min_size = 0.25 * float(np.median([(y1 - y0) * (x1 - x0) for y0, x0, y1, x1 in rects]))
    real = sizes >= min_size
    return int((real & ~touched).sum()), int(real.sum())
