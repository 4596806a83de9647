"""The panels of the dock widget: annotate, train, weights, next, export."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..protocol import InstanceKey


def combo(items, current: str, tip: str) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    box.setCurrentText(current)
    box.setToolTip(tip)
    return box


def hrow(*widgets) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row


def _slices(zs) -> str:
    return ", ".join(str(z) for z in zs[:8]) + (", ..." if len(zs) > 8 else "")


def _role_text(item) -> str:
    """The role of an image; for a volume, which slices carry full masks and weak annotations."""
    if not item.is_volume or item.role == "unlabelled":
        return item.role
    parts = []
    if item.role == "strong":
        parts.append("strong" if item.strong_slices is None else f"strong (slices {_slices(item.mask_slices())})")
    weak = item.weak_slices()
    if weak:
        parts.append(f"weak (slices {_slices(weak)})")
    return ", ".join(parts)


class AnnotatePanel(QGroupBox):
    """Pick an image, create its role-tagged layers, see each image's status."""

    def __init__(self, parent=None) -> None:
        super().__init__("1. Annotate", parent)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Image layer to annotate (2D, a stack of 2D images, or a 3D volume)")
        self.create_btn = QPushButton("Create annotation layers")
        self.create_btn.setToolTip(
            "Adds '<image> boxes', '<image> scribbles' (1 = background, 2+ = objects) and '<image> masks'"
        )
        self.new_object_btn = QPushButton("New scribble object")
        self.new_object_btn.setToolTip("Select the next free object id in the scribbles layer")
        self.assign_layer = QComboBox()
        self.assign_role = QComboBox()
        self.assign_role.addItems(["masks", "scribbles", "boxes"])
        self.assign_btn = QPushButton("Assign")
        self.assign_btn.setToolTip("Use an existing layer as the chosen image's masks, scribbles or boxes")
        self.status = QTableWidget(0, 3)
        self.status.setHorizontalHeaderLabels(["image", "role", "exhaustive"])
        self.status.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.status.verticalHeader().setVisible(False)
        self.status.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.status.setMaximumHeight(130)
        self.status.setToolTip("strong: has a full mask; weak: boxes or scribbles; exhaustive: every object is boxed")
        self.open_btn = QPushButton("Open project…")
        self.save_btn = QPushButton("Save project…")
        self.autosave = QCheckBox("autosave")
        self.autosave.setChecked(True)
        self.autosave.setToolTip("Write annotations into the project folder (atomically) as you draw")
        self.project_label = QLabel("no project folder")
        self.project_label.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addLayout(hrow(self.image_combo, self.create_btn))
        lay.addLayout(hrow(QLabel("layer"), self.assign_layer, QLabel("as"), self.assign_role, self.assign_btn))
        lay.addWidget(self.new_object_btn)
        lay.addWidget(self.status)
        lay.addLayout(hrow(self.open_btn, self.save_btn, self.autosave))
        lay.addWidget(self.project_label)

    def set_layers(self, images: list[str], assignable: list[str]) -> None:
        """The image layers to annotate (keeping the current choice) and the layers that can
        be given a role."""
        combo, current = self.image_combo, self.image_combo.currentText()
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(images)
        if current:
            combo.setCurrentText(current)
        combo.blockSignals(False)
        self.assign_layer.clear()
        self.assign_layer.addItems(assignable)

    def show_status(self, project) -> None:
        """One row per image: its name, role (and annotated slices) and the exhaustive flag."""
        table = self.status
        table.blockSignals(True)
        table.setRowCount(len(project))
        for r, item in enumerate(project):
            table.setItem(r, 0, QTableWidgetItem(item.name))
            table.setItem(r, 1, QTableWidgetItem(_role_text(item)))
            check = QTableWidgetItem()
            check.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled)
            check.setCheckState(Qt.Checked if item.exhaustive else Qt.Unchecked)
            table.setItem(r, 2, check)
        table.blockSignals(False)


class WeightsPanel(QGroupBox):
    """The learned weight of every weak annotation, sortable; pin to trust or ignore."""

    pin_requested = Signal(object, object)  # InstanceKey, value or None

    def __init__(self, parent=None) -> None:
        super().__init__("3. Annotation weights", parent)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["image", "instance", "kind", "weight", "class"])
        self.table.setColumnHidden(4, True)  # shown in projects of several classes
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.setMinimumHeight(140)
        self.table.setToolTip("Click a row to go to that annotation. Low weight: the model distrusts it.")
        self.trust_btn = QPushButton("Trust (1)")
        self.ignore_btn = QPushButton("Ignore (0)")
        self.unpin_btn = QPushButton("Unpin")
        lay = QVBoxLayout(self)
        lay.addWidget(self.table)
        lay.addLayout(hrow(self.trust_btn, self.ignore_btn, self.unpin_btn))
        self.trust_btn.clicked.connect(lambda: self._pin(1.0))
        self.ignore_btn.clicked.connect(lambda: self._pin(0.0))
        self.unpin_btn.clicked.connect(lambda: self._pin(None))

    def selected_key(self):
        rows = {i.row() for i in self.table.selectedIndexes()}
        if not rows:
            return None
        r = rows.pop()
        return InstanceKey(*(self.table.item(r, c).text() for c in (0, 1, 2)))

    def _pin(self, value) -> None:
        key = self.selected_key()
        if key is not None:
            self.pin_requested.emit(key, value)

    def set_weights(self, weights, classes: list[str] | None = None) -> None:
        """One row per weak annotation; ``classes``: the class of each, for a project of
        several classes."""
        selected = self.selected_key()
        self.table.setColumnHidden(4, classes is None)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(weights))
        for r, w in enumerate(weights):
            cells = [w.image, w.instance, w.kind]
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
            item = QTableWidgetItem()
            item.setData(Qt.DisplayRole, round(float(w.weight), 3))
            if w.pinned:
                item.setToolTip("pinned")
                item.setText(f"{w.weight:.3f} (pinned)")
            self.table.setItem(r, 3, item)
            self.table.setItem(r, 4, QTableWidgetItem(classes[r] if classes is not None else ""))
        self.table.setSortingEnabled(True)
        if selected is not None:
            for r in range(self.table.rowCount()):
                if tuple(self.table.item(r, c).text() for c in (0, 1, 2)) == selected:
                    self.table.selectRow(r)
                    break


class NextPanel(QGroupBox):
    """Where to annotate next, ranked."""

    def __init__(self, parent=None) -> None:
        super().__init__("4. Annotate next", parent)
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self.list.setToolTip("Images ranked by the networks' disagreement and by their least trusted annotation")
        QVBoxLayout(self).addWidget(self.list)


class ExportPanel(QGroupBox):
    """Masks and predictions to TIFF or NIfTI; save and load models."""

    def __init__(self, parent=None) -> None:
        super().__init__("5. Export", parent)
        self.format = QComboBox()
        self.format.addItems(["same as image", "tif", "nii.gz"])
        self.export_btn = QPushButton("Export predictions…")
        self.save_model_btn = QPushButton("Save model…")
        self.load_model_btn = QPushButton("Load model…")
        self.load_model_btn.setToolTip(
            "A model file (.pt), a checkpoint, or a bioimage.io package exported here (.zip)"
        )
        self.export_model_btn = QPushButton("Export model…")
        self.export_model_btn.setToolTip(
            "Share the model: a bioimage.io package (.zip: ilastik, deepImageJ, QuPath, bioimageio.core,\n"
            "napari-hybridseg) or ONNX (.onnx: onnxruntime and other engines)"
        )
        lay = QVBoxLayout(self)
        lay.addLayout(hrow(QLabel("format"), self.format, self.export_btn))
        lay.addLayout(hrow(self.save_model_btn, self.load_model_btn, self.export_model_btn))
