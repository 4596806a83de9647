"""What is being learned: derived once from a project, read by every part that needs it.

A :class:`Task` says how many input channels the images have, how many structures
(foreground classes) are segmented, and whether the network sees 2D slices or 3D
volumes.  Networks, losses, targets and prediction take their shapes from it, so
none of them assumes two output channels or two spatial axes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from .errors import AnnotationError, ConfigError
from .intensity import Intensity, intensity_for
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
    pools
        A 3D network's pooling kernel per level (see :func:`pool_kernels`); empty: 2 on
        every axis at every level.
    class_colours
        ``#rrggbb`` display colours of classes ``1..n_classes`` where the project sets them
        (empty otherwise): label tables written with the model's predictions keep them.
    intensity
        How images are normalised (:class:`~napari_hybridseg.intensity.Intensity`), for
        training and for every prediction with the model.
    """

    in_channels: int = 1
    n_classes: int = 1
    spatial_dims: int = 2
    class_names: tuple[str, ...] = ()
    pools: tuple[tuple[int, ...], ...] = ()
    intensity: Intensity = Intensity()
    class_colours: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.in_channels <= MAX_CHANNELS:
            raise ConfigError(f"in_channels must be between 1 and {MAX_CHANNELS}; got {self.in_channels}")
        if not 1 <= self.n_classes <= MAX_CLASSES:
            raise ConfigError(f"n_classes must be between 1 and {MAX_CLASSES}; got {self.n_classes}")
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3; got {self.spatial_dims}")
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        object.__setattr__(self, "pools", tuple(tuple(int(v) for v in k) for k in self.pools))
        if any(len(k) != self.spatial_dims or set(k) - {1, 2} for k in self.pools):
            raise ConfigError(f"pools must be kernels of {self.spatial_dims} values, each 1 or 2; got {self.pools}")
        if self.class_names and len(self.class_names) != self.n_classes:
            raise ConfigError(f"{len(self.class_names)} class names for {self.n_classes} classes")
        object.__setattr__(self, "class_colours", tuple(str(c) for c in self.class_colours))
        if self.class_colours and len(self.class_colours) != len(self.class_names):
            raise ConfigError(f"{len(self.class_colours)} class colours for {len(self.class_names)} named classes")
        if not all(re.fullmatch(r"#[0-9a-fA-F]{6}", c) for c in self.class_colours):
            raise ConfigError(f"class colours must be #rrggbb; got {list(self.class_colours)}")

    @property
    def n_outputs(self) -> int:
        return self.n_classes + 1

    def to_dict(self) -> dict:
        return {**asdict(self), "intensity": self.intensity.to_dict()}

    def name_of(self, class_id: int) -> str:
        if class_id == 0:
            return "background"
        return self.class_names[class_id - 1] if self.class_names else f"class {class_id}"

    @property
    def label_names(self) -> tuple[str, ...]:
        """Names of the ids a label map of several classes holds (1..K); empty for one
        structure, whose masks number objects instead."""
        return tuple(self.name_of(k) for k in range(1, self.n_classes + 1)) if self.n_classes > 1 else ()

    @property
    def label_colours(self) -> tuple[str, ...]:
        """The colours of :attr:`label_names` where the project set them (else empty:
        the default palette)."""
        return self.class_colours if self.n_classes > 1 else ()

    @classmethod
    def from_dict(cls, data: dict) -> Task:
        known = {"in_channels", "n_classes", "spatial_dims"}
        names = data.get("class_names") or ()
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise ConfigError("class_names must be a list of names")
        pools = data.get("pools") or ()
        if not isinstance(pools, list | tuple) or not all(
            isinstance(k, list | tuple) and all(isinstance(v, int) for v in k) for k in pools
        ):
            raise ConfigError("pools must be a list of kernels, like [[1, 2, 2], [2, 2, 2]]")
        return cls(
            **{k: int(v) for k, v in data.items() if k in known},
            class_names=tuple(names),
            pools=tuple(pools),
            intensity=Intensity.from_dict(data.get("intensity")),
            class_colours=tuple(data.get("class_colours") or ()),
        )


def pool_kernels(spacing, depth: int) -> tuple[tuple[int, ...], ...]:
    """Pooling kernels of a 3D U-Net for voxels of ``spacing`` (z, y, x): at each level an
    axis is pooled only while its spacing is under twice the finest one, and a pooled
    axis's spacing doubles.  Thick slices (5 mm under 1 mm pixels) are so pooled in-plane
    until the voxels are near-isotropic, as nnU-Net plans its networks (Isensee et al.,
    Nature Methods 2021)."""
    current = [float(v) for v in spacing]
    kernels = []
    for _ in range(depth):
        finest = min(current)
        kernel = tuple(2 if v < 2 * finest else 1 for v in current)
        current = [v * k for v, k in zip(current, kernel)]
        kernels.append(kernel)
    return tuple(kernels)


def spatial_dims_for(network: str) -> int:
    """The network ``auto`` stands for: 2D.  On the medical benchmark (BENCHMARKS.md,
    section 6) a 2D network scored higher than a 3D one at the same number of steps in
    three of four comparisons on a GPU and six of seven on a 2-core CPU, at the same time
    per run on the GPU and less on the CPU.  ``3d`` is chosen explicitly."""
    return 3 if network == "3d" else 2


def task_for(project, network: str = "auto", depth: int = 3, intensity: str | Intensity = "auto") -> Task:
    """The task of a project: its classes (one foreground class when it names none), the
    images' channel count, a 2D network or (``network="3d"``) a 3D one whose pooling
    follows the median voxel spacing of the annotated volumes, and the intensity
    normalisation (``intensity``: a scheme, or ``auto`` for the project's own setting,
    else one chosen from the data, see :func:`~napari_hybridseg.intensity.intensity_for`;
    or an :class:`~napari_hybridseg.intensity.Intensity` to keep, such as a running
    model's).

    Raises :class:`AnnotationError` when annotated images differ in channel count, or
    when a 3D network is asked for an annotated 2D image.
    """
    annotated = [item for item in project if item.role != "unlabelled"]
    channels = {item.n_channels for item in annotated}
    if len(channels) > 1:
        raise AnnotationError(
            f"images have different channel counts {sorted(channels)}; use one kind of image per project"
        )
    classes = getattr(project, "classes", None)
    dims, pools = spatial_dims_for(network), ()
    if dims == 3:
        flat = [item.name for item in annotated if not item.is_volume]
        if flat:
            raise AnnotationError(f"{flat[0]}: a 3D network trains on volumes and this image is 2D; use --network 2d")
        spacings = [item.meta.napari_scale(3) for item in annotated]
        pools = pool_kernels(np.median(np.array(spacings), axis=0) if spacings else (1.0, 1.0, 1.0), depth)
    return Task(
        in_channels=next(iter(channels)) if channels else 1,
        n_classes=len(classes) if classes is not None else 1,
        spatial_dims=dims,
        class_names=tuple(classes.names) if classes is not None else (),
        class_colours=tuple(classes.colours) if classes is not None else (),
        pools=pools,
        intensity=intensity
        if isinstance(intensity, Intensity)
        else intensity_for(project, _setting(project, intensity)),
    )


def _setting(project, intensity: str) -> str:
    """A training option other than ``auto`` wins over the project's ``intensity``."""
    own = getattr(project, "intensity", None)
    return own if intensity == "auto" and own else intensity
