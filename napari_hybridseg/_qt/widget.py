"""The "Hybrid segmentation" dock widget: annotate, train live, inspect weights, export."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QFileDialog, QScrollArea, QVBoxLayout, QWidget

from .. import events as ev
from ..bridge import rank_next, role_of
from ..errors import HybridSegError
from . import layers as L
from .panels import AnnotatePanel, ExportPanel, NextPanel, TrainPanel, WeightsPanel

EDIT_DEBOUNCE_MS = 800


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def _notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def _role_text(item) -> str:
    """The role of an image; for a volume, which slices carry weak annotations."""
    if not item.is_volume or item.role != "weak":
        return item.role
    return f"weak (slices {', '.join(str(z) for z in item.weak_slices())})"


class HybridSegWidget(QWidget):
    """Dock widget.  Scripting: :meth:`start_training`, :meth:`stop_training`, :attr:`finished`."""

    finished = Signal(object)  # FinishedEvent or ErrorEvent

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.project_root: Path | None = None
        self.trainer = None
        self.worker = None
        self.nets = None
        self.model_config = None
        self.run_dir: Path | None = None
        self.last_model: Path | None = None
        self.pins: dict[tuple[str, str, str], float] = {}
        self.weights: list = []
        self.disagreement: dict[str, float] = {}
        self._progress = None
        self._last_plot = 0.0
        self._watched: set[int] = set()
        self._stop_requested = False

        self.annotate = AnnotatePanel()
        self.train = TrainPanel()
        self.weights_panel = WeightsPanel()
        self.next_panel = NextPanel()
        self.export = ExportPanel()
        inner = QWidget()
        lay = QVBoxLayout(inner)
        for panel in (self.annotate, self.train, self.weights_panel, self.next_panel, self.export):
            lay.addWidget(panel)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(360)

        self._edit_timer = QTimer(self)
        self._edit_timer.setSingleShot(True)
        self._edit_timer.setInterval(EDIT_DEBOUNCE_MS)
        self._edit_timer.timeout.connect(self._annotations_changed)

        a, t, w = self.annotate, self.train, self.weights_panel
        a.create_btn.clicked.connect(self.create_layers)
        a.new_object_btn.clicked.connect(self.new_object)
        a.assign_btn.clicked.connect(self.assign_layer)
        a.open_btn.clicked.connect(self._open_dialog)
        a.save_btn.clicked.connect(self._save_dialog)
        a.status.cellChanged.connect(self._status_edited)
        t.start_btn.clicked.connect(lambda: self.start_training())
        t.stop_btn.clicked.connect(self.stop_training)
        t.pause_btn.toggled.connect(self._pause_toggled)
        t.predict_btn.clicked.connect(self.predict_once)
        w.pin_requested.connect(self.pin)
        w.table.cellClicked.connect(self._weight_clicked)
        self.next_panel.list.itemClicked.connect(lambda item: self.go_to_image(item.text().split("  ")[0]))
        self.export.export_btn.clicked.connect(self._export_dialog)
        self.export.save_model_btn.clicked.connect(self._save_model_dialog)
        self.export.load_model_btn.clicked.connect(self._load_model_dialog)
        # live previews follow the image and slice in view
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(300)
        self._view_timer.timeout.connect(self._request_preview)
        self.viewer.dims.events.current_step.connect(lambda e: self._view_timer.start())
        self.annotate.image_combo.currentTextChanged.connect(lambda _: self._view_timer.start())
        self.train.live.toggled.connect(lambda _: self._view_timer.start())
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self._layers_changed()

    # -- layers and annotations -----------------------------------------------------------
    def _layers_changed(self, event=None) -> None:
        combo, current = self.annotate.image_combo, self.annotate.image_combo.currentText()
        combo.blockSignals(True)
        combo.clear()
        combo.addItems([layer.name for layer in L.image_layers(self.viewer) if role_of(layer)[0] in (None, "image")])
        if current:
            combo.setCurrentText(current)
        combo.blockSignals(False)
        self.annotate.assign_layer.clear()
        self.annotate.assign_layer.addItems(
            [layer.name for layer in self.viewer.layers if layer._type_string in ("labels", "shapes")]
        )
        for layer in self.viewer.layers:
            role = role_of(layer)[0]
            if role in ("strong", "scribbles", "boxes") and id(layer) not in self._watched:
                self._watched.add(id(layer))
                layer.events.data.connect(self._edited)
                if hasattr(layer.events, "paint"):
                    layer.events.paint.connect(self._edited)
        self.refresh_status()

    def _edited(self, event=None) -> None:
        self._edit_timer.start()

    def _annotations_changed(self) -> None:
        try:
            project = L.collect_project(self.viewer, self.project_root)
        except (HybridSegError, ValueError) as exc:
            self.train.message.setText(str(exc))
            return
        self.refresh_status(project)
        if self.trainer is not None and self.worker is not None:
            self.trainer.update_project(project)
        if self.project_root is not None and self.annotate.autosave.isChecked():
            try:
                project.save(self.project_root)
            except (HybridSegError, OSError, ValueError) as exc:
                _notify_error(f"autosave to {self.project_root} failed: {exc}")

    def current_image_layer(self):
        name = self.annotate.image_combo.currentText()
        for layer in L.image_layers(self.viewer):
            if layer.name == name:
                return layer
        return None

    def create_layers(self) -> None:
        layer = self.current_image_layer()
        if layer is None:
            _notify_error("open an image first, then choose it in the Annotate panel")
            return
        L.ensure_annotation_layers(self.viewer, layer)
        self._layers_changed()

    def new_object(self) -> None:
        name = self._current_name()
        layer = L.find_layer(self.viewer, name, "scribbles") if name else None
        if layer is None:
            _notify_error("create the annotation layers first")
            return
        layer.selected_label = max(2, int(np.max(layer.data)) + 1)
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer

    def assign_layer(self) -> None:
        image = self.current_image_layer()
        target = self.annotate.assign_layer.currentText()
        role = {"masks": "strong", "scribbles": "scribbles", "boxes": "boxes"}[self.annotate.assign_role.currentText()]
        if image is None or target not in self.viewer.layers:
            return
        layer = self.viewer.layers[target]
        need = "shapes" if role == "boxes" else "labels"
        if layer._type_string != need:
            _notify_error(f"layer {target!r} is a {layer._type_string} layer; {role} need a {need} layer")
            return
        if role_of(image)[0] != "image":
            L.tag(image, "image", image.name, exhaustive=True)
        L.tag(layer, role, role_of(image)[1])
        self._layers_changed()

    def _current_name(self) -> str | None:
        layer = self.current_image_layer()
        if layer is not None and role_of(layer)[0] == "image":
            return role_of(layer)[1]
        tagged = L.tagged_images(self.viewer)
        return role_of(tagged[0])[1] if tagged else None

    def refresh_status(self, project=None) -> None:
        table = self.annotate.status
        if project is None:
            try:
                project = L.collect_project(self.viewer)
            except (HybridSegError, ValueError):
                return
        table.blockSignals(True)
        table.setRowCount(len(project))
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QTableWidgetItem

        for r, item in enumerate(project):
            table.setItem(r, 0, QTableWidgetItem(item.name))
            table.setItem(r, 1, QTableWidgetItem(_role_text(item)))
            check = QTableWidgetItem()
            check.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled)
            check.setCheckState(Qt.Checked if item.exhaustive else Qt.Unchecked)
            table.setItem(r, 2, check)
        table.blockSignals(False)

    def _status_edited(self, row: int, col: int) -> None:
        if col != 2:
            return
        from qtpy.QtCore import Qt

        name = self.annotate.status.item(row, 0).text()
        layer = L.find_layer(self.viewer, name, "image")
        if layer is not None:
            L.tag(layer, "image", name, exhaustive=self.annotate.status.item(row, 2).checkState() == Qt.Checked)
            self._edited()

    # -- project folder -------------------------------------------------------------------
    def open_project(self, root) -> None:
        """Show a project folder's layers (opening them if needed) and autosave into it."""
        root = Path(root)
        if not any(role_of(layer)[0] == "image" for layer in self.viewer.layers):
            self.viewer.open(str(root), plugin="napari-hybridseg")
        self.project_root = root
        self.annotate.project_label.setText(f"project: {root}")
        self._layers_changed()

    def save_project(self, root) -> None:
        root = Path(root)
        L.collect_project(self.viewer, root).save(root)
        self.project_root = root
        self.annotate.project_label.setText(f"project: {root}")

    def _open_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open project folder")
        if path:
            try:
                self.open_project(path)
            except (HybridSegError, OSError, ValueError) as exc:
                _notify_error(str(exc))

    def _save_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Save project into folder")
        if path:
            try:
                self.save_project(path)
            except (HybridSegError, OSError, ValueError) as exc:
                _notify_error(str(exc))

    # -- training -------------------------------------------------------------------------
    def _config(self, steps=None):
        from ..config import TrainConfig

        return TrainConfig(
            method=self.train.method.currentText(),
            dii_box_target=self.train.box_check.currentText(),
            steps=int(steps if steps is not None else self.train.steps.value()),
            device=self.train.device.currentText(),
        )

    def start_training(self, steps: int | None = None) -> bool:
        """Train on the annotations now in the viewer; returns False (and says why) if it cannot.

        Only the annotations are read here; the trainer is built (targets, normalisation)
        in the worker thread so that the window never waits for it.
        """
        if self.worker is not None:
            return False
        from napari.qt.threading import create_worker

        try:
            project = L.collect_project(self.viewer, self.project_root)
            cfg = self._config(steps)
            if not project.by_role("strong"):
                raise HybridSegError("no image has a full mask: draw a full mask on at least one image (or a crop)")
        except (HybridSegError, ValueError, OSError) as exc:
            _notify_error(f"cannot start training: {exc}")
            self.train.message.setText(str(exc))
            return False
        init = self.last_model if self.train.continue_box.isChecked() and self.last_model else None
        if self.project_root is not None:
            run_dir = self.project_root / "runs" / time.strftime("%Y%m%d-%H%M%S")
        else:
            run_dir = Path(tempfile.mkdtemp(prefix="hybridseg-run-"))
        self.trainer, self.run_dir = None, run_dir
        self._stop_requested = False
        self.train.loss_plot.clear()
        self.train.progress.setRange(0, cfg.steps)
        self.train.progress.setValue(0)
        self.train.set_running(True)
        self.train.message.setText(f"starting; run folder: {run_dir}")
        from napari.utils import progress

        self._progress = progress(total=cfg.steps, desc="hybridseg training")
        preview = self._preview_request()
        self.worker = create_worker(
            self._train, project, cfg, run_dir, init, dict(self.pins), preview, _start_thread=False
        )
        self.worker.yielded.connect(self._on_event)
        self.worker.errored.connect(lambda exc: self._on_event(ev.ErrorEvent(0, str(exc))))
        self.worker.finished.connect(self._worker_done)
        self.worker.start()
        return True

    def _train(self, project, cfg, run_dir, init, pins, preview):
        """Worker-thread generator: build the trainer, then relay its events."""
        import torch

        from ..trainer import Trainer

        try:
            # leave a core to napari's event loop
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
            trainer = Trainer(project, cfg, run_dir, init_model=init)
        except (HybridSegError, ValueError, OSError) as exc:
            yield ev.ErrorEvent(0, f"cannot start training: {exc}")
            return
        for key, value in pins.items():
            trainer.pin(key, value)
        self._apply_preview(trainer, preview)
        self.trainer = trainer
        if self._stop_requested:
            trainer.stop()
        yield from trainer.run()

    def _preview_request(self):
        """``(name, z, every, image layer data)`` for the visible image, or ``None``."""
        name = self._current_name()
        if not self.train.live.isChecked() or name is None:
            return None
        layer = L.find_layer(self.viewer, name, "image")
        if layer is None:
            return None
        z = int(self.viewer.dims.current_step[0]) if layer.ndim == 3 and not layer.rgb else None
        return name, z, self.train.every.value(), layer.data

    @staticmethod
    def _apply_preview(trainer, preview) -> None:
        if preview is None:
            trainer.request_preview(None)
            return
        name, z, every, data = preview

        def source(n, zz):  # called in the worker thread: normalising there keeps napari responsive
            from ..images import spatial_axes
            from ..preprocess import normalize

            if n != name:
                return None
            arr = np.asarray(data)
            axes = spatial_axes(arr)
            return normalize(arr[zz], "yx") if axes == "zyx" else normalize(arr, axes)

        trainer.set_preview_source(source)
        trainer.request_preview(name, z, every=every)

    def _request_preview(self) -> None:
        if self.trainer is None or self.worker is None:
            return
        self._apply_preview(self.trainer, self._preview_request())

    def stop_training(self) -> None:
        self._stop_requested = True
        if self.trainer is not None:
            self.trainer.stop()

    def _pause_toggled(self, paused: bool) -> None:
        if self.trainer is None:
            return
        if paused:
            self.trainer.pause()
            self.train.pause_btn.setText("Resume")
        else:
            self.trainer.resume()
            self.train.pause_btn.setText("Pause")

    def pin(self, key, value) -> None:
        key = tuple(key)
        if value is None:
            self.pins.pop(key, None)
        else:
            self.pins[key] = float(value)
        if self.trainer is not None and self.worker is not None:
            self.trainer.pin(key, value)
        for w in self.weights:
            if (w.image, w.instance, w.kind) == key:
                w.pinned = value is not None
                if value is not None:
                    w.weight = float(value)
        self._show_weights(self.weights)

    def _on_event(self, event) -> None:
        t = self.train
        if isinstance(event, ev.StartedEvent):
            t.device_label.setText(f"using {event.device}")
        elif isinstance(event, ev.StepEvent):
            t.progress.setValue(event.step)
            if self._progress is not None:
                self._progress.update(event.step - self._progress.n)
            t.loss_plot.add(event.step, event.losses)
            now = time.monotonic()
            if now - self._last_plot > 0.5:
                self._last_plot = now
                t.loss_plot.update()
                t.message.setText(f"step {event.step}/{event.total}  loss {event.losses['total']:.4f}")
        elif isinstance(event, ev.WeightsEvent):
            self._show_weights(event.weights)
        elif isinstance(event, ev.PreviewEvent):
            L.show_prediction(self.viewer, event.image, event.z, event.probability, event.uncertainty)
            if event.uncertainty is not None:
                self.disagreement[event.image] = float(event.uncertainty.mean())
                self._rank()
            from ..predict import explain_empty

            why = explain_empty(event.probability)
            if why and event.step >= (self.trainer.cfg.steps if self.trainer else 0):
                t.message.setText(f"{event.image}: empty prediction: {why}")
        elif isinstance(event, ev.PausedEvent):
            t.message.setText("paused" if event.paused else "running")
        elif isinstance(event, ev.FinishedEvent):
            self.nets = self.trainer.nets if self.trainer is not None else None
            if event.run_dir:
                self.last_model = Path(event.run_dir) / "model.pt"
            t.loss_plot.update()
            t.message.setText(
                f"{'stopped' if event.stopped else 'finished'} at step {event.step} ({event.elapsed:.0f} s); "
                f"model in {self.last_model}"
            )
            self.finished.emit(event)
        elif isinstance(event, ev.ErrorEvent):
            _notify_error(f"training failed: {event.message}")
            t.message.setText(f"training failed at step {event.step}: {event.message}. Annotations are kept.")
            self.finished.emit(event)

    def _worker_done(self) -> None:
        self.worker = None
        self.train.set_running(False)
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self.trainer is not None:
            self.nets = self.trainer.nets
            self.model_config = self.trainer.cfg
            self.in_channels = self.trainer.tset.in_channels

    def _show_weights(self, weights) -> None:
        self.weights = list(weights)
        self.weights_panel.set_weights(self.weights)
        L.show_weights(self.viewer, self.weights)
        self._rank()

    def _rank(self) -> None:
        lst = self.next_panel.list
        lst.clear()
        for _, name, reason in rank_next(self.weights, self.disagreement):
            lst.addItem(f"{name}  ({reason})")

    def _weight_clicked(self, row: int, col: int) -> None:
        table = self.weights_panel.table
        image, instance, kind = (table.item(row, c).text() for c in (0, 1, 2))
        self.go_to(image, kind, instance)

    def go_to_image(self, image: str) -> None:
        self.go_to(image, "image", "")

    def go_to(self, image: str, kind: str, instance: str) -> None:
        """Show ``image`` and centre the view on one of its annotations."""
        L.show_only(self.viewer, image)
        where = L.instance_location(self.viewer, image, kind, instance)
        if where is None:
            return
        where = np.asarray(where, float)
        if where.size == 3:
            step = list(self.viewer.dims.current_step)
            layer = L.find_layer(self.viewer, image, "image")
            step[0] = int(round(layer.world_to_data(where)[0])) if layer is not None else step[0]
            self.viewer.dims.current_step = tuple(step)
        self.viewer.camera.center = tuple(where[-2:])

    # -- prediction and export ------------------------------------------------------------
    def predict_once(self) -> None:
        name = self._current_name()
        if self.nets is None or name is None:
            _notify_error("train or load a model first")
            return
        layer = L.find_layer(self.viewer, name, "image")
        from napari.qt.threading import create_worker

        from ..images import spatial_axes
        from ..predict import predict_image

        data = np.asarray(layer.data)
        z = int(self.viewer.dims.current_step[0]) if spatial_axes(data) == "zyx" else None
        img = data[z] if z is not None else data
        axes = spatial_axes(img)
        nets = self.nets

        def work():
            return predict_image(nets, img, axes)

        worker = create_worker(work, _start_thread=False)
        worker.returned.connect(
            lambda pred: L.show_prediction(self.viewer, name, z, pred.probability, pred.uncertainty)
        )
        worker.errored.connect(lambda exc: _notify_error(f"prediction failed: {exc}"))
        worker.start()
        self._predict_worker = worker

    def export_predictions(self, folder, fmt: str = "same as image") -> list[Path]:
        """Predict every image with the current model and write masks to ``folder``."""
        from ..images import ImageMeta, spatial_axes
        from ..predict import predict_image, save_prediction

        if self.nets is None:
            raise HybridSegError("train or load a model first")
        written = []
        for layer in L.tagged_images(self.viewer):
            name = role_of(layer)[1]
            meta = ImageMeta.from_layer_metadata(layer.metadata.get("hybridseg", {}), layer.scale)
            data = np.asarray(layer.data)
            pred = predict_image(self.nets, data, spatial_axes(data))
            written += save_prediction(pred, folder, name, meta, None if fmt == "same as image" else fmt)
        return written

    def save_model(self, path) -> Path:
        from ..modelfile import save_model

        if self.nets is None:
            raise HybridSegError("no model yet: train or load one first")
        return save_model(path, self.nets, self.model_config, self.in_channels)

    def load_model(self, path) -> None:
        from ..modelfile import load_model

        model = load_model(path)
        self.nets, self.model_config, self.in_channels = model.nets, model.config, model.in_channels
        self.last_model = Path(path)
        self.train.message.setText(f"loaded {path}")

    def _export_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export predictions to folder")
        if folder:
            try:
                written = self.export_predictions(folder, self.export.format.currentText())
                _notify_info(f"wrote {len(written)} mask(s) to {folder}")
            except (HybridSegError, OSError, ValueError) as exc:
                _notify_error(str(exc))

    def _save_model_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "model.pt", "napari-hybridseg model (*.pt)")
        if path:
            try:
                self.save_model(path)
            except (HybridSegError, OSError) as exc:
                _notify_error(str(exc))

    def _load_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "", "napari-hybridseg model (*.pt)")
        if path:
            try:
                self.load_model(path)
            except (HybridSegError, OSError) as exc:
                _notify_error(str(exc))
