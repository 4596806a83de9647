"""The current model in the widget: predict the visible image, export every image's
mask, save and load model files.  Predictions run on the device chosen for training."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog

from ..bridge import layer_image, layer_meta, role_of
from ..devices import resolve_device
from ..errors import HybridSegError
from ..images import spatial_axes
from ..inference import check_input, predict_with_model, save_prediction
from . import layers as L
from .live_view import notify_error, notify_info
from .prediction_layers import show_prediction

MODEL_FILTER = "napari-hybridseg model (*.pt)"
LOAD_FILTER = "napari-hybridseg model, checkpoint or bioimage.io package (*.pt *.zip)"
EXPORT_FILTERS = {"bioimage.io package (*.zip)": "bioimageio", "ONNX (*.onnx)": "onnx"}


class ModelActions:
    def __init__(self, widget) -> None:
        self.widget = widget
        self.viewer = widget.viewer
        self.session = widget.session
        self._worker = None

    def _model(self):
        if self.session.model is None:
            raise HybridSegError("train or load a model first")
        return self.session.model

    def _device(self):
        return resolve_device(self.widget.train.device.currentText())

    def predict_once(self) -> None:
        """Predict the visible image (the visible slice of a volume) in a worker thread."""
        from napari.qt.threading import create_worker

        name = self.widget.current_name()
        try:
            model, device = self._model(), self._device()
            if name is None:
                raise HybridSegError("open an image and create its annotation layers first")
            layer = L.find_layer(self.viewer, name, "image")
            data = layer_image(layer)
            axes = spatial_axes(data, layer_meta(layer))
            check_input(model, data, axes, f"layer {name!r}")
        except (HybridSegError, ValueError) as exc:
            notify_error(str(exc))
            return
        z = L.visible_slice(self.viewer, layer) if axes == "zyx" else None
        worker = create_worker(predict_with_model, model, data, axes, device=device, z=z, _start_thread=False)
        worker.returned.connect(
            lambda p: show_prediction(
                self.viewer,
                name,
                z,
                p.probability,
                p.uncertainty,
                all_layers=True,
                classes=p.labels() if p.class_probability is not None else None,
            )
        )
        worker.errored.connect(lambda exc: notify_error(f"prediction failed: {exc}"))
        worker.start()
        self._worker = worker

    def export_predictions(self, folder, fmt: str = "same as image") -> list[Path]:
        """Predict every image with the current model and write masks to ``folder``."""
        from ..inference.output import write_label_table

        model, device = self._model(), self._device()
        names = model.task.label_names
        written, todo = [], []
        for layer in L.tagged_images(self.viewer):  # every layer checked before anything is written
            meta, data = layer_meta(layer), layer_image(layer)
            axes = spatial_axes(data, meta)
            check_input(model, data, axes, f"layer {layer.name!r}")
            todo.append((layer, meta, data, axes))
        for layer, meta, data, axes in todo:
            pred = predict_with_model(model, data, axes, device=device)
            fmt_ = None if fmt == "same as image" else fmt
            written += save_prediction(pred, folder, role_of(layer)[1], meta, fmt_, class_names=names)
        if names:  # class names and colours for ITK-SNAP and 3D Slicer
            write_label_table(folder, names, model.task.label_colours)
        return written

    def save_model(self, path) -> Path:
        self._model()
        return self.session.save_model(path)

    def load_model(self, path) -> None:
        self.session.load_model(path)
        self.widget.train.message.setText(f"loaded {path}")

    def export_model(self, path, fmt: str) -> Path:
        """Share the current model as a bioimage.io package or ONNX; the visible image gives
        the package's test input."""
        from ..export import export_model

        model = self._model()
        options = {}
        if fmt == "bioimageio":
            name = self.widget.current_name()
            layer = L.find_layer(self.viewer, name, "image") if name else None
            run = self.session.model_path.parent if self.session.model_path else None
            if layer is not None and not layer.rgb:
                data, meta = layer_image(layer), layer_meta(layer)
                options = {"sample": data, "sample_axes": spatial_axes(data, meta), "sample_name": f"layer {name!r}"}
            options = {
                **options,
                "name": f"napari-hybridseg {run.name if run else 'model'}",
                "weights_csv": run / "weights.csv" if run else None,
            }
        return export_model(model, path, fmt, **options)

    # -- dialogs --------------------------------------------------------------------------
    def export_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.widget, "Export predictions to folder")
        if folder:
            try:
                written = self.export_predictions(folder, self.widget.export.format.currentText())
                notify_info(f"wrote {len(written)} mask(s) to {folder}")
            except (HybridSegError, OSError, ValueError) as exc:
                notify_error(str(exc))

    def save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.widget, "Save model", "model.pt", MODEL_FILTER)
        if path:
            try:
                self.save_model(path)
            except (HybridSegError, OSError) as exc:
                notify_error(str(exc))

    def export_model_dialog(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(self.widget, "Export model", "model.zip", ";;".join(EXPORT_FILTERS))
        if path:
            try:
                written = self.export_model(path, EXPORT_FILTERS.get(chosen, "bioimageio"))
                notify_info(f"wrote {written}")
            except (HybridSegError, OSError, ValueError) as exc:
                notify_error(str(exc))

    def load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.widget, "Load model", "", LOAD_FILTER)
        if path:
            try:
                self.load_model(path)
            except (HybridSegError, OSError) as exc:
                notify_error(str(exc))
