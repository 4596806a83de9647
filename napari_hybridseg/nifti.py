"""NIfTI reading and writing, with the axis convention napari uses.

NIfTI stores voxels indexed ``(i, j, k)``, conventionally x, y, z.  napari and
NumPy image code index ``(z, y, x)``.  We therefore *reverse* the axes on read
and reverse them back on write, so that a round trip is exact:

=================  ==============  ===================
on disk (NIfTI)    in memory       napari layer scale
=================  ==============  ===================
``(x, y)``         ``(y, x)``      ``(dy, dx)``
``(x, y, 1)``      ``(y, x)``      ``(dy, dx)``
``(x, y, z)``      ``(z, y, x)``   ``(dz, dy, dx)``
=================  ==============  ===================

The 4x4 affine is kept untouched in :class:`ImageMeta` and written back as it
was, so a mask predicted for a scan lines up with the scan in any viewer.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import ImageReadError, reason
from .limits import check_declared_size


def read_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a NIfTI file and return ``(array, affine, spacing)`` in napari order."""
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
        shape = tuple(img.header.get_data_shape())
    except Exception as exc:  # nibabel raises many types for damaged files
        raise ImageReadError(f"{path}: cannot read NIfTI file ({reason(exc)})") from None
    check_declared_size(path, shape)
    # trailing axes of one (x, y, z, 1), as written by many tools, are not dimensions
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ImageReadError(f"{path}: NIfTI with {len(shape)} dimensions is not supported (2D or 3D only)")
    try:
        data = np.asarray(img.dataobj).reshape(shape)
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read NIfTI file ({reason(exc)})") from None
    zooms = tuple(float(z) for z in img.header.get_zooms()[: len(shape)])
    return np.ascontiguousarray(data.T), np.asarray(img.affine, dtype=float), zooms[::-1]


def nifti_array(array: np.ndarray, path: str | Path) -> np.ndarray:
    """``array`` in a type that NIfTI readers widely support: booleans as uint8, 64-bit
    integers as int32.  A value that int32 cannot hold is an error naming ``path`` (never
    wrapped around into another label)."""
    data = np.asarray(array)
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if data.dtype in (np.int64, np.uint64):
        info = np.iinfo(np.int32)
        low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if low < info.min or high > info.max:
            bad = high if high > info.max else low
            raise ValueError(f"{path}: value {bad} does not fit in NIfTI's 32-bit integers; relabel with smaller ids")
        return data.astype(np.int32)
    return data


def write_nifti(
    path: str | Path,
    array: np.ndarray,
    affine: np.ndarray | None = None,
    spacing: tuple[float, ...] | None = None,
) -> None:
    """Write ``array`` (napari order) to ``path`` as NIfTI, reversing the axes.

    ``affine`` is used as given when present; otherwise a diagonal affine is built
    from ``spacing`` (napari order).
    """
    import nibabel as nib

    data = nifti_array(array, path)
    if affine is not None and abs(np.linalg.det(np.asarray(affine, float)[:3, :3])) < 1e-12:
        warnings.warn(
            f"{Path(path).name}: the image's affine is not invertible; written with one from the voxel spacing",
            stacklevel=3,
        )
        affine = None
    if affine is None:
        affine = np.eye(4)
        if spacing is not None:
            for axis, step in enumerate(reversed(tuple(spacing))):
                affine[axis, axis] = float(step) if step and np.isfinite(step) else 1.0
    img = nib.Nifti1Image(np.ascontiguousarray(data.T), np.asarray(affine, dtype=float))
    img.header.set_data_dtype(data.dtype)
    nib.save(img, str(path))
