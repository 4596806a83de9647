"""What the training loop and whatever drives it say to each other.

Commands go to the loop, events come out of it.  Every payload is plain data:
Python scalars, strings, tuples, lists, dicts, NumPy arrays, and the annotation
snapshot of :class:`UpdateProject` (dataclasses of NumPy arrays).  No closures,
no tensors, no open files: a command or an event can sit in a queue, cross a
pipe as a pickle, or be written to disk, so the same loop runs in a thread, a
child process, under torchrun, or on another machine.

This module imports only NumPy and the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


class InstanceKey(NamedTuple):
    """One weak annotation, in the same form from the napari layer to ``weights.csv``.

    Attributes
    ----------
    image
        The image's name (its file name without extension).
    instance
        ``"7"`` for box 7; ``"2@14:30"`` for the connected scribble stroke of label 2
        whose first pixel (in raster order) is at y 14, x 30 (``"2@5:14:30"`` on slice 5
        of a volume); ``"background"`` for the region outside every box of an image
        whose objects are all boxed; ``"image"`` for a whole weak image (one weight per
        image, as in the paper).
    kind
        ``"box"``, ``"scribble"``, ``"background"`` or ``"image"``.
    """

    image: str
    instance: str
    kind: str


# -- commands -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Pause:
    """Stop between steps until :class:`Resume` or :class:`Stop`."""


@dataclass(frozen=True)
class Resume:
    """Continue after :class:`Pause`."""


@dataclass(frozen=True)
class Stop:
    """Finish after the current step: checkpoint, model and weights are written."""


@dataclass(frozen=True)
class UpdateProject:
    """Train on new annotations from the next step.

    ``project`` is an immutable snapshot (a ``napari_hybridseg.annotations.Project``
    whose arrays are read-only copies).  Unchanged annotations keep their weights;
    new or edited ones start at 1; pins stay.
    """

    project: object


@dataclass(frozen=True)
class Pin:
    """Fix an instance's weight (1: trust, 0: ignore); ``value=None`` unpins."""

    key: InstanceKey
    value: float | None


@dataclass(frozen=True)
class RequestPreview:
    """Predict ``image`` (slice ``z`` of a volume) at the next step and then every
    ``every`` steps (0: once); ``image=None`` stops previews.  ``region``, the part on
    screen as ``((y0, y1), (x0, x1))`` in the image's pixels, limits the prediction to it
    (``None``: the whole image or slice)."""

    image: str | None
    z: int | None = None
    every: int = 0
    region: tuple[tuple[int, int], tuple[int, int]] | None = None


# -- events -------------------------------------------------------------------------------
@dataclass
class StartedEvent:
    device: str
    steps: int
    start_step: int
    n_instances: int
    summary: dict
    dii_schedule: tuple[int, int] | None = None  # (warm-up, interval) in steps
    dii_lr: float | None = None


@dataclass
class StepEvent:
    step: int
    total: int
    losses: dict
    elapsed: float
    lr: float


@dataclass
class InstanceWeight:
    key: InstanceKey
    weight: float
    pinned: bool = False

    @property
    def image(self) -> str:
        return self.key.image

    @property
    def instance(self) -> str:
        return self.key.instance

    @property
    def kind(self) -> str:
        return self.key.kind


@dataclass
class WeightsEvent:
    step: int
    weights: list[InstanceWeight] = field(default_factory=list)


@dataclass
class PreviewEvent:
    step: int
    image: str
    z: int | None
    probability: np.ndarray
    uncertainty: np.ndarray | None
    origin: tuple[int, int] | None = None  # where the maps start in the image (y, x); None: they cover it
    classes: np.ndarray | None = None  # uint8 class ids, in a project of several classes


@dataclass
class PausedEvent:
    step: int
    paused: bool


@dataclass
class AnnotationsUpdatedEvent:
    """The loop trains on new annotations from this step; or, with ``problem``, it
    refused them (one line saying why) and goes on with the previous ones."""

    step: int
    n_instances: int
    problem: str | None = None


@dataclass
class NoticeEvent:
    """Something the user should know that does not stop training (one line)."""

    step: int
    message: str


@dataclass
class CheckpointEvent:
    step: int
    path: str


@dataclass
class FinishedEvent:
    step: int
    run_dir: str | None
    stopped: bool
    elapsed: float


@dataclass
class ErrorEvent:
    step: int
    message: str
    traceback: str = ""


FINAL_EVENTS = (FinishedEvent, ErrorEvent)


# -- events as JSON lines (a run followed through its folder) ------------------------------
EVENTS = {
    cls.__name__: cls
    for cls in (
        StartedEvent,
        StepEvent,
        WeightsEvent,
        PreviewEvent,
        PausedEvent,
        AnnotationsUpdatedEvent,
        NoticeEvent,
        CheckpointEvent,
        FinishedEvent,
        ErrorEvent,
    )
}


def event_to_record(event) -> dict:
    """A JSON-ready dict of an event (a preview's arrays are not included: they travel
    in a file beside the record)."""
    if isinstance(event, WeightsEvent):
        data = {"step": event.step, "weights": [[*w.key, w.weight, w.pinned] for w in event.weights]}
    elif isinstance(event, PreviewEvent):
        data = {"step": event.step, "image": event.image, "z": event.z, "origin": event.origin}
    else:
        data = dict(event.__dict__)
    return {"type": type(event).__name__, **data}


def event_from_record(record: dict, arrays: dict | None = None):
    """The event of :func:`event_to_record`; ``arrays`` holds a preview's maps.  Raises
    ``ValueError`` for a record that is not an event."""
    if not isinstance(record, dict) or record.get("type") not in EVENTS:
        raise ValueError(f"not an event record: {str(record)[:80]}")
    data = {k: v for k, v in record.items() if k != "type"}
    cls = EVENTS[record["type"]]
    try:
        if cls is WeightsEvent:
            weights = [InstanceWeight(InstanceKey(*w[:3]), float(w[3]), bool(w[4])) for w in data["weights"]]
            return WeightsEvent(int(data["step"]), weights)
        if cls is PreviewEvent:
            arrays = arrays or {}
            unc = arrays.get("uncertainty")
            origin = data.get("origin")
            origin = tuple(int(v) for v in origin) if origin is not None else None
            probability, classes = arrays["probability"], arrays.get("classes")
            return PreviewEvent(int(data["step"]), data["image"], data["z"], probability, unc, origin, classes)
        if cls is StartedEvent and data.get("dii_schedule") is not None:
            data["dii_schedule"] = tuple(data["dii_schedule"])
        return cls(**data)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"malformed {record['type']} record ({exc})") from None
