"""The classes of a project in napari: the list (add, rename, colour), the class the next
box, stroke and mask stroke get, and the class colours of every annotation layer.

The classes live on the image layers' tags (as they do in ``project.json``), so that
collecting the project from the layers finds them without any state here.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QColorDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from ..annotations import LabelClasses
from ..annotations.classes import default_colour
from ..bridge import BACKGROUND_STROKE_COLOUR, class_colormaps, classes_of_layers, role_of, shape_classes
from ..errors import AnnotationError
from .layers import tag, tagged_images

ONE_STRUCTURE = "One structure: every mask value above 0 is it. Add a class to segment several."


def _icon(colour: str) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(QColor(colour))
    return QIcon(pix)


class ClassPanel(QGroupBox):
    """Row 0 is background (for strokes), row ``c`` class ``c``; the selected row is what
    the next box (classes only), scribble stroke and mask stroke are."""

    def __init__(self, viewer, on_change, parent=None) -> None:
        super().__init__("Classes", parent)
        self.viewer, self.on_change = viewer, on_change
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self.hint = QLabel(ONE_STRUCTURE)
        self.hint.setWordWrap(True)
        self.add_btn = QPushButton("Add class")
        self.colour_btn = QPushButton("Colour...")
        lay = QVBoxLayout(self)
        lay.addWidget(self.hint)
        lay.addWidget(self.list)
        row = QHBoxLayout()
        row.addWidget(self.add_btn)
        row.addWidget(self.colour_btn)
        lay.addLayout(row)
        self.list.currentRowChanged.connect(self._apply_pick)
        self.list.itemChanged.connect(self._renamed)
        self.add_btn.clicked.connect(lambda: self.add_class())
        self.colour_btn.clicked.connect(self._colour_dialog)
        self._picked = 1
        self.refresh()

    # -- state ----------------------------------------------------------------------------
    @property
    def classes(self) -> LabelClasses | None:
        return classes_of_layers(self.viewer.layers)

    def refresh(self) -> None:
        """Show the classes the layers carry (after a project opens or layers change)."""
        classes = self.classes
        self.hint.setVisible(classes is None)
        self.list.blockSignals(True)
        self.list.clear()
        background = QListWidgetItem(_icon(BACKGROUND_STROKE_COLOUR), "background (strokes)")
        self.list.addItem(background)
        for k, name in enumerate(classes.names if classes is not None else ("object",), start=1):
            item = QListWidgetItem(_icon(classes.colours[k - 1]) if classes else QIcon(), name)
            if classes is not None:
                item.setFlags(item.flags() | Qt.ItemIsEditable)
            self.list.addItem(item)
        self.list.setCurrentRow(min(self._picked, self.list.count() - 1))
        self.list.blockSignals(False)
        self.colour_btn.setEnabled(classes is not None)

    def pick(self, class_id: int) -> None:
        """The class of the next box and strokes (0: background, for strokes)."""
        self.list.setCurrentRow(class_id)
        self._apply_pick(class_id)

    def _apply_pick(self, class_id: int) -> None:
        if class_id < 0:
            return
        self._picked = class_id
        classes = self.classes
        for layer in self.viewer.layers:
            role = role_of(layer)[0]
            if role == "scribbles":
                layer.selected_label = 1 + class_id  # one structure: rows 0 (background) and 1 only
            elif role == "strong":
                layer.selected_label = class_id if classes is not None else max(class_id, 1)
            elif role == "boxes" and classes is not None and class_id >= 1:
                layer.feature_defaults = {**_defaults(layer), "class": class_id}
                layer.current_edge_color = classes.colours[class_id - 1]

    def new_object_label(self, scribbles) -> int:
        """The stroke value for "new object": the next free value in a project of one
        structure (each object its own value), the picked class's otherwise."""
        if self.classes is None:
            return max(2, int(np.max(scribbles.data)) + 1)
        return 1 + max(self._picked, 1)

    # -- editing --------------------------------------------------------------------------
    def add_class(self, name: str | None = None) -> bool:
        """Add a class; a project of one structure becomes one of two classes ("object" and
        the new one) after the user agrees to renumber its masks and strokes."""
        classes = self.classes
        if classes is None and not self._convert_to_classes():
            return False
        names, colours = (classes.names, classes.colours) if classes is not None else (("object",), ())
        new = name or next(f"class {k}" for k in range(len(names) + 1, 1000) if f"class {k}" not in names)
        colours = (*colours, default_colour(len(names) + 1)) if colours else ()
        return self._set((*names, new), colours)

    def _convert_to_classes(self) -> bool:
        layers = [layer for layer in self.viewer.layers if role_of(layer)[0] in ("strong", "scribbles")]
        numbered = any(
            np.asarray(layer.data).max(initial=0) > (1 if role_of(layer)[0] == "strong" else 2) for layer in layers
        )
        if numbered and not self._confirm(
            "Masks or strokes here number objects (values above 1). With classes, a mask value is a class: "
            "every object becomes class 1 ('object'). Go on?"
        ):
            return False
        for layer in layers:
            data = layer.data
            top = 1 if role_of(layer)[0] == "strong" else 2
            data[data > top] = top
            layer.refresh()
        return True

    def _confirm(self, text: str) -> bool:
        return QMessageBox.question(self, "Add a class", text) == QMessageBox.Yes

    def _renamed(self, item: QListWidgetItem) -> None:
        classes, row = self.classes, self.list.row(item)
        if classes is None or row < 1:
            return
        names = list(classes.names)
        names[row - 1] = item.text()
        if not self._set(tuple(names), classes.colours):
            self.refresh()

    def set_colour(self, class_id: int, colour: str) -> bool:
        classes = self.classes
        if classes is None or not 1 <= class_id <= len(classes):
            return False
        colours = list(classes.colours)
        colours[class_id - 1] = colour
        return self._set(classes.names, tuple(colours))

    def _colour_dialog(self) -> None:
        row = self.list.currentRow()
        classes = self.classes
        if classes is None or row < 1:
            return
        chosen = QColorDialog.getColor(QColor(classes.colours[row - 1]), self, f"Colour of {classes.names[row - 1]}")
        if chosen.isValid():
            self.set_colour(row, chosen.name())

    def _set(self, names: tuple[str, ...], colours: tuple[str, ...] = ()) -> bool:
        """Record new classes on every image layer and recolour the annotation layers;
        a name that is empty or taken is refused with its reason in the hint."""
        try:
            classes = LabelClasses(tuple(names), tuple(colours))
        except AnnotationError as exc:
            self.hint.setText(str(exc))
            self.hint.setVisible(True)
            return False
        for layer in tagged_images(self.viewer):
            tag(layer, "image", role_of(layer)[1], classes=classes.to_json())
        recolour(self.viewer, classes)
        self.hint.setText(ONE_STRUCTURE)
        self.refresh()
        self._apply_pick(self._picked)
        self.on_change()
        return True


def _defaults(layer) -> dict:
    defaults = getattr(layer, "feature_defaults", None)
    if defaults is None or not len(getattr(defaults, "columns", ())):
        return {}
    return {c: defaults[c].iloc[0] for c in defaults.columns}


def recolour(viewer, classes: LabelClasses | None) -> None:
    """Masks, strokes and boxes in the colours of their classes."""
    masks, strokes = class_colormaps(classes)
    for layer in viewer.layers:
        role = role_of(layer)[0]
        if role == "strong" and masks:
            layer.colormap = masks["colormap"]
        elif role == "scribbles" and strokes:
            layer.colormap = strokes["colormap"]
        elif role == "boxes" and classes is not None and len(layer.data):
            ids = shape_classes(layer.features, len(layer.data))
            layer.edge_color = [classes.colours[c - 1 if c <= len(classes) else 0] for c in ids]
