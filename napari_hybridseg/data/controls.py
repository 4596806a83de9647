"""Control annotations: boxes, strokes and background regions that the full masks imply.

DII asks whether a weak annotation teaches what the full masks teach.  How a perfectly
good annotation scores depends on the data, the object shapes, the stroke style and how
far the training has gone, so a raw score has no fixed meaning.  Controls give it one:
from every object of a full mask the annotations a careful user would have drawn are
derived (its tight box, a stroke over it), and the mask's background outside those
boxes is cut into the same regions as a weak image's background.  They are scored exactly
as the user's annotations are (see ``training/dii.py``), and a user's annotation is judged
by how much worse it scores than its controls.

Controls are never trained on; they are only read by the weight updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..annotations import Box
from ..config import TrainConfig
from .targets import InstanceRegistry, TrainingSample, TrainingSet, as_volume, weak_sample

# an object smaller than this (pixels on one slice) makes no control: too few pixels to score
MIN_OBJECT_PIXELS = 9


@dataclass
class ControlSet:
    """Control samples over the strong images, with the strong target of each (the
    labels whose own gradient a control must not be compared with)."""

    tset: TrainingSet  # strong samples plus control samples (as "weak" samples)
    strong_targets: list[np.ndarray]  # per control sample, the full mask's target


def _slice_controls(target: np.ndarray, z: int | None, n_classes: int) -> tuple[list[Box], np.ndarray]:
    """Tight boxes and strokes of the objects of one slice's full mask.  A control stroke
    paints its whole object: its score is that of the object's average pixel, which a
    stroke anywhere inside the object, thin or wide, along the core or not, scores about
    as well as or better than."""
    boxes: list[Box] = []
    strokes = np.zeros(target.shape, np.int32)
    for cls in range(1, n_classes + 1):
        comps, n = ndi.label(target == cls, structure=np.ones((3, 3), bool))  # as strokes are split
        for k, region in enumerate(ndi.find_objects(comps), start=1):
            if region is None:
                continue
            component = comps[region] == k
            if component.sum() < MIN_OBJECT_PIXELS:
                continue
            ys, xs = region
            boxes.append(Box(len(boxes), ys.start, xs.start, ys.stop, xs.stop, z, cls))
            strokes[region][component] = cls + 1  # a stroke's value is 1 + its class
    return boxes, strokes


def _masked(sample: TrainingSample, target: np.ndarray) -> TrainingSample:
    """Nothing of a control lies where the full mask says nothing (sparse slices)."""
    unknown = target < 0
    sample.target[unknown] = -1
    sample.instance[unknown] = -1
    return sample


def build_controls(tset: TrainingSet, cfg: TrainConfig, ellipse: bool) -> ControlSet | None:
    """Controls for every strong sample of ``tset``: one sample of boxes (with the
    background outside them in regions) and one of strokes per strong sample, so that
    a box and the stroke in it are separate instances.  ``None`` if there are none."""
    n_classes = tset.task.n_classes
    reg = InstanceRegistry()
    samples: list[TrainingSample] = []
    targets: list[np.ndarray] = []
    for s in tset.strong:
        volume = s.image.ndim == 4
        planes = [z for z in range(s.target.shape[0]) if (s.target[z] >= 0).any()] if volume else [None]
        by_kind: tuple[list, list] = ([], [])
        for z in planes:
            tgt = s.target[z] if volume else s.target
            image = s.image[:, z] if volume else s.image
            z_key = z if volume else s.z
            boxes, strokes = _slice_controls(tgt, z_key, n_classes)
            name = f"{s.name}#{z_key}" if z_key is not None else s.name
            box_sample = weak_sample(name, True, z_key, image, boxes, None, cfg, ellipse, reg, n_classes)
            stroke_sample = weak_sample(name, False, z_key, image, [], strokes, cfg, ellipse, reg, n_classes)
            for out, made in zip(by_kind, (box_sample, stroke_sample)):
                out.append(_masked(made, tgt))
        for made in by_kind:
            if not made:
                continue
            samples.append(as_volume(s.name, s.image, made, False) if volume else made[0])
            targets.append(s.target)
    if not reg.instances:
        return None
    box_instance = np.asarray(reg.box_instance, np.int64)
    box_class = np.asarray(reg.box_class, np.int64)
    return ControlSet(TrainingSet(tset.strong + samples, reg.instances, box_instance, box_class, tset.task), targets)
