"""The "Hybrid segmentation" dock widget: annotate, train live, inspect weights, export."""

from __future__ import annotations

import tempfile
import time
import weakref
from pathlib import Path

from qtpy.QtCore import QSettings, Qt, QTimer, Signal
from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget

from ..bridge import role_of
from ..errors import HybridSegError
from ..protocol import RequestPreview
from ..training.run_folder import fresh_run_folder
from ..training.runners import ProcessRunner, ThreadRunner
from . import layers as L
from .class_panel import ClassPanel
from .edits import watch
from .layer_checks import untag_copy
from .live_view import LiveView, notify_error, notify_info
from .model_actions import ModelActions
from .panels import AnnotatePanel, ExportPanel, NextPanel, WeightsPanel
from .project_folder import ProjectFolderMixin
from .session import Session, TrainingState
from .train_panel import TrainPanel

EDIT_DEBOUNCE_MS = 800
VIEW_DEBOUNCE_MS = 300


def user_settings() -> QSettings:
    """The widget's settings for this user account: an INI file in Qt's settings folder
    on every platform (not the registry or a plist), so that one folder holds them all."""
    return QSettings(QSettings.IniFormat, QSettings.UserScope, "napari-hybridseg", "napari-hybridseg")


def _timer(parent, ms: int, slot) -> QTimer:
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(ms)
    timer.timeout.connect(slot)
    return timer


class HybridSegWidget(ProjectFolderMixin, QWidget):
    """Dock widget.  Scripting: :meth:`open_project`, :meth:`save_project`, :meth:`start_training`,
    :meth:`stop_training` and :attr:`finished` (the run's last event)."""

    finished = Signal(object)  # FinishedEvent or ErrorEvent

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.project_root: Path | None = None
        self._watched: set[int] = set()
        self._named: weakref.WeakSet = weakref.WeakSet()
        self.session = Session(self)

        self.annotate = AnnotatePanel()
        self.classes = ClassPanel(self.viewer, self._edited)
        self.train = TrainPanel(settings=user_settings())
        self.weights_panel = WeightsPanel()
        self.next_panel = NextPanel()
        self.export = ExportPanel()
        inner = QWidget()
        lay = QVBoxLayout(inner)
        for panel in (self.annotate, self.classes, self.train, self.weights_panel, self.next_panel, self.export):
            lay.addWidget(panel)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(360)

        self.live = LiveView(self.viewer, self.train, self.weights_panel, self.next_panel)
        self.models = ModelActions(self)
        self.session.event_received.connect(self.live.on_event)
        self.session.finished.connect(self._finished)
        self.session.state_changed.connect(self._state_changed)
        self._edit_timer = _timer(self, EDIT_DEBOUNCE_MS, self._annotations_changed)
        self._view_timer = _timer(self, VIEW_DEBOUNCE_MS, self._request_preview)  # previews follow the view

        a, t, w = self.annotate, self.train, self.weights_panel
        a.create_btn.clicked.connect(self.create_layers)
        a.new_object_btn.clicked.connect(self.new_object)
        a.assign_btn.clicked.connect(self.assign_layer)
        a.open_btn.clicked.connect(lambda: self._folder_dialog("Open project folder", self.open_project))
        a.save_btn.clicked.connect(lambda: self._folder_dialog("Save project into folder", self.save_project))
        a.status.cellChanged.connect(self._status_edited)
        t.start_btn.clicked.connect(lambda: self.start_training())
        t.stop_btn.clicked.connect(self.stop_training)
        t.pause_btn.toggled.connect(self._pause_toggled)
        t.predict_btn.clicked.connect(self.models.predict_once)
        t.attach_btn.clicked.connect(lambda: self._folder_dialog("Attach to a run folder", self.attach_run))
        w.pin_requested.connect(self.pin)
        w.table.cellClicked.connect(self._weight_clicked)
        self.next_panel.list.itemClicked.connect(lambda item: self.go_to_image(item.text().split("  ")[0]))
        self.export.export_btn.clicked.connect(self.models.export_dialog)
        self.export.save_model_btn.clicked.connect(self.models.save_dialog)
        self.export.load_model_btn.clicked.connect(self.models.load_dialog)
        self.export.export_model_btn.clicked.connect(self.models.export_model_dialog)
        self.viewer.dims.events.current_step.connect(lambda e: self._view_timer.start())
        self.viewer.camera.events.zoom.connect(lambda e: self._view_timer.start())
        self.viewer.camera.events.center.connect(lambda e: self._view_timer.start())
        a.image_combo.currentTextChanged.connect(lambda _: self._view_timer.start())
        t.live.toggled.connect(lambda _: self._view_timer.start())
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self._layers_changed()

    # -- layers and annotations -----------------------------------------------------------
    def _layers_changed(self, event=None) -> None:
        copied = untag_copy(self.viewer, event.value) if getattr(event, "type", None) == "inserted" else None
        if copied:
            notify_info(copied)
        tagged = {role_of(layer)[1] for layer in L.tagged_images(self.viewer)}
        if tagged != getattr(self, "_tagged", tagged):
            self._edited()  # an image tagged or removed: a running training hears of it
        self._tagged = tagged
        self.annotate.set_layers(
            [layer.name for layer in L.image_layers(self.viewer) if role_of(layer)[0] in (None, "image")],
            [layer.name for layer in self.viewer.layers if layer._type_string in ("labels", "shapes")],
        )
        for layer in self.viewer.layers:
            if layer not in self._named:  # a renamed layer is listed under its new name
                self._named.add(layer)
                layer.events.name.connect(lambda e: self._layers_changed())
            if role_of(layer)[0] in ("strong", "scribbles", "boxes") and id(layer) not in self._watched:
                self._watched.add(id(layer))
                watch(layer, self._edited, self._across_slices, notify_error)
        self.classes.refresh()
        self.refresh_status()

    def _across_slices(self) -> bool:
        """Whether the view shows the slice axis of the volumes (napari's transposed views)."""
        dims = self.viewer.dims
        return dims.ndisplay == 2 and dims.ndim >= 3 and (dims.ndim - 3) in dims.displayed

    def _edited(self, event=None) -> None:
        self._edit_timer.start()

    def _annotations_changed(self) -> None:
        try:
            project = L.collect_project(self.viewer, self.project_root)
        except (HybridSegError, ValueError) as exc:
            if self.train.message.text() != str(exc):  # said once, not at every stroke
                notify_error(str(exc))
            self.train.message.setText(str(exc))
            return
        self.refresh_status(project)
        self.session.update_project(project)
        if self.project_root is not None and self.annotate.autosave.isChecked():
            try:
                project.save(self.project_root)
            except (HybridSegError, OSError, ValueError) as exc:
                notify_error(f"autosave to {self.project_root} failed: {exc}")

    def current_image_layer(self):
        name = self.annotate.image_combo.currentText()
        return next((layer for layer in L.image_layers(self.viewer) if layer.name == name), None)

    def create_layers(self) -> None:
        layer = self.current_image_layer()
        if layer is None:
            notify_error("open an image first, then choose it in the Annotate panel")
            return
        try:
            L.ensure_annotation_layers(self.viewer, layer)
        except HybridSegError as exc:
            notify_error(str(exc))
            return
        self._layers_changed()
        self._prepare_training()

    def _prepare_training(self) -> None:  # the next run's process loads torch while the user annotates
        self.session.runner_factory = ProcessRunner if self.train.separate_process.isChecked() else ThreadRunner
        self.session.prepare()

    def new_object(self) -> None:
        name = self.current_name()
        layer = L.find_layer(self.viewer, name, "scribbles") if name else None
        if layer is None:
            notify_error("create the annotation layers first")
            return
        layer.selected_label = self.classes.new_object_label(layer)
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer

    def assign_layer(self) -> None:
        image, target = self.current_image_layer(), self.annotate.assign_layer.currentText()
        if image is None or target not in self.viewer.layers:
            return
        problem = L.assign_role(self.viewer, image, self.viewer.layers[target], self.annotate.assign_role.currentText())
        if problem:
            notify_error(problem)
        self._layers_changed()

    def current_name(self) -> str | None:
        """The tagged image the user works on (the chosen one, else the first)."""
        layer = self.current_image_layer()
        if layer is not None and role_of(layer)[0] == "image":
            return role_of(layer)[1]
        tagged = L.tagged_images(self.viewer)
        return role_of(tagged[0])[1] if tagged else None

    def refresh_status(self, project=None) -> None:
        if project is None:
            try:
                project = L.collect_project(self.viewer, snapshot=False)
            except (HybridSegError, ValueError):
                return
        self.annotate.show_status(project)

    def _status_edited(self, row: int, col: int) -> None:
        if col != 2:
            return
        name = self.annotate.status.item(row, 0).text()
        layer = L.find_layer(self.viewer, name, "image")
        if layer is not None:
            L.tag(layer, "image", name, exhaustive=self.annotate.status.item(row, 2).checkState() == Qt.Checked)
            self._edited()

    # -- training -------------------------------------------------------------------------
    def _config(self, steps=None):
        return self.train.config(steps)

    def start_training(self, steps: int | None = None) -> bool:
        """Train on the annotations now in the viewer; returns False (and says why) if it cannot.

        The annotations are snapshotted here; targets and normalisation are computed by
        the runner, so the window never waits for them.
        """
        if self.session.busy:
            return False
        try:
            project = L.collect_project(self.viewer, self.project_root)
            cfg = self._config(steps)
            if not project.by_role("strong"):
                raise HybridSegError("no image has a full mask: draw a full mask on at least one image (or a crop)")
            if self.project_root is not None:
                run_dir = fresh_run_folder(self.project_root / "runs", time.strftime("%Y%m%d-%H%M%S"))
            else:
                run_dir = Path(tempfile.mkdtemp(prefix="hybridseg-run-"))
            init = self.session.model_path if self.train.continue_box.isChecked() else None
            self.session.runner_factory = ProcessRunner if self.train.separate_process.isChecked() else ThreadRunner
            self.session.start(project, cfg, run_dir, init, self._preview_request())
            self.live.started(cfg.steps, run_dir)
        except (HybridSegError, ValueError, OSError) as exc:
            notify_error(f"cannot start training: {exc}")
            self.train.message.setText(str(exc))
            self.train.set_running(False)
            return False
        return True

    def _preview_request(self) -> RequestPreview | None:
        return self.live.preview_request(self.current_name())

    def _request_preview(self) -> None:
        self.session.request_preview(self._preview_request())

    def attach_run(self, run_dir) -> None:
        """Follow a run that trains elsewhere; edits (autosaved), pins, pause and stop reach it."""
        self.session.attach(run_dir)
        self.live.started(0, run_dir)
        self._request_preview()

    def stop_training(self) -> None:
        self.session.stop()

    def _pause_toggled(self, paused: bool) -> None:
        self.session.pause(paused)
        self.train.pause_btn.setText("Resume" if paused else "Pause")

    def _state_changed(self, state: TrainingState) -> None:
        self.train.set_running(state is not TrainingState.IDLE)

    def _finished(self, event) -> None:
        self.live.finished(event, self.session.model_path)
        self.finished.emit(event)

    def pin(self, key, value) -> None:
        """Fix an annotation's weight (1 trust, 0 ignore, ``None`` unpin), now and in later runs."""
        self.session.pin(key, value)
        self.live.pinned(key, value)

    # -- navigation -----------------------------------------------------------------------
    def _weight_clicked(self, row: int, col: int) -> None:
        image, instance, kind = (self.weights_panel.table.item(row, c).text() for c in (0, 1, 2))
        self.go_to(image, kind, instance)

    def go_to_image(self, image: str) -> None:
        self.go_to(image, "image", "")

    def go_to(self, image: str, kind: str, instance: str) -> None:
        """Show ``image`` and centre the view on one of its annotations."""
        L.go_to(self.viewer, image, kind, instance)

    # -- models and export (see ModelActions) ---------------------------------------------
    def predict_once(self) -> None:
        self.models.predict_once()

    def export_predictions(self, folder, fmt: str = "same as image") -> list[Path]:
        return self.models.export_predictions(folder, fmt)

    def save_model(self, path) -> Path:
        return self.models.save_model(path)

    def load_model(self, path) -> None:
        self.models.load_model(path)
