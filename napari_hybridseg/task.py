"""What is being learned: derived once from a project, read by every part that needs it.

A :class:`Task` says how many input channels the images have, how many structures
(foreground classes) are segmented, and whether the network sees 2D slices or 3D
volumes.  Networks, losses, targets and prediction take their shapes from it, so
none of them assumes two output channels or two spatial axes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import AnnotationError, ConfigError
from .limits import MAX_CLASSES

MAX_CHANNELS = 64


@dataclass(frozen=True)
class Task:
    """Attributes
    ----------
    in_channels
        Channels of every image (1 for grey, 3 for RGB, ...).
    n_classes
        Foreground classes; the network has ``n_classes + 1`` outputs (0 is background).
    spatial_dims
        2: the network sees 2D images and the slices of volumes; 3: whole volumes.
    class_names
        Names of classes ``1..n_classes`` where the project names them (empty otherwise).
    """

    in_channels: int = 1
    n_classes: int = 1
    spatial_dims: int = 2
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.in_channels <= MAX_CHANNELS:
            raise ConfigError(f"in_channels must be between 1 and {MAX_CHANNELS}; got {self.in_channels}")
        if not 1 <= self.n_classes <= MAX_CLASSES:
            raise ConfigError(f"n_classes must be between 1 and {MAX_CLASSES}; got {self.n_classes}")
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3; got {self.spatial_dims}")
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        if self.class_names and len(self.class_names) != self.n_classes:
            raise ConfigError(f"{len(self.class_names)} class names for {self.n_classes} classes")

    @property
    def n_outputs(self) -> int:
        return self.n_classes + 1

    def to_dict(self) -> dict:
        return asdict(self)

    def name_of(self, class_id: int) -> str:
        if class_id == 0:
            return "background"
        return self.class_names[class_id - 1] if self.class_names else f"class {class_id}"

    @property
    def label_names(self) -> tuple[str, ...]:
        """Names of the ids a label map of several classes holds (1..K); empty for one
        structure, whose masks number objects instead."""
        return tuple(self.name_of(k) for k in range(1, self.n_classes + 1)) if self.n_classes > 1 else ()

    @classmethod
    def from_dict(cls, data: dict) -> Task:
        known = {"in_channels", "n_classes", "spatial_dims"}
        names = data.get("class_names") or ()
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise ConfigError("class_names must be a list of names")
        return cls(**{k: int(v) for k, v in data.items() if k in known}, class_names=tuple(names))


def task_for(project) -> Task:
    """The task of a project: its classes (one foreground class when it names none), 2D
    networks, the images' channel count.

    Raises :class:`AnnotationError` when annotated images differ in channel count.
    """
    channels = {item.n_channels for item in project if item.role != "unlabelled"}
    if len(channels) > 1:
        raise AnnotationError(
            f"images have different channel counts {sorted(channels)}; use one kind of image per project"
        )
    classes = getattr(project, "classes", None)
    return Task(
        in_channels=next(iter(channels)) if channels else 1,
        n_classes=len(classes) if classes is not None else 1,
        class_names=tuple(classes.names) if classes is not None else (),
    )
