"""From probabilities to what a user keeps: labelled masks on disk, and why a mask is empty."""

from __future__ import annotations

import re
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


def class_labels(probability: np.ndarray, class_probability: np.ndarray) -> np.ndarray:
    """Class ids (uint8, 0 background): each pixel's most probable class, background
    (``1 - probability``) included.  (Thresholding the probability of any structure
    instead gives a pixel to a class wherever the classes together outweigh the
    background, though the background is likelier than each: the medical benchmark's
    smallest structure took six times its size so.)"""
    best = class_probability.max(0)
    ids = class_probability.argmax(0).astype(np.uint8) + 1
    ids[best < 1.0 - probability] = 0  # a tie goes to the class
    return ids


def _file_part(class_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", class_name).strip("-") or "class"


def output_names(
    name: str, suffix: str, probability: bool, uncertainty: bool, class_names: tuple[str, ...] = ()
) -> list[str]:
    """The files :func:`save_prediction` writes for image ``name``: with several
    ``class_names``, one probability file per class (``NAME_prob_<class>``)."""
    names = [f"{name}{suffix}"]
    if probability and len(class_names) > 1:
        names += [f"{name}_prob_{k}-{_file_part(c)}{suffix}" for k, c in enumerate(class_names, start=1)]
    elif probability:
        names += [f"{name}_prob{suffix}"]
    names += [f"{name}_uncertainty{suffix}"] if uncertainty else []
    return names


def check_output_folder(out: Path, inputs: list[Path]) -> None:
    """Refuse an output folder that is an input or holds one (a mask ``a.tif`` of ``a.png``
    would replace the user's own ``a.tif``), or part of a project's annotations."""
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
        if not given.is_dir() and given.resolve().parent == target:
            raise OutputError(
                f"{out}: holds the input {given.name}; predictions would replace files beside it, choose another --out"
            )


def plan_outputs(files: list[Path], out: Path, fmt: str | None, probability=False, uncertainty=False, class_names=()):
    """``{input: [output paths]}``; two inputs whose outputs would share a file are an error
    naming both (nothing is written)."""
    owner: dict[Path, Path] = {}
    plan: dict[Path, list[Path]] = {}
    inputs = {Path(p).resolve() for p in files}
    for path in files:
        suffix = f".{fmt.lstrip('.')}" if fmt else (".nii.gz" if compound_suffix(path).startswith(".nii") else ".tif")
        names = output_names(strip_suffix(path), suffix, probability, uncertainty, tuple(class_names))
        plan[path] = [Path(out) / n for n in names]
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
    class_names: tuple[str, ...] = (),
) -> list[Path]:
    """Write ``NAME.tif``/``NAME.nii.gz`` (labels) and optionally ``NAME_prob``/``NAME_uncertainty``.

    ``fmt`` ``None`` keeps the source format (NIfTI in, NIfTI out with the same affine).
    Returns the written paths.
    """
    folder = Path(folder)
    suffix = f".{fmt.lstrip('.')}" if fmt else label_suffix_for(meta)
    out_meta = ImageMeta(spacing=meta.spacing, affine=meta.affine, format=suffix.lstrip("."))
    maps = [pred.labels(threshold)]
    if probability and pred.class_probability is not None:
        maps += list(pred.class_probability.astype(np.float32, copy=False))
        class_names = class_names or tuple(f"class{k}" for k in range(1, len(pred.class_probability) + 1))
    elif probability:
        maps += [pred.probability.astype(np.float32)]
    maps += [pred.uncertainty.astype(np.float32)] if uncertainty and pred.uncertainty is not None else []
    several = class_names if pred.class_probability is not None else ()
    names = output_names(name, suffix, probability, uncertainty and pred.uncertainty is not None, several)
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


LABEL_TABLES = ("labels.txt", "labels.ctbl")


def write_label_table(folder: str | Path, names: tuple[str, ...], colours: tuple[str, ...] = ()) -> list[Path]:
    """Write the class names and colours of a label map beside it: ``labels.txt`` in
    ITK-SNAP's label description format and ``labels.ctbl``, a 3D Slicer colour table, so
    that both show each class by its name and colour."""
    from ..annotations import LabelClasses
    from ..atomic import atomic_write_text

    classes = LabelClasses(tuple(names), tuple(colours))
    snap = [
        "# ITK-SNAP Label Description File (napari-hybridseg)",
        "# IDX  -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        '    0    0    0    0     0  0  0    "Clear Label"',
    ]
    slicer = ["# Color table file written by napari-hybridseg", f"# {len(classes) + 1} values", "0 background 0 0 0 0"]
    for k, name in enumerate(classes.names, start=1):
        r, g, b = classes.rgb(k)
        quoted = name.replace('"', "'")
        token = re.sub(r"\s+", "_", name)  # a Slicer colour table's names are single words
        snap.append(f'{k:5d}{r:5d}{g:5d}{b:5d}     1  1  1    "{quoted}"')
        slicer.append(f"{k} {token} {r} {g} {b} 255")
    folder = Path(folder)
    paths = [folder / n for n in LABEL_TABLES]
    for path, lines in zip(paths, (snap, slicer)):
        atomic_write_text(path, "\n".join(lines) + "\n")
    return paths
