"""A project folder: images with their full masks, boxes and scribbles.

On disk (the contract shared by the CLI, the napari widget and scripts)::

    PROJECT/images/NAME.(tif|tiff|png|nii|nii.gz)   2D (Y,X), 2D multichannel (Y,X,C) or 3D (Z,Y,X)
    PROJECT/strong/NAME.(tif|tiff|nii|nii.gz)       full mask: 0 background, >0 foreground
    PROJECT/boxes/NAME.csv                          id,y0,x0,y1,x1 (2D) or id,z,y0,x0,y1,x1 (3D)[,class]
    PROJECT/scribbles/NAME.(tif|tiff|nii|nii.gz)    0 unlabelled, 1 background, k>=2 object k
    PROJECT/project.json                            optional: "classes", "intensity", per-image "exhaustive",
                                                    "annotated_slices"

Box coordinates are pixel indices with ``y1`` and ``x1`` exclusive.  With classes named
in ``project.json`` (see :mod:`.classes`), full masks hold class ids and a scribble value
``1 + c`` is a stroke of class ``c``.  A volume's full mask may cover only some slices:
``"annotated_slices": [0, 10, 20]`` in the image's entry of ``project.json`` says which
(only they are taught; other slices may carry boxes and strokes).  ``"intensity"``:
``"ct"``, ``"zscore"`` or ``"percentile"`` fixes the normalisation
(:mod:`napari_hybridseg.intensity`); without it, it is chosen from the images.  Every
write is atomic.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text, compound_suffix
from ..errors import AnnotationError
from ..images import IMAGE_SUFFIXES, LABEL_SUFFIXES, read_image, strip_suffix, write_image
from ..intensity import SETTINGS
from .box_files import boxes_to_csv, read_boxes_csv
from .classes import LabelClasses, check_class_values
from .model import (
    ImageAnnotations,
    check_slices,
    image_name_problem,
    labelled_slices,
    read_label_file,
    validate_annotations,
    validate_image,
)


class Project:
    """A set of images with their annotations, loaded from or saved to a project folder."""

    def __init__(
        self,
        images: list[ImageAnnotations] | None = None,
        root: Path | None = None,
        classes: LabelClasses | None = None,
    ):
        self.images: dict[str, ImageAnnotations] = {}
        self.root = Path(root) if root is not None else None
        self.classes = classes  # None: one structure, every value above 0 of a mask
        self.intensity: str | None = None  # project.json's normalisation; None: chosen from the data
        for item in images or []:
            self.add(item)

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 1

    def add(self, item: ImageAnnotations) -> None:
        validate_annotations(item)
        self.check_classes(item)
        self.images[item.name] = item

    def check_classes(self, item: ImageAnnotations, where: dict[str, str] | None = None) -> None:
        """Refuse values that name no class of this project; ``where`` names the file of
        each annotation (``"mask"``, ``"scribbles"``, ``"boxes"``) in the message."""
        where = where or {}
        k = self.n_classes
        if self.classes is not None:
            for kind, arr in (("mask", item.strong), ("scribbles", item.scribbles)):
                if arr is not None:
                    check_class_values(arr, k, kind, where.get(kind, f"{item.name} {kind}"))
        for box in item.boxes:
            if not 1 <= box.cls <= k:
                named = f"classes are 1..{k}" if self.classes is not None else "the project names no classes"
                place = where.get("boxes", f"{item.name} boxes")
                raise AnnotationError(f"{place}: box {box.id} is class {box.cls}; {named}")

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
        images = _find_files(root, "images", IMAGE_SUFFIXES)
        strong = _find_files(root, "strong", LABEL_SUFFIXES)
        scribbles = _find_files(root, "scribbles", LABEL_SUFFIXES)
        boxes = _find_files(root, "boxes", (".csv",))
        for files in (strong, scribbles, boxes):
            for name, path in files.items():
                if name not in images:
                    raise AnnotationError(f"{path}: no image {name!r} in {root / 'images'}")
        if not images:
            raise AnnotationError(f"{root}: empty project (no images in {root / 'images'})")
        flags, classes, intensity = _read_project_json(root)
        project = cls(root=root, classes=classes)
        project.intensity = intensity
        for name, path in images.items():
            image, meta = read_image(path)
            validate_image(image, str(path))
            item = ImageAnnotations(name=name, image=image, meta=meta)
            item.exhaustive = bool(flags.get(name, {}).get("exhaustive", True))
            slices = flags.get(name, {}).get("annotated_slices")
            shape = item.spatial_shape
            if name in strong:
                item.strong = read_label_file(strong[name], item)
            if slices is not None:  # the slices listed, and those holding labels (as napari reads the layer)
                listed = check_slices(slices, item, f"{root / 'project.json'}: image {name!r}")
                held = labelled_slices(item.strong) if item.strong is not None else []
                item.strong_slices = sorted(set(listed) | set(held))
            if name in scribbles:
                item.scribbles = read_label_file(scribbles[name], item)
            if name in boxes:
                item.boxes = read_boxes_csv(boxes[name], shape, classes)
            files = {"mask": strong.get(name), "scribbles": scribbles.get(name), "boxes": boxes.get(name)}
            project.check_classes(item, {k: str(v) for k, v in files.items() if v is not None})
            project.images[name] = item
        return project

    def save(self, root: str | Path | None = None, names: list[str] | None = None) -> Path:
        """Write the project (or only ``names``) to ``root`` atomically."""
        root = Path(root) if root is not None else self.root
        if root is None:
            raise ValueError("no project folder given")
        chosen = names if names is not None else list(self.images)
        for name in chosen:  # every name checked before any write
            problem = image_name_problem(name)
            if problem:
                raise AnnotationError(f"image {name!r}: its name names its files and cannot hold {problem}; rename it")
        for name in chosen:
            save_image_annotations(root, self.images[name], with_class=self.classes is not None)
        flags = {n: {"exhaustive": a.exhaustive, "annotated_slices": a.strong_slices} for n, a in self.images.items()}
        _write_project_json(root, flags, self.classes)
        self.root = root
        return root


_PICTURES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".nii", ".nii.gz"}  # never skipped


def _find_files(root: Path, folder_name: str, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """The files of one project folder by image name.  A link may point anywhere inside
    the project; one that leaves it is refused (and not read)."""
    found: dict[str, Path] = {}
    folder = root / folder_name
    if not folder.is_dir():
        return found
    inside = root.resolve()
    if not folder.resolve().is_relative_to(inside):
        raise AnnotationError(f"{folder}: links outside the project; copy the folder into {root}")
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if compound_suffix(path) not in suffixes:
            if compound_suffix(path) in _PICTURES and suffixes != (".csv",):
                raise AnnotationError(
                    f"{path}: {folder_name}/ holds {', '.join(suffixes)} files (TIFF, NIfTI"
                    f"{', PNG' if '.png' in suffixes else ''}); convert it, e.g. save it as .tif"
                )
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            raise AnnotationError(f"{path}: links outside the project; copy the file into {folder}")
        if path.is_file():
            name = strip_suffix(path)
            if name in found:
                raise AnnotationError(f"{path}: two files for image {name!r} in {folder}")
            found[name] = path
    return found


def intensity_setting(root: str | Path | None) -> str | None:
    """The ``"intensity"`` of a project folder's ``project.json`` (``None``: not set)."""
    return _read_project_json(Path(root))[2] if root is not None else None


def _read_project_json(root: Path) -> tuple[dict, LabelClasses | None, str | None]:
    """``project.json``'s per-image flags, classes and intensity setting, each checked: one
    line names what is wrong."""
    path = root / "project.json"
    if not path.exists():
        return {}, None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    except RecursionError:
        raise AnnotationError(f"{path}: not valid JSON (nested too deeply)") from None
    images = data.get("images", {}) if isinstance(data, dict) else None
    if not isinstance(images, dict):
        raise AnnotationError(f'{path}: expected {{"images": {{NAME: {{...}}}}}}')
    for name, entry in images.items():
        if not isinstance(entry, dict):
            raise AnnotationError(
                f'{path}: the entry for image {name!r} must be an object, like {{"exhaustive": true}}'
            )
        if "exhaustive" in entry and not isinstance(entry["exhaustive"], bool):
            raise AnnotationError(
                f"{path}: image {name!r}: exhaustive must be true or false, not {json.dumps(entry['exhaustive'])}"
            )
    classes = LabelClasses.from_json(data["classes"], str(path)) if "classes" in data else None
    intensity = data.get("intensity")
    if intensity is not None and intensity not in SETTINGS:
        raise AnnotationError(f"{path}: intensity must be one of {', '.join(SETTINGS)}, not {json.dumps(intensity)}")
    return images, classes, None if intensity == "auto" else intensity


def _write_project_json(root: Path, flags: dict, classes: LabelClasses | None) -> None:
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
        entry = images.setdefault(name, {})
        for key, flag in value.items():  # None: not set (annotated_slices: the whole volume is masked)
            if flag is None:
                entry.pop(key, None)
            else:
                entry[key] = flag
    if classes is not None:  # a project that does not know its classes leaves them as they are
        data["classes"] = classes.to_json()
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _existing(folder: Path, name: str, suffixes: tuple[str, ...]) -> Path | None:
    """The file of image ``name`` in ``folder``, its extension matched in any case as
    :func:`_find_files` matches it (``a.TIF`` is the file of ``a``)."""
    for suffix in suffixes:
        path = folder / f"{name}{suffix}"
        if path.exists():
            return path
    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir()):
        if not path.name.startswith(".") and compound_suffix(path) in suffixes and strip_suffix(path) == name:
            return path
    return None


def save_image_annotations(root: str | Path, item: ImageAnnotations, with_class: bool = False) -> None:
    """Write one image and its annotations into the project folder ``root``; box files get
    a ``class`` column ``with_class`` (a project that names classes).

    The image itself is written only when the folder has none for it yet.  An
    annotation that is now empty has its file removed.
    """
    root = Path(root)
    validate_annotations(item)
    _refuse_links_out(root, item.name)
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
    box_path = _existing(root / "boxes", item.name, (".csv",)) or root / "boxes" / f"{item.name}.csv"
    if item.boxes:
        atomic_write_text(box_path, boxes_to_csv(item.boxes, item.is_volume, with_class))
    elif box_path.exists():
        box_path.unlink()


_FOLDERS = (("images", IMAGE_SUFFIXES), ("strong", LABEL_SUFFIXES), ("scribbles", LABEL_SUFFIXES), ("boxes", (".csv",)))


def _refuse_links_out(root: Path, name: str) -> None:
    """Annotations are never written through a link to a place outside the project."""
    inside = root.resolve()
    for folder, suffixes in _FOLDERS:
        for path in (root / folder, _existing(root / folder, name, suffixes)):
            if path is not None and path.exists() and not path.resolve().is_relative_to(inside):
                raise AnnotationError(f"{path}: links outside the project; not written through it")


def _compact_labels(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    top = int(arr.max()) if arr.size else 0
    for dtype in (np.uint8, np.uint16, np.int32):
        if top <= np.iinfo(dtype).max:
            return arr.astype(dtype)
    raise AnnotationError(f"label value {top} is too large")
