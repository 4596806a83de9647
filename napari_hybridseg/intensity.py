"""Which intensity normalisation a task uses, chosen once from its training images and
recorded in the model file (the arithmetic is :mod:`napari_hybridseg.data.preprocess`).

- ``percentile``: each channel of each image from its 1st and 99.8th percentiles to
  about [0, 1] (microscopy, photographs: intensities without absolute meaning);
- ``zscore``: each channel of each image to zero mean and unit variance (MR and other
  scans whose units differ from scan to scan);
- ``ct``: Hounsfield units are absolute, so every image is clipped to the 0.5th and
  99.5th percentiles of the *annotated foreground* of the training images and scaled by
  that foreground's mean and standard deviation, fixed in the model.  A metal artefact
  or the air around the patient moves none of them.

The last two are the normalisations nnU-Net plans for MR and CT (Isensee et al., Nature
Methods 2021).  ``auto`` (:func:`choose_scheme`) picks one from the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

SCHEMES = ("percentile", "zscore", "ct")
SETTINGS = ("auto", *SCHEMES)
CT_CLIP = (0.5, 99.5)  # percentiles of the training foreground a CT image is clipped to
# Air is -1000 HU: a scan with a tail of values this low is CT (MR and microscopy are >= 0)
CT_AIR_BELOW = -500.0
SAMPLE = 2_000_000  # statistics of 2M voxels suffice
FOREGROUND_SAMPLE = 200_000  # foreground voxels per image for the CT statistics


@dataclass(frozen=True)
class Intensity:
    """The normalisation of a task's images: a scheme of :data:`SCHEMES`, and for ``ct``
    the training foreground's ``(mean, std, low, high)`` per channel."""

    scheme: str = "percentile"
    stats: tuple[tuple[float, float, float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"intensity scheme must be one of {', '.join(SCHEMES)}; got {self.scheme!r}")
        object.__setattr__(self, "stats", tuple(tuple(float(v) for v in c) for c in self.stats))
        if self.scheme == "ct" and (not self.stats or any(len(c) != 4 or not c[1] > 0 for c in self.stats)):
            raise ConfigError("a ct intensity needs (mean, std > 0, low, high) for every channel")

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "stats": [list(c) for c in self.stats]}

    @classmethod
    def from_dict(cls, data) -> Intensity:
        """From :meth:`to_dict`; model files written before schemes existed are ``percentile``."""
        if data is None:
            return cls()
        if not isinstance(data, dict) or not isinstance(data.get("scheme"), str):
            raise ConfigError("intensity must be like {'scheme': 'zscore'}")
        stats = data.get("stats") or ()
        if not isinstance(stats, list | tuple) or not all(isinstance(c, list | tuple) for c in stats):
            raise ConfigError("intensity stats must be a list of [mean, std, low, high] per channel")
        return cls(data["scheme"], tuple(tuple(c) for c in stats))


def sample(values: np.ndarray, limit: int = SAMPLE) -> np.ndarray:
    """At most ``limit`` of ``values`` (flattened, evenly strided), as float64."""
    flat = np.asarray(values).ravel()
    return flat[:: max(1, flat.size // limit)].astype(np.float64)


def looks_like_ct(image: np.ndarray) -> bool:
    """Whether intensities are Hounsfield units: a tail below :data:`CT_AIR_BELOW` (air)."""
    return bool(np.percentile(sample(image), 0.5) <= CT_AIR_BELOW)


def choose_scheme(images) -> str:
    """The scheme for a project's annotated images, from the data: ``ct`` when every one
    holds Hounsfield units, ``zscore`` when every one is a NIfTI scan of other units (MR,
    PET), else ``percentile`` (microscopy, photographs, TIFF stacks).  ``images``:
    ``(array, format)`` pairs."""
    images = list(images)
    if images and all(looks_like_ct(a) for a, _ in images):
        return "ct"
    if images and all(fmt.startswith("nii") for _, fmt in images):
        return "zscore"
    return "percentile"


def ct_statistics(foregrounds) -> tuple[tuple[float, float, float, float], ...]:
    """``(mean, std, low, high)`` per channel of the foreground voxels of the training
    images; ``foregrounds``: one ``(C, N)`` array of voxels per image."""
    parts = [np.stack([sample(ch, FOREGROUND_SAMPLE) for ch in np.asarray(f)]) for f in foregrounds if np.size(f)]
    if not parts:
        raise ConfigError("CT normalisation needs foreground voxels in the full masks; draw a structure in a mask")
    out = []
    for ch in np.concatenate(parts, axis=1):
        low, high = np.percentile(ch, CT_CLIP)
        out.append((float(ch.mean()), float(ch.std()) or 1.0, float(low), float(high)))
    return tuple(out)


def intensity_for(project, setting: str = "auto") -> Intensity:
    """The :class:`Intensity` of a project's task: ``setting`` one of :data:`SETTINGS`
    (``auto`` chooses from the annotated images); ``ct`` measures the foreground of the
    full masks (only their annotated slices)."""
    if setting not in SETTINGS:
        raise ConfigError(f"intensity must be one of {', '.join(SETTINGS)}; got {setting!r}")
    annotated = [item for item in project if item.role != "unlabelled"]
    scheme = choose_scheme((item.image, item.meta.format) for item in annotated) if setting == "auto" else setting
    if scheme != "ct":
        return Intensity(scheme)
    return Intensity("ct", ct_statistics(_foreground(item) for item in annotated if item.strong is not None))


def _foreground(item) -> np.ndarray:
    """``(C, N)``: the voxels of ``item`` inside its full mask's structures."""
    image, strong = np.asarray(item.image), np.asarray(item.strong)
    if item.is_volume and item.strong_slices is not None:
        image, strong = image[item.mask_slices()], strong[item.mask_slices()]
    fg = strong > 0
    if item.n_channels == 1:
        return image[fg][None]
    return np.moveaxis(image[fg], -1, 0)  # (N, C) -> (C, N)
