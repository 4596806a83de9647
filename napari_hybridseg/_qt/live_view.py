"""What the user sees of a run while it trains: progress, the loss curve, the learned
weights (table, box and stroke colours), live predictions, and where to annotate next."""

from __future__ import annotations

import time
import weakref

from .. import protocol as P
from ..bridge import META_KEY, boxes_from_shapes, rank_next, unboxed_objects
from ..inference import explain_empty
from . import box_texts
from . import layers as L
from .prediction_layers import show_prediction
from .region_layers import show_regions

PLOT_EVERY_S = 0.5  # redraw the loss curve and the status line at most this often


def notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


class LiveView:
    def __init__(self, viewer, train_panel, weights_panel, next_panel) -> None:
        self.viewer = viewer
        self.train = train_panel
        self.weights_panel = weights_panel
        self.next_panel = next_panel
        self.weights: list[P.InstanceWeight] = []
        self._shown: dict[str, list] = {}  # per image, the weights as last displayed
        self._stale: set[str] = set()  # images whose colours wait until they are in view
        self._watched: weakref.WeakSet = weakref.WeakSet()  # image layers that say when they are shown
        self.disagreement: dict[str, float] = {}
        self.total_steps = 0
        self._progress = None
        self._last_plot = 0.0
        self._last_preview: P.PreviewEvent | None = None
        self.running = False  # layers are added only between runs (adding one holds napari)
        self._warned: set[str] = set()  # images warned about this run (objects outside boxes)
        box_texts.follow_zoom(viewer)  # weights beside boxes where they can be read

    def started(self, steps: int, run_dir) -> None:
        from napari.utils import progress

        self.total_steps = steps
        self.running = True
        self._warned = set()
        t = self.train
        t.loss_plot.clear()
        t.progress.setRange(0, steps)
        t.progress.setValue(0)
        t.set_running(True)
        t.message.setText(f"starting; run folder: {run_dir}")
        self._progress = progress(total=steps, desc="hybridseg training")

    def on_event(self, event) -> None:
        t = self.train
        if isinstance(event, P.StartedEvent):
            t.device_label.setText(f"using {event.device}")
            if event.steps != self.total_steps:  # a followed run says its length only now
                self.total_steps = event.steps
                t.progress.setRange(0, event.steps)
        elif isinstance(event, P.StepEvent):
            t.progress.setValue(event.step)
            if self._progress is not None:
                self._progress.update(event.step - self._progress.n)
            t.loss_plot.add(event.step, event.losses)
            now = time.monotonic()
            if now - self._last_plot > PLOT_EVERY_S:
                self._last_plot = now
                t.loss_plot.update()
                t.message.setText(f"step {event.step}/{event.total}  loss {event.losses['total']:.4f}")
        elif isinstance(event, P.WeightsEvent):
            self.show_weights(event.weights)
        elif isinstance(event, P.PreviewEvent):
            self.show_preview(event)
        elif isinstance(event, P.PausedEvent):
            t.message.setText("paused" if event.paused else "running")
        elif isinstance(event, P.AnnotationsUpdatedEvent) and event.problem:
            t.message.setText(f"edits not used yet: {event.problem}")
        elif isinstance(event, P.NoticeEvent):
            t.message.setText(event.message)

    def preview_request(self, name: str | None) -> P.RequestPreview | None:
        """A preview of image ``name`` (its visible slice, the part on screen), or ``None``
        when live mode is off."""
        layer = L.find_layer(self.viewer, name, "image") if name is not None else None
        if not self.train.live.isChecked() or layer is None:
            return None
        every = self.train.every.value()
        return P.RequestPreview(name, L.visible_slice(self.viewer, layer), every, L.visible_region(layer))

    def show_preview(self, event: P.PreviewEvent) -> None:
        self._last_preview = event
        show_prediction(
            self.viewer,
            event.image,
            event.z,
            event.probability,
            event.uncertainty,
            origin=event.origin,
            classes=event.classes,
        )
        if event.uncertainty is not None:
            self.disagreement[event.image] = float(event.uncertainty.mean())
            self.rank()
        why = explain_empty(event.probability)
        if why and event.step >= self.total_steps:
            self.train.message.setText(f"{event.image}: empty prediction: {why}")
        if 2 * event.step >= self.total_steps and event.image not in self._warned:
            self.check_exhaustive(event)

    def check_exhaustive(self, event: P.PreviewEvent) -> None:
        """Warn (once a run) when many objects the networks find in an image marked
        exhaustive lie outside all its boxes: the user probably boxed only some, and the
        rest of the image is then taught as background where objects are."""
        image_layer = L.find_layer(self.viewer, event.image, "image")
        boxes_layer = L.find_layer(self.viewer, event.image, "boxes")
        tag = (image_layer.metadata.get(META_KEY) or {}) if image_layer is not None else {}
        if boxes_layer is None or not len(boxes_layer.data) or not tag.get("exhaustive", True):
            return
        fg = event.classes > 0 if event.classes is not None else event.probability > 0.5
        boxes = boxes_from_shapes(boxes_layer.data, boxes_layer.features)
        outside, total = unboxed_objects(fg, boxes, event.origin or (0, 0), event.z)
        if outside >= max(3, 0.2 * total):
            self._warned.add(event.image)
            message = (
                f"{event.image}: {outside} of {total} objects found lie outside every box, but the image is marked "
                "exhaustive, so its background is taught where they are: box them, or untick 'exhaustive'"
            )
            self.train.message.setText(message)
            notify_info(message)

    def finished(self, event, model_path) -> None:
        self.running = False
        t = self.train
        t.set_running(False)
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        t.loss_plot.update()
        if self.weights:
            self.show_weights(self.weights, exact=True)
        last, self._last_preview = self._last_preview, None
        if last is not None:  # the probability and disagreement layers of the image last previewed
            maps = (last.image, last.z, last.probability, last.uncertainty)
            show_prediction(self.viewer, *maps, all_layers=True, origin=last.origin, classes=last.classes)
        if isinstance(event, P.ErrorEvent):
            notify_error(f"training failed: {event.message}")
            t.message.setText(f"training failed at step {event.step}: {event.message}. Annotations are kept.")
        else:
            t.message.setText(
                f"{'stopped' if event.stopped else 'finished'} at step {event.step} ({event.elapsed:.0f} s); "
                + (f"model in {model_path}" if model_path is not None else "no model saved")
            )

    def pinned(self, key: P.InstanceKey, value: float | None) -> None:
        """Show a pin at once, before the run (if any) confirms it."""
        for w in self.weights:
            if w.key == key:
                w.pinned = value is not None
                if value is not None:
                    w.weight = float(value)
        self.show_weights(self.weights)

    def show_weights(self, weights, exact: bool = False) -> None:
        """Show new weights where they changed as displayed (two decimals, pins): the table
        at once, the boxes and strokes of images in view at once, the others when shown.
        ``exact`` shows every value as it is (at the end of a run)."""
        self.weights = list(weights)
        shown: dict[str, list] = {}
        for w in self.weights:
            shown.setdefault(w.image, []).append((w.key, round(w.weight, 2), w.pinned))
        changed = set(shown) if exact else {image for image, sig in shown.items() if self._shown.get(image) != sig}
        if not changed and set(shown) == set(self._shown):
            return
        self._shown = shown
        self.weights_panel.set_weights(self.weights, L.instance_classes(self.viewer, self.weights))
        self._stale |= changed
        visible = {image for image in self._stale if L.image_visible(self.viewer, image)}
        if visible:
            self._draw_weights(visible)
            self._stale -= visible
        for image in self._stale:
            layer = L.find_layer(self.viewer, image, "image")
            if layer is not None and layer not in self._watched:
                layer.events.visible.connect(lambda event, image=image: self.image_shown(image))
                self._watched.add(layer)
        self.rank()

    def image_shown(self, image: str | None) -> None:
        """Bring an image's weight colours up to date when it comes into view."""
        if image in self._stale and L.image_visible(self.viewer, image):
            self._draw_weights({image})
            self._stale.discard(image)

    def _draw_weights(self, images: set[str]) -> None:
        """The weights of ``images`` on the canvas: boxes, strokes and background regions
        (whose layer is added only between runs)."""
        L.show_weights(self.viewer, self.weights, images)
        show_regions(self.viewer, self.weights, images, create=not self.running)

    def rank(self) -> None:
        lst = self.next_panel.list
        lst.clear()
        for _, name, reason in rank_next(self.weights, self.disagreement):
            lst.addItem(f"{name}  ({reason})")
