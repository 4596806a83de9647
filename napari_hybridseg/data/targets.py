"""Dense training targets and instance-id maps from strong and weak annotations.

Every training sample (a 2D image, or one annotated slice of a volume) gets:

* ``target`` int8: the class id of each pixel (0 background), -1 where the
  cross-entropy term ignores it;
* ``instance`` int32: the weak instance each supervised pixel belongs to (-1 for
  strong or unsupervised pixels).  Each pixel belongs to at most one instance, so
  per-instance gradients are one scatter-add (see ``training/dii.py``);
* ``boxmap`` int32 (box-projection target only): the box whose projection and
  affinity terms a pixel takes part in (-1 elsewhere), an index into
  ``TrainingSet.box_instance`` and ``box_class``;
* ``boxcore`` bool (box-projection target with ``ellipse`` weight updates only):
  pixels inside the ellipse inscribed in the box that owns them, which that update
  reads as the box's claim.

Class ids come from the project: a full mask's value (any value above 0 in a project
of one structure), a box's ``cls``, a stroke's value minus one (1 is background; in a
project of one structure every value from 2 is the one class).

A box is its class inside (``filled``) or constrains the mask's projections
(``projection``; its region, the box plus a one-pixel ring for the affinity
term, is ignored by the cross-entropy); pixels outside every box are background
only in exhaustively boxed images; every connected scribble stroke labels its own
pixels and is its own instance.  Where boxes overlap, the smaller box owns the
overlap.  Images are taken in name order, so a project gives the same training
set however it was assembled (folder, napari layers, script).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..annotations import Box, ImageAnnotations, Project, slice_strokes, stroke_class
from ..annotations.regions import background_regions
from ..config import TrainConfig
from ..errors import AnnotationError
from ..intensity import Intensity
from ..methods import Method, get_method
from ..protocol import InstanceKey
from ..task import Task, task_for
from .preprocess import normalize, ranges_for


@dataclass(frozen=True)
class InstanceRecord:
    """A weak instance and the signature of its annotation (changes when it is edited)."""

    key: InstanceKey
    signature: str = ""


@dataclass
class TrainingSample:
    name: str
    z: int | None
    image: np.ndarray  # (C, *spatial) float32, normalised
    target: np.ndarray  # (*spatial) int8
    instance: np.ndarray  # (*spatial) int32
    strong: bool
    boxmap: np.ndarray | None = None  # (*spatial) int32
    boxcore: np.ndarray | None = None  # (*spatial) bool
    image_instances: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.target.shape


@dataclass
class TrainingSet:
    samples: list[TrainingSample]
    instances: list[InstanceRecord]
    box_instance: np.ndarray  # (n_boxes,) instance index of every box
    box_class: np.ndarray  # (n_boxes,) class of every box
    task: Task

    @property
    def strong(self) -> list[TrainingSample]:
        return [s for s in self.samples if s.strong]

    @property
    def weak(self) -> list[TrainingSample]:
        return [s for s in self.samples if not s.strong]

    def same_as(self, other: TrainingSet) -> bool:
        """Whether ``other`` teaches exactly what this set teaches (same instances and
        signatures, the same pixels of every image and map)."""
        if self.task != other.task or self.instances != other.instances or len(self.samples) != len(other.samples):
            return False
        if not (
            np.array_equal(self.box_instance, other.box_instance) and np.array_equal(self.box_class, other.box_class)
        ):
            return False
        for a, b in zip(self.samples, other.samples):
            if (a.name, a.z, a.strong) != (b.name, b.z, b.strong):
                return False
            for name in ("image", "target", "instance", "boxmap", "boxcore"):
                x, y = getattr(a, name), getattr(b, name)
                if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y)):
                    return False
        return True


class InstanceRegistry:
    """The weak instances of one training set, in the order they are met, and its boxes."""

    def __init__(self) -> None:
        self.instances: list[InstanceRecord] = []
        self.index: dict[InstanceKey, int] = {}
        self.box_instance: list[int] = []
        self.box_class: list[int] = []

    def get(self, key: InstanceKey, signature: str = "") -> int:
        if key not in self.index:
            self.index[key] = len(self.instances)
            self.instances.append(InstanceRecord(key, signature))
        return self.index[key]

    def new_box(self, instance_index: int, cls: int) -> int:
        self.box_instance.append(instance_index)
        self.box_class.append(cls)
        return len(self.box_instance) - 1


def inscribed_ellipse(h: int, w: int, slack: float = 0.0) -> np.ndarray:
    """(h, w) bool: the pixels whose centres lie inside the ellipse inscribed in an
    h x w rectangle (a tight box's claim for a convex, roughly elliptical object), after
    the rectangle has lost ``slack`` pixels on every side (at most a quarter of each
    side), so that a box drawn a few pixels loose makes the same claim as a tight one."""
    ry = h / 2 - min(slack, h / 4)
    rx = w / 2 - min(slack, w / 4)
    yy = (np.arange(h) + 0.5 - h / 2) / ry
    xx = (np.arange(w) + 0.5 - w / 2) / rx
    return yy[:, None] ** 2 + xx[None, :] ** 2 <= 1.0


def weak_sample(
    name: str,
    exhaustive: bool,
    z: int | None,
    image: np.ndarray,
    boxes: list[Box],
    scribbles: np.ndarray | None,
    cfg: TrainConfig,
    ellipse: bool,
    reg: InstanceRegistry,
    n_classes: int,
) -> TrainingSample:
    h, w = image.shape[-2:]
    target = np.full((h, w), -1, np.int8)
    instance = np.full((h, w), -1, np.int32)
    projection = cfg.box_target == "projection"
    boxmap = np.full((h, w), -1, np.int32) if projection else None
    boxcore = np.zeros((h, w), bool) if projection and ellipse else None
    image_inst = reg.get(InstanceKey(name, "image", "image")) if cfg.granularity == "image" else None

    def inst(what: str, kind: str, sig: str = "") -> int:
        return image_inst if image_inst is not None else reg.get(InstanceKey(name, what, kind), sig)

    covered = np.zeros((h, w), bool)
    for box in sorted(boxes, key=lambda b: -b.area):  # smaller boxes drawn last own overlaps
        # a box moved or given another class is a new annotation (its weight starts again)
        k = inst(str(box.id), "box", f"{box.z},{box.y0},{box.x0},{box.y1},{box.x1},{box.cls}")
        rect = (slice(box.y0, box.y1), slice(box.x0, box.x1))
        if projection:
            region = (slice(max(box.y0 - 1, 0), box.y1 + 1), slice(max(box.x0 - 1, 0), box.x1 + 1))
            target[region] = -1
            instance[region] = k
            covered[region] = True
            boxmap[rect] = reg.new_box(k, box.cls)
            if boxcore is not None:
                boxcore[rect] = inscribed_ellipse(box.y1 - box.y0, box.x1 - box.x0, cfg.dii_box_slack)
        else:
            target[rect] = box.cls
            instance[rect] = k
            covered[rect] = True
    if boxes and exhaustive:
        bg = ~covered
        target[bg] = 0
        if image_inst is not None:
            instance[bg] = image_inst
        else:  # the background in regions, each its own annotation (see annotations.regions)
            index, names = background_regions((h, w), cfg.background_tile, z)
            ids = np.full(len(names), -1, np.int32)
            for r in np.unique(index[bg]):
                ids[r] = reg.get(InstanceKey(name, names[r], "background"))
            instance[bg] = ids[index[bg]]
    if scribbles is not None:
        for stroke in slice_strokes(scribbles, z):
            target.flat[stroke.pixels] = stroke_class(stroke.label, n_classes)
            instance.flat[stroke.pixels] = inst(stroke.instance_id, "scribble", stroke.signature)
    return TrainingSample(name, z, image, target, instance, False, boxmap, boxcore)


def _strong_samples(item: ImageAnnotations, norm: np.ndarray, n_classes: int) -> list[TrainingSample]:
    fg = (item.strong > 0).astype(np.int8) if n_classes == 1 else item.strong.astype(np.int8)
    out = []
    for z in item.mask_slices() if item.is_volume else [None]:  # a sparse mask: its annotated slices only
        img = norm[z] if z is not None else norm
        tgt = fg[z] if z is not None else fg
        out.append(TrainingSample(item.name, z, img, tgt, np.full(tgt.shape, -1, np.int32), True))
    return out


def as_volume(name: str, image: np.ndarray, slices: list[TrainingSample], strong: bool) -> TrainingSample:
    """One 3D sample of a volume (for a 3D network; ``image`` is ``(C, Z, H, W)``) from
    its per-slice samples: each slice's maps at its place, unsupervised (-1) on every
    other slice."""
    shape = image.shape[1:]

    def stack(attr: str, fill, dtype):
        if all(getattr(s, attr) is None for s in slices):
            return None
        out = np.full(shape, fill, dtype)
        for s in slices:
            if getattr(s, attr) is not None:
                out[s.z] = getattr(s, attr)
        return out

    target, instance = stack("target", -1, np.int8), stack("instance", -1, np.int32)
    volume = TrainingSample(name, None, image, target, instance, strong)
    volume.boxmap, volume.boxcore = stack("boxmap", -1, np.int32), stack("boxcore", False, bool)
    return volume


def build_training_set(
    project: Project, cfg: TrainConfig, method: Method | None = None, intensity: Intensity | None = None
) -> TrainingSet:
    """Turn a project into training samples and the table of weak instances; images are
    normalised by ``intensity`` where given (a running model's), else as ``cfg`` says."""
    method = method or get_method(cfg.method)
    task = task_for(project, cfg.network, cfg.depth, intensity or cfg.intensity)
    ellipse = method.learns_weights and cfg.dii_box_target == "ellipse"
    reg = InstanceRegistry()
    samples: list[TrainingSample] = []
    for name in sorted(project.images):
        item = project[name]
        role = item.role
        if role == "unlabelled" or (role == "weak" and not method.uses_weak):
            continue
        norm = normalize(item.image, item.axes, ranges=ranges_for(task.intensity, item.image, item.axes))
        # a 3D network sees the volume whole, (C, Z, H, W), with each slice's maps in place
        whole = np.ascontiguousarray(np.moveaxis(norm, 1, 0)) if task.spatial_dims == 3 else None
        if role == "strong":
            strong = _strong_samples(item, norm, task.n_classes)
            samples.extend(strong if whole is None else [as_volume(name, whole, strong, True)])
            if not (item.is_volume and item.strong_slices is not None and method.uses_weak):
                continue  # a volume masked on some slices may carry boxes and strokes on others
        first = len(reg.instances)
        own = []
        for z in item.weak_slices() if item.is_volume else [None]:
            boxes = [b for b in item.boxes if b.z == z]
            scribbles = item.scribbles if z is None or item.scribbles is None else item.scribbles[z]
            plane = norm if z is None else norm[z]
            own.append(
                weak_sample(name, item.exhaustive, z, plane, boxes, scribbles, cfg, ellipse, reg, task.n_classes)
            )
        if whole is not None and own:
            own = [as_volume(name, whole, own, False)]
        mine = np.arange(first, len(reg.instances), dtype=np.int64)
        for s in own:
            s.image_instances = mine
        samples.extend(own)
    if not any(s.strong for s in samples):
        raise AnnotationError("no image has a full mask: draw a full mask on at least one image (or a crop of one)")
    return TrainingSet(
        samples,
        reg.instances,
        np.asarray(reg.box_instance, np.int64),
        np.asarray(reg.box_class, np.int64),
        task,
    )
