"""Box files: ``id,y0,x0,y1,x1`` for a 2D image, ``id,z,y0,x0,y1,x1`` for a volume."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..errors import AnnotationError
from .model import Box, check_box, warn_clipped

BOX_COLUMNS_2D = ["id", "y0", "x0", "y1", "x1"]
BOX_COLUMNS_3D = ["id", "z", "y0", "x0", "y1", "x1"]


def read_boxes_csv(path: Path, shape: tuple[int, ...]) -> list[Box]:
    """Read and validate a box file for an image of spatial ``shape``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    return parse_boxes_csv(text, shape, str(path))


def parse_boxes_csv(text: str, shape: tuple[int, ...], where: str) -> list[Box]:
    volume = len(shape) == 3
    expected = BOX_COLUMNS_3D if volume else BOX_COLUMNS_2D
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise AnnotationError(f"{where}: not a valid CSV file ({exc})") from None
    if not rows:
        raise AnnotationError(f"{where}: empty file; expected header {','.join(expected)}")
    header = [c.strip().lower() for c in rows[0]]
    if header != expected:
        raise AnnotationError(
            f"{where}: wrong columns {','.join(header)}; expected {','.join(expected)}"
            + (" (the image is 3D)" if volume else " (the image is 2D)")
        )
    boxes: list[Box] = []
    raw: list[Box] = []
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
        box = Box(**dict(zip(expected, (int(v) for v in values), strict=True)))
        if box.id in seen:
            raise AnnotationError(f"{where}:{lineno}: duplicate box id {box.id}")
        seen.add(box.id)
        raw.append(box)
        boxes.append(check_box(box, shape, f"{where}:{lineno}"))
    warn_clipped(where, raw, boxes)
    return boxes


def boxes_to_csv(boxes: list[Box], volume: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(BOX_COLUMNS_3D if volume else BOX_COLUMNS_2D)
    for b in boxes:
        writer.writerow([b.id, b.z, b.y0, b.x0, b.y1, b.x1] if volume else [b.id, b.y0, b.x0, b.y1, b.x1])
    return out.getvalue()
