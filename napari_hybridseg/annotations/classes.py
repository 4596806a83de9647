"""The structures a project segments: names and display colours of classes 1..K.

``project.json`` may name them, in order of their ids (background is 0 and implicit)::

    {"classes": ["liver", "tumour"]}
    {"classes": [{"name": "liver", "colour": "#e6194b"}, "tumour"]}

A project without ``classes`` segments one structure and reads every value above 0
in a full mask as that structure, exactly as before classes existed.  With classes, a
full mask holds class ids, a scribble value ``1 + c`` is a stroke of class ``c`` (1
stays background), and a box may name its class in a ``class`` column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import AnnotationError
from ..limits import MAX_CLASSES
from .model import BACKGROUND_STROKE

# distinct colours for classes 1, 2, ... (then repeated); chosen for contrast on grey images
PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
    "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
)  # fmt: skip
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def default_colour(class_id: int) -> str:
    return PALETTE[(class_id - 1) % len(PALETTE)]


@dataclass(frozen=True)
class LabelClasses:
    """Names (unique, non-empty) and ``#rrggbb`` colours of classes ``1..K``."""

    names: tuple[str, ...]
    colours: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = tuple(str(n).strip() for n in self.names)
        if not names:
            raise AnnotationError("classes: name at least one class")
        if len(names) > MAX_CLASSES:
            raise AnnotationError(f"classes: at most {MAX_CLASSES} classes; got {len(names)}")
        for i, name in enumerate(names, start=1):
            if not name:
                raise AnnotationError(f"classes: class {i} has an empty name")
            if name.isdigit():
                raise AnnotationError(f"classes: class {i}'s name {name!r} is a number; boxes would read it as an id")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise AnnotationError(f"classes: {dupes[0]!r} is named twice")
        colours = tuple(self.colours) or tuple(default_colour(i) for i in range(1, len(names) + 1))
        if len(colours) != len(names):
            raise AnnotationError(f"classes: {len(names)} names but {len(colours)} colours")
        for name, colour in zip(names, colours):
            if not _HEX.match(str(colour)):
                raise AnnotationError(f"classes: class {name!r} has colour {colour!r}; write it as #rrggbb")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "colours", tuple(c.lower() for c in colours))

    def __len__(self) -> int:
        return len(self.names)

    def name(self, class_id: int) -> str:
        return "background" if class_id == 0 else self.names[class_id - 1]

    def rgb(self, class_id: int) -> tuple[int, int, int]:
        hexa = self.colours[class_id - 1]
        return tuple(int(hexa[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]

    def id_of(self, value: str, where: str) -> int:
        """A class given as its id (``"2"``) or its name (``"tumour"``)."""
        text = str(value).strip()
        if text.isdigit():
            cid = int(text)
            if 1 <= cid <= len(self):
                return cid
            raise AnnotationError(f"{where}: class {cid} does not exist (classes are 1..{len(self)})")
        if text in self.names:
            return self.names.index(text) + 1
        raise AnnotationError(f"{where}: no class named {text!r} (classes: {', '.join(self.names)})")

    def to_json(self) -> list:
        return [{"name": n, "colour": c} for n, c in zip(self.names, self.colours)]

    @classmethod
    def from_json(cls, value, where: str) -> LabelClasses:
        """``value`` as written in ``project.json`` (names, or objects with ``name`` and
        ``colour``); one line naming ``where`` and the problem otherwise."""
        if not isinstance(value, list):
            raise AnnotationError(f'{where}: "classes" must be a list of names, like ["liver", "tumour"]')
        names, colours = [], []
        for i, entry in enumerate(value, start=1):
            if isinstance(entry, str):
                names.append(entry)
                colours.append(default_colour(i))
            elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
                names.append(entry["name"])
                colours.append(entry.get("colour", default_colour(i)))
            else:
                raise AnnotationError(f'{where}: class {i} must be a name or {{"name": ..., "colour": "#rrggbb"}}')
        try:
            return cls(tuple(names), tuple(colours))
        except AnnotationError as exc:
            raise AnnotationError(f"{where}: {exc}") from None


def check_class_values(arr, n_classes: int, kind: str, where: str) -> None:
    """Refuse a full mask (``kind="mask"``) or scribble array whose values name no class."""
    top = int(arr.max()) if arr.size else 0
    limit = n_classes if kind == "mask" else n_classes + 1
    if top > limit:
        if kind == "mask":
            raise AnnotationError(f"{where}: value {top} is no class (class ids are 1..{n_classes}, 0 is background)")
        raise AnnotationError(
            f"{where}: value {top} is no class (1 is background, 2..{n_classes + 1} are classes 1..{n_classes})"
        )


def stroke_class(label: int, n_classes: int) -> int:
    """The class a scribble value draws: 1 is background, ``1 + c`` class ``c`` (every value
    from 2 is the one class of a project with one structure)."""
    if label == BACKGROUND_STROKE:
        return 0
    return 1 if n_classes == 1 else label - 1
