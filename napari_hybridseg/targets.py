"""Dense training targets and instance-id maps from strong and weak annotations.

Every training slice gets:

* ``target`` (H, W) int8: 1 foreground, 0 background, -1 ignored by the
  cross-entropy term;
* ``instance`` (H, W) int32: the weak instance each supervised pixel belongs to
  (-1 for strong or unsupervised pixels).  Each pixel belongs to at most one
  instance, so per-instance gradients are one scatter-add (see ``dii.py``);
* ``boxrect`` (H, W) int32 (box-projection target only): the box whose
  projection and affinity terms a pixel takes part in (-1 elsewhere), indexing
  ``box_instance``;
* ``boxcore`` (H, W) bool (box-projection target with ``ellipse`` weight
  updates only): pixels inside the ellipse inscribed in the box that owns them,
  which that update reads as the box's claim of foreground.

Weak targets follow ``docs``: a box is foreground inside (``filled``) or
constrains the mask's projections (``projection``; its region, the box plus a
one-pixel ring for the affinity term, is ignored by the cross-entropy);
pixels outside every box are background only in exhaustive images; scribbles
label their own pixels.  Where boxes overlap, the smaller box owns the overlap.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from .annotations import BACKGROUND_STROKE, Box, ImageAnnotations, Project
from .config import TrainConfig
from .preprocess import normalize


@dataclass(frozen=True)
class Instance:
    """One weak annotation with its own learned weight."""

    image: str
    instance: str  # box id, scribble id, "background" or "image"
    kind: str  # "box", "scribble", "background" or "image"
    signature: str = ""  # changes when the annotation is edited

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.image, self.instance, self.kind)


@dataclass
class TrainSlice:
    name: str
    z: int | None
    image: np.ndarray  # (C, H, W) float32, normalised
    target: np.ndarray  # (H, W) int8
    instance: np.ndarray  # (H, W) int32
    strong: bool
    boxrect: np.ndarray | None = None  # (H, W) int32
    boxcore: np.ndarray | None = None  # (H, W) bool
    image_instances: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class TrainingSet:
    slices: list[TrainSlice]
    instances: list[Instance]
    box_instance: np.ndarray  # box index -> instance index
    in_channels: int

    @property
    def strong(self) -> list[TrainSlice]:
        return [s for s in self.slices if s.strong]

    @property
    def weak(self) -> list[TrainSlice]:
        return [s for s in self.slices if not s.strong]

    def supervised_pixels(self) -> int:
        return int(sum(s.target.size for s in self.slices))


class _Registry:
    def __init__(self) -> None:
        self.instances: list[Instance] = []
        self.index: dict[tuple[str, str, str], int] = {}
        self.box_instance: list[int] = []

    def get(self, inst: Instance) -> int:
        if inst.key not in self.index:
            self.index[inst.key] = len(self.instances)
            self.instances.append(inst)
        return self.index[inst.key]

    def new_box(self, instance_index: int) -> int:
        self.box_instance.append(instance_index)
        return len(self.box_instance) - 1


def _scribble_signature(mask: np.ndarray) -> str:
    return f"{int(mask.sum())}:{zlib.crc32(np.flatnonzero(mask).astype(np.int64).tobytes()):08x}"


def _weak_slice(
    item: ImageAnnotations,
    z: int | None,
    image: np.ndarray,
    boxes: list[Box],
    scribbles: np.ndarray | None,
    cfg: TrainConfig,
    reg: _Registry,
) -> TrainSlice:
    h, w = image.shape[-2:]
    target = np.full((h, w), -1, np.int8)
    instance = np.full((h, w), -1, np.int32)
    projection = cfg.box_target == "projection"
    boxrect = np.full((h, w), -1, np.int32) if projection else None
    ellipse = projection and cfg.uses_dii and cfg.dii_box_target == "ellipse"
    boxcore = np.zeros((h, w), bool) if ellipse else None
    per_image = cfg.granularity == "image"
    image_inst = reg.get(Instance(item.name, "image", "image")) if per_image else None

    def inst(name: str, kind: str, sig: str = "") -> int:
        return image_inst if per_image else reg.get(Instance(item.name, name, kind, sig))

    covered = np.zeros((h, w), bool)
    for box in sorted(boxes, key=lambda b: -b.area):  # smaller boxes drawn last own overlaps
        k = inst(str(box.id), "box", f"{box.z},{box.y0},{box.x0},{box.y1},{box.x1}")
        rect = (slice(box.y0, box.y1), slice(box.x0, box.x1))
        if projection:
            region = (slice(max(box.y0 - 1, 0), box.y1 + 1), slice(max(box.x0 - 1, 0), box.x1 + 1))
            target[region] = -1
            instance[region] = k
            covered[region] = True
            boxrect[rect] = reg.new_box(k)
            if boxcore is not None:
                boxcore[rect] = inscribed_ellipse(box.y1 - box.y0, box.x1 - box.x0)
        else:
            target[rect] = 1
            instance[rect] = k
            covered[rect] = True
    if boxes and item.exhaustive:
        bg = ~covered
        target[bg] = 0
        instance[bg] = inst("background", "background")
    if scribbles is not None:
        bg_stroke = scribbles == BACKGROUND_STROKE
        if bg_stroke.any():
            target[bg_stroke] = 0
            instance[bg_stroke] = inst("background", "background")
        for sid in np.unique(scribbles[scribbles > BACKGROUND_STROKE]):
            stroke = scribbles == sid
            target[stroke] = 1
            instance[stroke] = inst(str(int(sid)), "scribble", _scribble_signature(stroke))
    return TrainSlice(item.name, z, image, target, instance, False, boxrect, boxcore)


def inscribed_ellipse(h: int, w: int) -> np.ndarray:
    """(h, w) bool: the pixels whose centres lie inside the ellipse inscribed in an
    h x w rectangle (a tight box's claim for a convex, roughly elliptical object)."""
    yy = (np.arange(h) + 0.5 - h / 2) / (h / 2)
    xx = (np.arange(w) + 0.5 - w / 2) / (w / 2)
    return yy[:, None] ** 2 + xx[None, :] ** 2 <= 1.0


def build_training_set(project: Project, cfg: TrainConfig) -> TrainingSet:
    """Turn a project into training slices and the table of weak instances."""
    reg = _Registry()
    slices: list[TrainSlice] = []
    channels = {a.n_channels for a in project if a.role != "unlabelled"}
    if len(channels) > 1:
        raise ValueError(f"images have different channel counts {sorted(channels)}; use one kind of image per project")
    for item in project:
        role = item.role
        if role == "unlabelled" or (role == "weak" and not cfg.uses_weak):
            continue
        norm = normalize(item.image, item.axes)
        if role == "strong":
            fg = item.strong > 0
            for z in range(norm.shape[0]) if item.is_volume else [None]:
                img = norm[z] if z is not None else norm
                tgt = (fg[z] if z is not None else fg).astype(np.int8)
                slices.append(TrainSlice(item.name, z, img, tgt, np.full(tgt.shape, -1, np.int32), True))
            continue
        first = len(reg.instances)
        if item.is_volume:
            for z in item.weak_slices():
                slices.append(
                    _weak_slice(
                        item,
                        z,
                        norm[z],
                        [b for b in item.boxes if b.z == z],
                        item.scribbles[z] if item.scribbles is not None else None,
                        cfg,
                        reg,
                    )
                )
        else:
            slices.append(_weak_slice(item, None, norm, item.boxes, item.scribbles, cfg, reg))
        own = np.array([i for i, ins in enumerate(reg.instances) if ins.image == item.name and i >= first], np.int64)
        for s in slices:
            if s.name == item.name:
                s.image_instances = own
    if not any(s.strong for s in slices):
        raise ValueError("no image has a full mask: draw a full mask on at least one image (or a crop of one)")
    return TrainingSet(
        slices, reg.instances, np.asarray(reg.box_instance, np.int64), next(iter(channels)) if channels else 1
    )
