"""Synthetic scenes: microscopy- and scan-like images with their ground truth, and
whole projects of them with simulated weak labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..annotations import ImageAnnotations, LabelClasses, Project
from ..atomic import atomic_write_text
from ..images import ImageMeta, write_image
from .weak import simulate_weak_labels


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    noise = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / (noise.std() + 1e-8)


# object shapes: (short axis / long axis range, outline wobble, long axis stretch)
SHAPES = {"round": ((0.55, 1.0), 0.25, 1.0), "elongated": ((0.2, 0.33), 0.25, 1.8), "irregular": ((0.5, 1.0), 1.2, 1.0)}


def synth_image(
    rng: np.random.Generator,
    shape: tuple[int, int] = (128, 128),
    kind: str = "microscopy",
    n_objects: int | None = None,
    objects: str = "round",
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image, instance_labels)`` for one 2D image.

    ``kind="microscopy"``: many small textured nuclei-like blobs on a dark
    background, uint16 with a camera offset.  ``kind="medical"``: a few large
    irregular lesion-like regions in textured tissue, float32.
    Objects vary in size, shape and brightness; the image has blur, noise and
    uneven illumination.  ``objects``: ``"round"`` (ellipses with a little wobble),
    ``"elongated"`` (3-5 times longer than wide) or ``"irregular"`` (strongly wobbling
    outlines).
    """
    if objects not in SHAPES:
        raise ValueError(f"unknown objects {objects!r}; use one of {', '.join(SHAPES)}")
    aspect, wobble_amplitude, stretch = SHAPES[objects]
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    labels = np.zeros(shape, np.int32)
    area = h * w
    if kind == "microscopy":
        n = n_objects if n_objects is not None else max(3, int(area / 900 * rng.uniform(0.7, 1.3)))
        rmin, rmax = 4.0, max(6.0, min(h, w) / 9)
    elif kind == "medical":
        n = n_objects if n_objects is not None else int(rng.integers(2, 5))
        rmin, rmax = min(h, w) / 14, min(h, w) / 6
    else:
        raise ValueError(f"unknown kind {kind!r}; use 'microscopy' or 'medical'")
    wobble = _smooth_noise(rng, shape, 4.0)
    brightness = np.zeros(shape, np.float32)
    placed = 0
    for _ in range(n * 8):
        if placed >= n:
            break
        a = rng.uniform(rmin, rmax) * stretch
        b = a * rng.uniform(*aspect)
        cy, cx = rng.uniform(a, h - a), rng.uniform(a, w - a)
        t = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(t) + dy * np.sin(t)) / a
        v = (-dx * np.sin(t) + dy * np.cos(t)) / b
        inside = (u**2 + v**2) < 1.0 + wobble_amplitude * wobble
        if objects == "irregular" and inside.any():  # one piece: the largest
            parts, n_parts = ndi.label(inside)
            inside = parts == 1 + int(np.argmax(np.bincount(parts.ravel())[1:])) if n_parts > 1 else inside
        if not inside.any() or (labels[inside] > 0).mean() > 0.05:
            continue
        placed += 1
        labels[inside & (labels == 0)] = placed
        brightness[labels == placed] = rng.uniform(0.45, 1.0)
    texture = 1.0 + 0.25 * _smooth_noise(rng, shape, 1.5)
    fg = brightness * texture
    illum = 0.75 + 0.25 * (yy / h * rng.uniform(-1, 1) + xx / w * rng.uniform(-1, 1))
    if kind == "microscopy":
        signal = ndi.gaussian_filter(fg, 1.0) * illum + 0.05
        noisy = rng.poisson(np.clip(signal, 0, None) * 600) + rng.normal(0, 8, shape) + 100
        image = np.clip(noisy, 0, 65535).astype(np.uint16)
    else:
        tissue = 0.35 + 0.08 * _smooth_noise(rng, shape, 3.0)
        signal = np.where(labels > 0, 0.35 + 0.5 * fg, tissue)
        signal = ndi.gaussian_filter(signal, 1.2) * illum
        image = (signal + rng.normal(0, 0.04, shape)).astype(np.float32)
    return image, labels


def make_project(
    root: str | Path | None = None,
    n_images: int = 10,
    strong_fraction: float = 0.1,
    weak: str = "both",
    corrupt_fraction: float = 0.3,
    shape: tuple[int, int] = (128, 128),
    kind: str = "microscopy",
    seed: int = 0,
    truth_dir: str | Path | None = None,
    n_objects: int | None = None,
    n_classes: int = 1,
) -> Project:
    """Build (and, with ``root``, write) a synthetic project.

    ``weak``: ``"boxes"``, ``"scribbles"`` or ``"both"`` (weak images alternate).
    ``truth_dir``, when given, receives the ground-truth instance masks and
    ``corruptions.csv`` (image, instance, kind, corrupted, corruption) for benchmarks.
    ``n_objects``: objects per image (by default, as many as suit ``shape``).
    ``n_classes`` above 1: objects are classes by size (class 1 the smallest), the
    project names them ``size1..sizeK``, and masks and ground truth hold class ids.
    """
    if weak not in ("boxes", "scribbles", "both"):
        raise ValueError(f"weak must be 'boxes', 'scribbles' or 'both', not {weak!r}")
    rng = np.random.default_rng(seed)
    n_strong = max(1, int(round(n_images * strong_fraction))) if strong_fraction > 0 else 0
    items, truth, rows = [], {}, []
    for k in range(n_images):
        name = f"img{k:03d}"
        image, labels = synth_image(rng, shape, kind, n_objects)
        classes = _size_classes(labels, n_classes) if n_classes > 1 else None
        truth[name] = labels if classes is None else _class_map(labels, classes)
        item = ImageAnnotations(name=name, image=image)
        if k < n_strong:
            item.strong = truth[name].copy()
        else:
            use_boxes = weak == "boxes" or (weak == "both" and k % 2 == 0)
            weak_labels = simulate_weak_labels(
                labels, rng, corrupt_fraction, boxes=use_boxes, scribbles=not use_boxes, classes=classes
            )
            item.boxes = weak_labels.boxes
            item.scribbles = weak_labels.scribbles
            for (kind_, iid), bad in weak_labels.corrupted.items():
                rows.append([name, iid, kind_, int(bad), weak_labels.corruption.get((kind_, iid), "none")])
        items.append(item)
    names = LabelClasses(tuple(f"size{c}" for c in range(1, n_classes + 1))) if n_classes > 1 else None
    project = Project(items, classes=names)
    if root is not None:
        project.save(root)
    if truth_dir is not None:
        truth_dir = Path(truth_dir)
        for name, labels in truth.items():
            write_image(truth_dir / f"{name}.tif", labels.astype(np.uint16), ImageMeta())
        lines = ["image,instance,kind,corrupted,corruption"] + [",".join(map(str, r)) for r in rows]
        atomic_write_text(truth_dir / "corruptions.csv", "\n".join(lines) + "\n")
    return project


def _size_classes(labels: np.ndarray, n_classes: int) -> dict[int, int]:
    """Each object's class by its area: equal-count bins, class 1 the smallest."""
    areas = np.bincount(labels.ravel())[1:]
    ids = np.flatnonzero(areas) + 1
    order = np.argsort(areas[ids - 1], kind="stable")
    return {int(ids[j]): 1 + (rank * n_classes) // max(1, len(ids)) for rank, j in enumerate(order)}


def _class_map(labels: np.ndarray, classes: dict[int, int]) -> np.ndarray:
    lut = np.zeros(int(labels.max()) + 1, np.uint8)
    for obj, c in classes.items():
        lut[obj] = c
    return lut[labels]


def synth_volume(rng: np.random.Generator, shape: tuple[int, int, int] = (16, 96, 96)) -> tuple[np.ndarray, np.ndarray]:
    """A 3D scan-like volume with a few ellipsoidal lesions and their labels."""
    d, h, w = shape
    zz, yy, xx = np.mgrid[0:d, 0:h, 0:w].astype(np.float32)
    labels = np.zeros(shape, np.int32)
    for i in range(1, int(rng.integers(2, 4)) + 1):
        r = rng.uniform(0.12, 0.2, 3) * np.array([d * 2.5, h, w])
        c = rng.uniform(0.3, 0.7, 3) * np.array(shape)
        inside = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 < 1
        labels[inside & (labels == 0)] = i
    tissue = 0.3 + 0.05 * ndi.gaussian_filter(rng.standard_normal(shape), 2) * 10
    signal = ndi.gaussian_filter(np.where(labels > 0, 0.8, tissue), 1.0)
    image = (signal + rng.normal(0, 0.04, shape)).astype(np.float32)
    return image, labels
