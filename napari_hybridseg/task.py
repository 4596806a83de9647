"""What is being learned: derived once from a project, read by every part that needs it.

A :class:`Task` says how many input channels the images have, how many structures
(foreground classes) are segmented, and whether the network sees 2D slices or 3D
volumes.  Networks, losses, targets and prediction take their shapes from it, so
none of them assumes two output channels or two spatial axes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import AnnotationError, ConfigError

MAX_CHANNELS = 64
MAX_CLASSES = 255


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
    """

    in_channels: int = 1
    n_classes: int = 1
    spatial_dims: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.in_channels <= MAX_CHANNELS:
            raise ConfigError(f"in_channels must be between 1 and {MAX_CHANNELS}; got {self.in_channels}")
        if not 1 <= self.n_classes <= MAX_CLASSES:
            raise ConfigError(f"n_classes must be between 1 and {MAX_CLASSES}; got {self.n_classes}")
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3; got {self.spatial_dims}")

    @property
    def n_outputs(self) -> int:
        return self.n_classes + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Task:
        return cls(**{k: int(v) for k, v in data.items()})


def task_for(project) -> Task:
    """The task of a project: one foreground class, 2D networks, the images' channel count.

    Raises :class:`AnnotationError` when annotated images differ in channel count.
    """
    channels = {item.n_channels for item in project if item.role != "unlabelled"}
    if len(channels) > 1:
        raise AnnotationError(
            f"images have different channel counts {sorted(channels)}; use one kind of image per project"
        )
    return Task(in_channels=next(iter(channels)) if channels else 1)
