"""From probabilities to what a user keeps: labelled masks on disk, and why a mask is empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import compound_suffix
from ..errors import OutputError
from ..images import ImageMeta, label_suffix_for, strip_suffix, write_image
from .predict import Prediction

PROJECT_FOLDERS = ("images", "strong", "scribbles", "boxes")


def labels_from_probability(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Foreground at ``probability > threshold``, objects numbered by connected components
    (4-connected in 2D, 6-connected in 3D), in 16 bits when they fit."""
    from scipy import ndimage as ndi

    lab, n = ndi.label(probability > threshold, output=np.int32)
    return lab.astype(np.uint16) if n < 65536 else lab


def output_names(name: str, suffix: str, probability: bool, uncertainty: bool) -> list[str]:
    """The files :func:`save_prediction` writes for image ``name``."""
    names = [f"{name}{suffix}"]
    names += [f"{name}_prob{suffix}"] if probability else []
    names += [f"{name}_uncertainty{suffix}"] if uncertainty else []
    return names


def check_output_folder(out: Path, inputs: list[Path]) -> None:
    """Refuse an output folder that is an input, or part of a project's annotations."""
    target = Path(out).resolve()
    for folder in (target, *target.parents):
        if folder.name in PROJECT_FOLDERS and (folder.parent / "images").is_dir():
            raise OutputError(
                f"{out}: lies in the project folder {folder.parent}'s {folder.name}/, where predictions would "
                "replace your images or annotations; choose another --out"
            )
    for given in inputs:
        if given.is_dir() and given.resolve() == target:
            raise OutputError(f"{out}: is an input folder; predictions would replace its images, choose another --out")


def plan_outputs(files: list[Path], out: Path, fmt: str | None, probability=False, uncertainty=False):
    """``{input: [output paths]}``; two inputs whose outputs would share a file are an error
    naming both (nothing is written)."""
    owner: dict[Path, Path] = {}
    plan: dict[Path, list[Path]] = {}
    inputs = {Path(p).resolve() for p in files}
    for path in files:
        suffix = f".{fmt.lstrip('.')}" if fmt else (".nii.gz" if compound_suffix(path).startswith(".nii") else ".tif")
        plan[path] = [Path(out) / n for n in output_names(strip_suffix(path), suffix, probability, uncertainty)]
        for target in plan[path]:
            if target.resolve() in inputs:
                raise OutputError(f"{target} is an input image; predictions would replace it, choose another --out")
            if target in owner:
                raise OutputError(
                    f"{owner[target]} and {path} would both be written to {target}; rename one, or predict them "
                    "into separate folders"
                )
            owner[target] = path
    return plan


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
    maps = [pred.labels(threshold)]
    maps += [pred.probability.astype(np.float32)] if probability else []
    maps += [pred.uncertainty.astype(np.float32)] if uncertainty and pred.uncertainty is not None else []
    names = output_names(name, suffix, probability, uncertainty and pred.uncertainty is not None)
    return [write_image(folder / n, m, out_meta) for n, m in zip(names, maps, strict=True)]


def explain_empty(probability: np.ndarray, threshold: float = 0.5) -> str | None:
    """A sentence saying why a prediction is empty, or ``None`` if it is not."""
    if (probability > threshold).any():
        return None
    top = float(probability.max()) if probability.size else 0.0
    return (
        f"no pixel reached probability {threshold} (highest {top:.2f}): the model has seen too "
        "little foreground; add full masks or boxes on objects like these, or train longer"
    )
