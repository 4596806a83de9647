"""From probabilities to what a user keeps: labelled masks on disk, and why a mask is empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..images import ImageMeta, label_suffix_for, write_image
from .predict import Prediction


def labels_from_probability(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Foreground at ``probability > threshold``, objects numbered by connected components."""
    from skimage.measure import label

    lab = label(probability > threshold, connectivity=1)
    return lab.astype(np.uint16 if lab.max() < 65536 else np.int32)


def save_prediction(
    pred: Prediction,
    folder: str | Path,
    name: str,
    meta: ImageMeta,
    fmt: str | None = None,
    threshold: float = 0.5,
    probability: bool = False,
    uncertainty: bool = False,
) -> list[Path]:
    """Write ``NAME.tif``/``NAME.nii.gz`` (labels) and optionally ``NAME_prob``/``NAME_uncertainty``.

    ``fmt`` ``None`` keeps the source format (NIfTI in, NIfTI out with the same affine).
    Returns the written paths.
    """
    folder = Path(folder)
    suffix = f".{fmt.lstrip('.')}" if fmt else label_suffix_for(meta)
    out_meta = ImageMeta(spacing=meta.spacing, affine=meta.affine, format=suffix.lstrip("."))
    written = [write_image(folder / f"{name}{suffix}", pred.labels(threshold), out_meta)]
    if probability:
        written.append(write_image(folder / f"{name}_prob{suffix}", pred.probability.astype(np.float32), out_meta))
    if uncertainty and pred.uncertainty is not None:
        written.append(
            write_image(folder / f"{name}_uncertainty{suffix}", pred.uncertainty.astype(np.float32), out_meta)
        )
    return written


def explain_empty(probability: np.ndarray, threshold: float = 0.5) -> str | None:
    """A sentence saying why a prediction is empty, or ``None`` if it is not."""
    if (probability > threshold).any():
        return None
    top = float(probability.max()) if probability.size else 0.0
    return (
        f"no pixel reached probability {threshold} (highest {top:.2f}): the model has seen too "
        "little foreground; add full masks or boxes on objects like these, or train longer"
    )
