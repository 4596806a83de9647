"""Box files: ``id,y0,x0,y1,x1`` for a 2D image, ``id,z,y0,x0,y1,x1`` for a volume,
optionally followed by a ``class`` column (a class id or name; empty is class 1)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..errors import AnnotationError
from .classes import LabelClasses
from .model import Box, check_box, warn_clipped

BOX_COLUMNS_2D = ["id", "y0", "x0", "y1", "x1"]
BOX_COLUMNS_3D = ["id", "z", "y0", "x0", "y1", "x1"]


def read_boxes_csv(path: Path, shape: tuple[int, ...], classes: LabelClasses | None = None) -> list[Box]:
    """Read and validate a box file for an image of spatial ``shape`` in a project with
    ``classes`` (``None``: one structure)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    return parse_boxes_csv(text, shape, str(path), classes)


def _box_class(cell: str, classes: LabelClasses | None, where: str) -> int:
    text = cell.strip()
    if not text:
        return 1
    if classes is not None:
        return classes.id_of(text, where)
    if text != "1":
        raise AnnotationError(
            f"{where}: class {text} but the project names no classes; name them in project.json "
            '(e.g. {"classes": ["liver", "tumour"]})'
        )
    return 1


def parse_boxes_csv(text: str, shape: tuple[int, ...], where: str, classes: LabelClasses | None = None) -> list[Box]:
    volume = len(shape) == 3
    expected = BOX_COLUMNS_3D if volume else BOX_COLUMNS_2D
    try:
        reader = csv.reader(io.StringIO(text))  # each row with its line in the file, blank rows left out
        rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise AnnotationError(f"{where}: not a valid CSV file ({exc})") from None
    if not rows:
        raise AnnotationError(f"{where}: empty file; expected header {','.join(expected)}")
    header = [c.strip().lower() for c in rows[0][1]]
    with_class = header == [*expected, "class"]
    if header != expected and not with_class:
        raise AnnotationError(
            f"{where}: wrong columns {','.join(header)}; expected {','.join(expected)}[,class]"
            + (" (the image is 3D)" if volume else " (the image is 2D)")
        )
    columns = len(header)
    boxes: list[Box] = []
    raw: list[Box] = []
    seen: set[int] = set()
    for lineno, row in rows[1:]:
        if len(row) != columns:
            raise AnnotationError(f"{where}:{lineno}: expected {columns} values, got {len(row)}")
        try:
            values = [float(c) for c in row[: len(expected)]]
        except ValueError:
            raise AnnotationError(f"{where}:{lineno}: box values must be numbers") from None
        if not all(math.isfinite(v) and v == int(v) for v in values):
            raise AnnotationError(f"{where}:{lineno}: box values must be whole pixel indices")
        cls = _box_class(row[-1], classes, f"{where}:{lineno}") if with_class else 1
        box = Box(**dict(zip(expected, (int(v) for v in values), strict=True)), cls=cls)
        if box.id < 1:
            raise AnnotationError(f"{where}:{lineno}: box id {box.id}; ids count from 1 (napari marks new boxes 0)")
        if box.id in seen:
            raise AnnotationError(f"{where}:{lineno}: duplicate box id {box.id}")
        seen.add(box.id)
        raw.append(box)
        boxes.append(check_box(box, shape, f"{where}:{lineno}"))
    warn_clipped(where, raw, boxes)
    return boxes


def boxes_to_csv(boxes: list[Box], volume: bool, with_class: bool = False) -> str:
    """The box file's text; the ``class`` column (ids) only ``with_class``, so that a
    project of one structure writes the files it always wrote."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*(BOX_COLUMNS_3D if volume else BOX_COLUMNS_2D), *(["class"] if with_class else [])])
    for b in boxes:
        row = [b.id, b.z, b.y0, b.x0, b.y1, b.x1] if volume else [b.id, b.y0, b.x0, b.y1, b.x1]
        writer.writerow([*row, b.cls] if with_class else row)
    return out.getvalue()
