"""One image and what is drawn on it: full mask, boxes, scribbles; and their validation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import AnnotationError
from ..images import ImageMeta, read_image, spatial_axes

BACKGROUND_STROKE = 1
FIRST_OBJECT_STROKE = 2


@dataclass(frozen=True)
class Box:
    """An axis-aligned box; ``y1``/``x1`` exclusive; ``z`` is the slice in a volume;
    ``cls`` the class of the object it encloses (1 in a project of one structure)."""

    id: int
    y0: int
    x0: int
    y1: int
    x1: int
    z: int | None = None
    cls: int = 1

    @property
    def area(self) -> int:
        return max(0, self.y1 - self.y0) * max(0, self.x1 - self.x0)


@dataclass
class ImageAnnotations:
    """One image and everything drawn on it."""

    name: str
    image: np.ndarray
    meta: ImageMeta = field(default_factory=ImageMeta)
    strong: np.ndarray | None = None
    boxes: list[Box] = field(default_factory=list)
    scribbles: np.ndarray | None = None
    exhaustive: bool = True
    axes: str = ""
    strong_slices: list[int] | None = None  # a volume's fully annotated slices; None: all of them

    def __post_init__(self) -> None:
        if not self.axes:
            self.axes = spatial_axes(self.image, self.meta)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.image.shape[:2] if self.axes == "yxc" else self.image.shape

    @property
    def is_volume(self) -> bool:
        return self.axes == "zyx"

    @property
    def n_channels(self) -> int:
        return self.image.shape[-1] if self.axes == "yxc" else 1

    @property
    def has_scribbles(self) -> bool:
        return self.scribbles is not None and bool(np.any(self.scribbles > 0))

    def weak_slices(self) -> list[int]:
        """Slices of a volume that carry boxes or scribbles (and no full mask), in order."""
        zs = {b.z for b in self.boxes if b.z is not None}
        if self.scribbles is not None and self.is_volume:
            zs |= set(np.flatnonzero((self.scribbles > 0).any(axis=(1, 2))).tolist())
        return sorted(zs - set(self.mask_slices()))

    def mask_slices(self) -> list[int]:
        """Slices of a volume that its full mask covers (all, unless ``strong_slices``
        names some); none without a full mask or for a 2D image."""
        if self.strong is None or not self.is_volume:
            return []
        return list(range(self.spatial_shape[0])) if self.strong_slices is None else list(self.strong_slices)

    @property
    def role(self) -> str:
        """``"strong"``, ``"weak"`` or ``"unlabelled"``."""
        if self.strong is not None and (self.strong_slices is None or self.strong_slices):
            return "strong"
        if self.boxes or self.has_scribbles:
            return "weak"
        return "unlabelled"


def read_only_copy(arr) -> np.ndarray:
    out = np.array(arr, copy=True)
    out.flags.writeable = False
    return out


LABEL_MAX = np.iinfo(np.int32).max


def label_array(arr: np.ndarray, where: str) -> np.ndarray:
    """Check that a mask/scribble array holds integers in ``0..2**31 - 1`` (any dtype);
    return it as int32."""
    if arr.dtype == np.bool_:
        return arr.astype(np.int32)
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all() or not np.array_equal(arr, np.round(arr)):
            raise AnnotationError(f"{where}: values must be integers (found non-integer values)")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise AnnotationError(f"{where}: values must be integers (found dtype {arr.dtype})")
    if arr.size and arr.min() < 0:
        raise AnnotationError(f"{where}: values must be >= 0 (found {arr.min()})")
    if arr.size and arr.max() > LABEL_MAX:
        top = int(arr.max())
        raise AnnotationError(f"{where}: label value {top} is too large (labels must be at most {LABEL_MAX})")
    return arr.astype(np.int32)


def validate_image(arr: np.ndarray, where: str) -> None:
    """One line naming ``where`` and what is wrong: dimensions, emptiness, dtype, NaN."""
    if arr.ndim not in (2, 3):
        raise AnnotationError(f"{where}: a {arr.ndim}D image is not supported (shape {arr.shape}); expected 2D or 3D")
    if min(arr.shape) == 0:
        raise AnnotationError(f"{where}: the image is empty (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise AnnotationError(f"{where}: complex values are not supported (dtype {arr.dtype}); save the magnitude")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise AnnotationError(f"{where}: image has non-numeric dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not all(np.isfinite(part).all() for part in _slabs(arr)):
        raise AnnotationError(f"{where}: image contains NaN or Inf values")


def _slabs(arr: np.ndarray, values: int = 2**24):
    """``arr`` in pieces along its first axis (a memory-mapped image is checked a slab at a time)."""
    step = max(1, values // max(1, arr[0].size))
    for start in range(0, arr.shape[0], step):
        yield arr[start : start + step]


def check_box(box: Box, shape: tuple[int, ...], where: str) -> Box:
    """Refuse an inverted, empty or off-image box; clip one that extends past the image
    (the caller says so: see :func:`warn_clipped`)."""
    if box.y1 < box.y0 or box.x1 < box.x0:
        raise AnnotationError(f"{where}: box {box.id} is inverted (y1 < y0 or x1 < x0)")
    if box.y1 == box.y0 or box.x1 == box.x0:
        raise AnnotationError(f"{where}: box {box.id} is empty (zero height or width)")
    h, w = shape[-2:]
    if box.z is not None and not 0 <= box.z < shape[0]:
        raise AnnotationError(f"{where}: box {box.id} is on slice {box.z}, outside 0..{shape[0] - 1}")
    clipped = Box(box.id, max(box.y0, 0), max(box.x0, 0), min(box.y1, h), min(box.x1, w), box.z, box.cls)
    if clipped.y1 <= clipped.y0 or clipped.x1 <= clipped.x0:
        raise AnnotationError(f"{where}: box {box.id} lies entirely outside the {h}x{w} image")
    return clipped


def warn_clipped(where: str, before: list[Box], after: list[Box]) -> None:
    """One warning for all the boxes of a file or layer that were clipped."""
    ids = [b.id for b, c in zip(before, after) if b != c]
    if len(ids) == 1:
        warnings.warn(f"{where}: box {ids[0]} extends past the image and was clipped", stacklevel=3)
    elif ids:
        shown = ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")
        warnings.warn(f"{where}: {len(ids)} boxes extend past the image and were clipped (ids {shown})", stacklevel=3)


def labelled_slices(volume) -> list[int]:
    """The slices of a ``(Z, Y, X)`` label volume holding any label."""
    volume = np.asarray(volume)
    return np.flatnonzero(volume.reshape(volume.shape[0], -1).any(axis=1)).tolist()


def check_slices(slices, item: ImageAnnotations, where: str) -> list[int]:
    """The annotated slices of a volume's full mask, sorted; one line if they are not
    slice indices of this volume."""
    if not item.is_volume:
        raise AnnotationError(f"{where}: only a volume's full mask can cover some slices (the image is 2D)")
    if not isinstance(slices, list | tuple) or not all(isinstance(z, int) and not isinstance(z, bool) for z in slices):
        raise AnnotationError(f"{where}: expected a list of slice indices, like [0, 10, 20]")
    depth = item.spatial_shape[0]
    bad = [z for z in slices if not 0 <= z < depth]
    if bad:
        raise AnnotationError(f"{where}: slice {bad[0]} is outside 0..{depth - 1}")
    return sorted(set(slices))


def validate_annotations(item: ImageAnnotations, where: str | None = None) -> None:
    """Validate one image's annotations in memory (the same rules as on disk)."""
    where = where or item.name
    validate_image(item.image, where)
    shape = item.spatial_shape
    for label, arr in (("mask", item.strong), ("scribbles", item.scribbles)):
        if arr is None:
            continue
        if arr.shape != tuple(shape):
            raise AnnotationError(f"{where} {label}: shape {arr.shape} differs from the image's {shape}")
        label_array(arr, f"{where} {label}")
    if item.strong_slices is not None:
        item.strong_slices = check_slices(item.strong_slices, item, f"{where} annotated_slices")
    seen: set[int] = set()
    checked: list[Box] = []
    for box in item.boxes:
        if box.id in seen:
            raise AnnotationError(f"{where} boxes: duplicate box id {box.id}")
        seen.add(box.id)
        if (box.z is None) == item.is_volume:
            raise AnnotationError(
                f"{where} boxes: box {box.id} "
                + ("needs a slice index z (the image is 3D)" if item.is_volume else "has a z but the image is 2D")
            )
        checked.append(check_box(box, shape, f"{where} boxes"))
    warn_clipped(f"{where} boxes", item.boxes, checked)
    item.boxes = checked


_NOT_IN_NAMES = '/\\:*?"<>|'  # path separators, and what Windows and lab shares refuse in a file name


def image_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an image's files in a project folder (``None`` when it can):
    the image, its masks, scribbles and boxes are saved as ``<folder>/<name>.<suffix>``."""
    if not name.strip():
        return "an empty name"
    if name.startswith("."):
        return "a leading dot (the file would be hidden and never read back)"
    bad = sorted({c for c in name if c in _NOT_IN_NAMES or ord(c) < 32})
    if bad:
        return "the character(s) " + " ".join(repr(c) for c in bad)
    return None


def read_label_file(path, item: ImageAnnotations) -> np.ndarray:
    """A mask or scribbles file on its image's grid: the same shape and, for NIfTI, the
    same affine (a mask saved in another orientation would lie mirrored or shifted)."""
    arr, meta = read_image(path)
    shape = tuple(item.spatial_shape)
    if arr.shape != shape:
        raise AnnotationError(f"{path}: shape {arr.shape} differs from its image's {shape}")
    mine, theirs = meta.affine, item.meta.affine
    if mine is not None and theirs is not None and not np.allclose(mine, theirs, rtol=1e-4, atol=1e-3):
        raise AnnotationError(
            f"{path}: its NIfTI affine differs from its image's (another orientation or origin); "
            "resample it onto the image's grid"
        )
    return label_array(arr, str(path))
