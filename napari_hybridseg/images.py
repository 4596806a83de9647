"""Reading and writing images and label maps, chosen by file extension.

One registry serves the CLI, the project folder, and napari's reader and writer
hooks.  TIFF goes through tifffile (pixel size kept where present), NIfTI
through :mod:`napari_hybridseg.nifti` (affine kept).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write, compound_suffix
from .errors import ImageReadError, reason
from .limits import check_declared_size

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".nii", ".nii.gz")
LABEL_SUFFIXES = (".tif", ".tiff", ".nii", ".nii.gz")


@dataclass
class ImageMeta:
    """What we keep about an image besides its pixels.

    Attributes
    ----------
    spacing
        Physical size of a pixel/voxel per axis, in array (napari) order, or ``None``.
    affine
        NIfTI 4x4 affine (voxel to world, in NIfTI's x, y, z order), or ``None``.
    format
        ``"tif"``, ``"png"`` or ``"nii.gz"``/``"nii"``: the format read from.
    """

    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    format: str = "tif"
    extra: dict = field(default_factory=dict)

    def napari_scale(self, ndim: int) -> tuple[float, ...]:
        """Layer ``scale`` for an array with ``ndim`` spatial axes."""
        if self.spacing is None or len(self.spacing) != ndim:
            return (1.0,) * ndim
        return tuple(float(s) for s in self.spacing)

    def to_layer_metadata(self) -> dict:
        out: dict = {"format": self.format}
        if self.spacing is not None:
            out["spacing"] = list(self.spacing)
        if self.affine is not None:
            out["affine"] = np.asarray(self.affine).tolist()
        return out

    @classmethod
    def from_layer_metadata(cls, meta: dict | None, scale=None) -> ImageMeta:
        meta = meta or {}
        affine = meta.get("affine")
        spacing = meta.get("spacing")
        if spacing is None and scale is not None and any(float(s) != 1.0 for s in scale):
            spacing = [float(s) for s in scale]
        return cls(
            spacing=tuple(spacing) if spacing is not None else None,
            affine=np.asarray(affine, dtype=float) if affine is not None else None,
            format=meta.get("format", "tif"),
        )


def _read_tiff(path: Path, mmap: bool = False) -> tuple[np.ndarray, ImageMeta]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageReadError(f"{path}: the TIFF file holds no image")
        check_declared_size(path, tif.series[0].shape)
        data = None
        if mmap and tif.series[0].dataoffset is not None and min(tif.series[0].shape, default=0) > 0:
            try:  # uncompressed and contiguous: mapped, read where it is used
                data = tifffile.memmap(path, mode="r")
            except (ValueError, OSError):
                data = None
        if data is None:
            data = tif.asarray()
        axes = tif.series[0].axes
        channels_first = data.ndim == 3 and axes[0] == "C" and data.shape[0] <= 4  # ImageJ's CYX
        if channels_first:
            data = np.moveaxis(data, 0, -1)
        if data.ndim == 3 and data.shape[-1] == 1:  # (Y, X, 1): one channel, not X x 1 slices
            data = data[..., 0]
        spacing = None
        shaped = tif.shaped_metadata
        if shaped and "spacing" in shaped[0]:
            spacing = tuple(float(s) for s in shaped[0]["spacing"])
        else:
            page = tif.pages.first
            xres = page.tags.get("XResolution")
            yres = page.tags.get("YResolution")
            if xres is not None and yres is not None:
                (xn, xd), (yn, yd) = xres.value, yres.value
                if xn and yn and (xn, xd) != (1, 1):
                    spacing = (yd / yn, xd / xn)
                    ij = tif.imagej_metadata or {}
                    if "spacing" in ij and data.ndim == 3 and not channels_first:
                        spacing = (float(ij["spacing"]),) + spacing
    return data, ImageMeta(spacing=spacing, format="tif")


def _read_png(path: Path, mmap: bool = False) -> tuple[np.ndarray, ImageMeta]:

    with _PIL_LIMIT:  # PIL's bomb check is global: switched off for our own limit, one reader at a time
        return _open_png(path)


_PIL_LIMIT = threading.Lock()


def _open_png(path: Path) -> tuple[np.ndarray, ImageMeta]:
    from PIL import Image

    with open(path, "rb") as f:
        header = f.read(26)
    if header[12:16] == b"IHDR" and header[24] == 16 and header[25] in (2, 4, 6):  # 16 bits, colour or alpha
        raise ImageReadError(f"{path}: a 16-bit colour PNG cannot be read without losing its values; save it as TIFF")
    bomb_check, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own limit applies instead
    try:
        with Image.open(path) as im:
            check_declared_size(path, (im.height, im.width, len(im.getbands())))
            if im.mode == "P":  # a palette image: its colours, not the palette's indices
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            return np.asarray(im), ImageMeta(format="png")
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_check


def _read_nii(path: Path, mmap: bool = False) -> tuple[np.ndarray, ImageMeta]:
    # an uncompressed .nii is memory-mapped by nibabel whatever ``mmap`` says
    from .nifti import read_nifti

    data, affine, spacing = read_nifti(path)
    fmt = "nii.gz" if compound_suffix(path) == ".nii.gz" else "nii"
    return data, ImageMeta(spacing=spacing, affine=affine, format=fmt)


READERS: dict[str, Callable[[Path, bool], tuple[np.ndarray, ImageMeta]]] = {
    ".tif": _read_tiff,
    ".tiff": _read_tiff,
    ".png": _read_png,
    ".nii": _read_nii,
    ".nii.gz": _read_nii,
}


def read_image(path: str | Path, mmap: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """Read an image or label file; raise :class:`ImageReadError` with the file name.

    ``mmap``: map an uncompressed TIFF into memory read-only instead of reading it, so
    that prediction reads it tile by tile (an uncompressed NIfTI always is).
    """
    path = Path(path)
    suffix = compound_suffix(path)
    if suffix not in READERS:
        raise ImageReadError(
            f"{path}: unsupported file type {suffix or '(none)'}; expected one of {', '.join(IMAGE_SUFFIXES)}"
        )
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    try:
        return READERS[suffix](path, mmap)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read image ({reason(exc)})") from None


def _write_tiff(path: Path, array: np.ndarray, meta: ImageMeta) -> None:
    import tifffile

    kwargs: dict = {"metadata": {}}
    if meta.spacing is not None:
        kwargs["metadata"]["spacing"] = list(meta.spacing)
        sy, sx = meta.spacing[-2:]
        kwargs["resolution"] = (1.0 / sx, 1.0 / sy)
    tifffile.imwrite(path, array, compression="zlib", **kwargs)


def _write_nii(path: Path, array: np.ndarray, meta: ImageMeta) -> None:
    from .nifti import write_nifti

    write_nifti(path, array, affine=meta.affine, spacing=meta.spacing)


WRITERS: dict[str, Callable[[Path, np.ndarray, ImageMeta], None]] = {
    ".tif": _write_tiff,
    ".tiff": _write_tiff,
    ".nii": _write_nii,
    ".nii.gz": _write_nii,
}


def write_image(path: str | Path, array: np.ndarray, meta: ImageMeta | None = None) -> Path:
    """Write ``array`` to ``path`` atomically, the format chosen by its extension."""
    path = Path(path)
    suffix = compound_suffix(path)
    if suffix not in WRITERS:
        raise ValueError(f"{path}: cannot write {suffix or 'files without extension'}; use one of {', '.join(WRITERS)}")
    meta = meta or ImageMeta()
    if suffix in (".nii", ".nii.gz"):  # checked here, so that an error names the file asked for
        from .nifti import nifti_array

        array = nifti_array(array, path)
    atomic_write(path, lambda tmp: WRITERS[suffix](tmp, np.asarray(array), meta))
    return path


def label_suffix_for(meta: ImageMeta) -> str:
    """Extension a mask predicted for an image of this format should get."""
    return ".nii.gz" if meta.format.startswith("nii") else ".tif"


def strip_suffix(path: str | Path) -> str:
    """File name without its (compound) image extension."""
    name = Path(path).name
    suffix = compound_suffix(name)
    return name[: -len(suffix)] if suffix else name


def spatial_axes(array: np.ndarray, meta: ImageMeta | None = None) -> str:
    """Guess the axes of an image array: ``"yx"``, ``"yxc"`` or ``"zyx"``.

    A 3D array read from NIfTI (``meta``) is a volume: NIfTI keeps channels in its fifth
    dimension.  Otherwise a 3D array whose last axis has 2-4 entries and whose first axis
    is longer is read as a 2D multichannel image (RGB or a few stains); any other 3D
    array is a volume.
    """
    if array.ndim == 2:
        return "yx"
    if array.ndim == 3 and meta is not None and meta.format.startswith("nii"):
        return "zyx"
    if array.ndim == 3:
        if 2 <= array.shape[-1] <= 4 and array.shape[0] > 4:
            return "yxc"
        return "zyx"
    raise ValueError(f"expected a 2D or 3D image, got shape {array.shape}")
