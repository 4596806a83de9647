"""napari reader hooks: NIfTI files and project folders (no napari import needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import compound_suffix
from .bridge import META_KEY, project_layer_data
from .images import read_image, strip_suffix


def _is_project(path: Path) -> bool:
    return path.is_dir() and (path / "images").is_dir()


def get_reader(path):
    """Return a reader for a ``.nii``/``.nii.gz`` file or a project folder, else ``None``."""
    if isinstance(path, list):
        if not path or not all(compound_suffix(p) in (".nii", ".nii.gz") for p in path):
            return None
        return read_nifti_files
    p = Path(path)
    if _is_project(p):
        return read_project
    if compound_suffix(p) in (".nii", ".nii.gz"):
        return read_nifti_files
    return None


def _looks_like_labels(data: np.ndarray) -> bool:
    if not np.issubdtype(data.dtype, np.integer) and data.dtype != np.bool_:
        return False
    sample = data.ravel()[:: max(1, data.size // 200_000)]
    return np.unique(sample).size <= 64 and sample.min() >= 0


def read_nifti_files(path):
    """Read NIfTI files into layers; scale from the voxel spacing, affine in metadata."""
    paths = path if isinstance(path, list) else [path]
    out = []
    for p in paths:
        data, meta = read_image(p)
        kind = "labels" if _looks_like_labels(data) else "image"
        kwargs = {
            "name": strip_suffix(p),
            "scale": meta.napari_scale(data.ndim),
            "metadata": {META_KEY: {"role": None, **meta.to_layer_metadata()}},
        }
        if kind == "image":  # a volume three or four voxels wide is not a colour image
            kwargs["rgb"] = False
        out.append((data, kwargs, kind))
    return out


def read_project(path):
    """Read a project folder: each image with its masks, scribbles and boxes layers."""
    from .annotations import Project

    return project_layer_data(Project.load(path))
