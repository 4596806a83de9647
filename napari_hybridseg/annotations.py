"""The annotation model: a project folder of images, full masks, boxes and scribbles.

On disk (the contract shared by the CLI, the napari widget and scripts)::

    PROJECT/images/NAME.(tif|tiff|png|nii|nii.gz)   2D (Y,X), 2D multichannel (Y,X,C) or 3D (Z,Y,X)
    PROJECT/strong/NAME.(tif|tiff|nii|nii.gz)       full mask: 0 background, >0 foreground
    PROJECT/boxes/NAME.csv                          id,y0,x0,y1,x1 (2D) or id,z,y0,x0,y1,x1 (3D)
    PROJECT/scribbles/NAME.(tif|tiff|nii|nii.gz)    0 unlabelled, 1 background, k>=2 object k
    PROJECT/project.json                            optional per-image flags ("exhaustive")

Box coordinates are pixel indices with ``y1`` and ``x1`` exclusive.  Every write
is atomic.  This module imports neither napari nor Qt.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text, compound_suffix
from .errors import AnnotationError, ImageReadError
from .images import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    ImageMeta,
    read_image,
    spatial_axes,
    strip_suffix,
    write_image,
)

BOX_COLUMNS_2D = ["id", "y0", "x0", "y1", "x1"]
BOX_COLUMNS_3D = ["id", "z", "y0", "x0", "y1", "x1"]
BACKGROUND_STROKE = 1
FIRST_OBJECT_STROKE = 2


@dataclass(frozen=True)
class Box:
    """An axis-aligned box; ``y1``/``x1`` exclusive; ``z`` is the slice in a volume."""

    id: int
    y0: int
    x0: int
    y1: int
    x1: int
    z: int | None = None

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

    def __post_init__(self) -> None:
        if not self.axes:
            self.axes = spatial_axes(self.image)

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
        """Slices of a volume that carry boxes or scribbles, in order."""
        zs = {b.z for b in self.boxes if b.z is not None}
        if self.scribbles is not None and self.is_volume:
            zs |= set(np.flatnonzero((self.scribbles > 0).any(axis=(1, 2))).tolist())
        return sorted(zs)

    @property
    def role(self) -> str:
        """``"strong"``, ``"weak"`` or ``"unlabelled"``."""
        if self.strong is not None:
            return "strong"
        if self.boxes or self.has_scribbles:
            return "weak"
        return "unlabelled"


def _label_array(arr: np.ndarray, where: str) -> np.ndarray:
    """Check that a mask/scribble array holds non-negative integers; return it as int32."""
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
    return arr.astype(np.int32)


def validate_image(arr: np.ndarray, where: str) -> None:
    if arr.ndim not in (2, 3) or min(arr.shape) == 0:
        raise AnnotationError(f"{where}: expected a 2D or 3D image, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise AnnotationError(f"{where}: image has non-numeric dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise AnnotationError(f"{where}: image contains NaN or Inf values")


def read_boxes_csv(path: Path, shape: tuple[int, ...]) -> list[Box]:
    """Read and validate a box file for an image of spatial ``shape``."""
    return parse_boxes_csv(path.read_text(encoding="utf-8-sig"), shape, str(path))


def parse_boxes_csv(text: str, shape: tuple[int, ...], where: str) -> list[Box]:
    volume = len(shape) == 3
    expected = BOX_COLUMNS_3D if volume else BOX_COLUMNS_2D
    reader = csv.reader(io.StringIO(text))
    rows = [r for r in reader if any(c.strip() for c in r)]
    if not rows:
        raise AnnotationError(f"{where}: empty file; expected header {','.join(expected)}")
    header = [c.strip().lower() for c in rows[0]]
    if header != expected:
        raise AnnotationError(
            f"{where}: wrong columns {','.join(header)}; expected {','.join(expected)}"
            + (" (the image is 3D)" if volume else " (the image is 2D)")
        )
    boxes: list[Box] = []
    seen: set[int] = set()
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(expected):
            raise AnnotationError(f"{where}:{lineno}: expected {len(expected)} values, got {len(row)}")
        try:
            values = [float(c) for c in row]
        except ValueError:
            raise AnnotationError(f"{where}:{lineno}: box values must be numbers") from None
        if not all(math.isfinite(v) and v == int(v) for v in values):
            raise AnnotationError(f"{where}:{lineno}: box values must be whole pixel indices")
        ints = [int(v) for v in values]
        fields = dict(zip(expected, ints, strict=True))
        bid = fields["id"]
        if bid in seen:
            raise AnnotationError(f"{where}:{lineno}: duplicate box id {bid}")
        seen.add(bid)
        box = Box(**fields)
        boxes.append(_check_box(box, shape, f"{where}:{lineno}"))
    return boxes


def _check_box(box: Box, shape: tuple[int, ...], where: str) -> Box:
    if box.y1 < box.y0 or box.x1 < box.x0:
        raise AnnotationError(f"{where}: box {box.id} is inverted (y1 < y0 or x1 < x0)")
    if box.y1 == box.y0 or box.x1 == box.x0:
        raise AnnotationError(f"{where}: box {box.id} is empty (zero height or width)")
    h, w = shape[-2:]
    if box.z is not None and not 0 <= box.z < shape[0]:
        raise AnnotationError(f"{where}: box {box.id} is on slice {box.z}, outside 0..{shape[0] - 1}")
    clipped = Box(box.id, max(box.y0, 0), max(box.x0, 0), min(box.y1, h), min(box.x1, w), box.z)
    if clipped.y1 <= clipped.y0 or clipped.x1 <= clipped.x0:
        raise AnnotationError(f"{where}: box {box.id} lies entirely outside the {h}x{w} image")
    if clipped != box:
        warnings.warn(f"{where}: box {box.id} extends past the image and was clipped", stacklevel=3)
    return clipped


def boxes_to_csv(boxes: list[Box], volume: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(BOX_COLUMNS_3D if volume else BOX_COLUMNS_2D)
    for b in boxes:
        if volume:
            writer.writerow([b.id, b.z, b.y0, b.x0, b.y1, b.x1])
        else:
            writer.writerow([b.id, b.y0, b.x0, b.y1, b.x1])
    return out.getvalue()


def _find_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if compound_suffix(path) in suffixes:
            name = strip_suffix(path)
            if name in found:
                raise AnnotationError(f"{path}: two files for image {name!r} in {folder}")
            found[name] = path
    return found


class Project:
    """A set of images with their annotations, loaded from or saved to a project folder."""

    def __init__(self, images: list[ImageAnnotations] | None = None, root: Path | None = None):
        self.images: dict[str, ImageAnnotations] = {}
        self.root = Path(root) if root is not None else None
        for item in images or []:
            self.add(item)

    def add(self, item: ImageAnnotations) -> None:
        validate_annotations(item)
        self.images[item.name] = item

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        return iter(self.images.values())

    def __getitem__(self, name: str) -> ImageAnnotations:
        return self.images[name]

    def by_role(self, role: str) -> list[ImageAnnotations]:
        return [a for a in self if a.role == role]

    def summary(self) -> dict[str, int]:
        counts = {"strong": 0, "weak": 0, "unlabelled": 0}
        for a in self:
            counts[a.role] += 1
        return counts

    # -- disk -------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path) -> Project:
        """Load and validate a project folder; raise :class:`AnnotationError` on problems."""
        root = Path(root)
        if not root.is_dir():
            raise AnnotationError(f"{root}: project folder not found")
        images = _find_files(root / "images", IMAGE_SUFFIXES)
        strong = _find_files(root / "strong", LABEL_SUFFIXES)
        scribbles = _find_files(root / "scribbles", LABEL_SUFFIXES)
        boxes = _find_files(root / "boxes", (".csv",))
        for files in (strong, scribbles, boxes):
            for name, path in files.items():
                if name not in images:
                    raise AnnotationError(f"{path}: no image {name!r} in {root / 'images'}")
        if not images:
            raise AnnotationError(f"{root}: empty project (no images in {root / 'images'})")
        flags = _read_flags(root)
        project = cls(root=root)
        for name, path in images.items():
            image, meta = read_image(path)
            validate_image(image, str(path))
            item = ImageAnnotations(name=name, image=image, meta=meta)
            item.exhaustive = bool(flags.get(name, {}).get("exhaustive", True))
            shape = item.spatial_shape
            if name in strong:
                item.strong = _read_label(strong[name], shape)
            if name in scribbles:
                item.scribbles = _read_label(scribbles[name], shape)
            if name in boxes:
                item.boxes = read_boxes_csv(boxes[name], shape)
            project.images[name] = item
        return project

    def save(self, root: str | Path | None = None, names: list[str] | None = None) -> Path:
        """Write the project (or only ``names``) to ``root`` atomically."""
        root = Path(root) if root is not None else self.root
        if root is None:
            raise ValueError("no project folder given")
        for name in names if names is not None else list(self.images):
            save_image_annotations(root, self.images[name])
        _write_flags(root, {n: {"exhaustive": a.exhaustive} for n, a in self.images.items()})
        self.root = root
        return root


def _read_label(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    arr, _ = read_image(path)
    if arr.shape != tuple(shape):
        raise AnnotationError(f"{path}: shape {arr.shape} differs from its image's {tuple(shape)}")
    return _label_array(arr, str(path))


def _read_flags(root: Path) -> dict:
    path = root / "project.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    images = data.get("images", {}) if isinstance(data, dict) else None
    if not isinstance(images, dict):
        raise AnnotationError(f'{path}: expected {{"images": {{NAME: {{...}}}}}}')
    return images


def _write_flags(root: Path, flags: dict) -> None:
    path = root / "project.json"
    data: dict = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = {}
    if not isinstance(data, dict):
        data = {}
    images = data.setdefault("images", {})
    for name, value in flags.items():
        images.setdefault(name, {}).update(value)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def validate_annotations(item: ImageAnnotations, where: str | None = None) -> None:
    """Validate one image's annotations in memory (same rules as on disk)."""
    where = where or item.name
    validate_image(item.image, where)
    shape = item.spatial_shape
    for label, arr in (("mask", item.strong), ("scribbles", item.scribbles)):
        if arr is None:
            continue
        if arr.shape != tuple(shape):
            raise AnnotationError(f"{where} {label}: shape {arr.shape} differs from the image's {shape}")
        _label_array(arr, f"{where} {label}")
    seen: set[int] = set()
    checked = []
    for box in item.boxes:
        if box.id in seen:
            raise AnnotationError(f"{where} boxes: duplicate box id {box.id}")
        seen.add(box.id)
        if (box.z is None) == item.is_volume:
            raise AnnotationError(
                f"{where} boxes: box {box.id} "
                + ("needs a slice index z (the image is 3D)" if item.is_volume else "has a z but the image is 2D")
            )
        checked.append(_check_box(box, shape, f"{where} boxes"))
    item.boxes = checked


def _existing(folder: Path, name: str, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        path = folder / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def save_image_annotations(root: str | Path, item: ImageAnnotations) -> None:
    """Write one image and its annotations into the project folder ``root``.

    The image itself is written only when the folder has none for it yet.  An
    annotation that is now empty has its file removed.
    """
    root = Path(root)
    validate_annotations(item)
    default_suffix = ".nii.gz" if item.meta.format.startswith("nii") else ".tif"
    if _existing(root / "images", item.name, IMAGE_SUFFIXES) is None:
        write_image(root / "images" / f"{item.name}{default_suffix}", item.image, item.meta)
    for folder, arr in (("strong", item.strong), ("scribbles", item.scribbles)):
        current = _existing(root / folder, item.name, LABEL_SUFFIXES)
        keep = arr is not None and (folder == "strong" or bool(np.any(arr > 0)))
        if keep:
            target = current or root / folder / f"{item.name}{default_suffix}"
            write_image(target, _compact_labels(arr), item.meta)
        elif current is not None:
            current.unlink()
    box_path = root / "boxes" / f"{item.name}.csv"
    if item.boxes:
        atomic_write_text(box_path, boxes_to_csv(item.boxes, item.is_volume))
    elif box_path.exists():
        box_path.unlink()


def _compact_labels(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    top = int(arr.max()) if arr.size else 0
    for dtype in (np.uint8, np.uint16, np.int32):
        if top <= np.iinfo(dtype).max:
            return arr.astype(dtype)
    raise AnnotationError(f"label value {top} is too large")


__all__ = [
    "Box",
    "ImageAnnotations",
    "Project",
    "AnnotationError",
    "ImageReadError",
    "read_boxes_csv",
    "parse_boxes_csv",
    "boxes_to_csv",
    "save_image_annotations",
    "validate_annotations",
]
