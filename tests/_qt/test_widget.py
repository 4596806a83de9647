"""The dock widget end to end: layers, training live, weights, pins, errors, export."""

import csv

import numpy as np
import pytest

from napari_hybridseg import protocol as ev
from napari_hybridseg._qt import layers as L
from napari_hybridseg._qt.widget import HybridSegWidget
from napari_hybridseg.bridge import role_of, weight_colors
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.images import read_image
from napari_hybridseg.synthetic import synth_image

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


def _small(widget):
    """Tiny network so that a few steps take seconds."""
    from napari_hybridseg.config import TrainConfig

    original = widget._config

    def cfg(steps=None):
        base = original(steps).to_dict()
        base.update(batch_size=2, patch_size=32, width=4, depth=2, dii_warmup=1, dii_interval=1)
        return TrainConfig.from_dict(base)

    widget._config = cfg


@pytest.fixture
def annotated(make_napari_viewer):
    """A viewer with two images: one with a full mask, one with boxes and scribbles drawn."""
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    img_s, lab_s = synth_image(rng, (64, 64), n_objects=5)
    img_w, lab_w = synth_image(rng, (64, 64), n_objects=5)
    viewer.add_image(img_s, name="a")
    viewer.add_image(img_w, name="b")
    widget = HybridSegWidget(viewer)
    _small(widget)
    for name in ("a", "b"):
        widget.annotate.image_combo.setCurrentText(name)
        widget.create_layers()
    viewer.layers["a masks"].data = lab_s.astype(np.uint16)
    boxes = viewer.layers["b boxes"]
    for obj in [o for o in np.unique(lab_w) if o > 0][:3]:
        ys, xs = np.nonzero(lab_w == obj)
        boxes.add_rectangles(np.array([[ys.min() - 0.5, xs.min() - 0.5], [ys.max() + 0.5, xs.max() + 0.5]]))
    scr = np.zeros((64, 64), np.uint16)
    scr[2, 2:30] = 1
    last = [o for o in np.unique(lab_w) if o > 0][-1]
    ys, xs = np.nonzero(lab_w == last)
    scr[ys[: len(ys) // 2], xs[: len(xs) // 2]] = 2
    viewer.layers["b scribbles"].data = scr
    return viewer, widget


def test_create_layers_tags_roles(annotated):
    viewer, widget = annotated
    for name in ("a", "b"):
        for role, suffix, kind in (
            ("strong", "masks", "labels"),
            ("scribbles", "scribbles", "labels"),
            ("boxes", "boxes", "shapes"),
        ):
            layer = viewer.layers[f"{name} {suffix}"]
            assert role_of(layer) == (role, name) and layer._type_string == kind
    project = L.collect_project(viewer)
    assert project.summary() == {"strong": 1, "weak": 1, "unlabelled": 0}
    assert [b.id for b in project["b"].boxes] == [1, 2, 3]
    assert list(viewer.layers["b boxes"].features["id"]) == [1, 2, 3]
    widget.refresh_status()
    roles = {widget.annotate.status.item(r, 0).text(): widget.annotate.status.item(r, 1).text() for r in range(2)}
    assert roles == {"a": "strong", "b": "weak"}


def test_a_box_drawn_after_one_was_deleted_never_takes_its_id(annotated):
    """Box 3 deleted (its weight shown, perhaps pinned), a new box drawn: the new box gets
    id 4, so that box 3's weight and pin never pass to it."""
    viewer, _ = annotated
    assert [b.id for b in L.collect_project(viewer)["b"].boxes] == [1, 2, 3]
    boxes = viewer.layers["b boxes"]
    boxes.selected_data = {2}
    boxes.remove_selected()
    boxes.add_rectangles(np.array([[40.5, 40.5], [50.5, 50.5]]))
    assert list(boxes.features["id"]) == [1, 2, 4]  # at once, as napari shows it
    assert [b.id for b in L.collect_project(viewer)["b"].boxes] == [1, 2, 4]
    assert list(boxes.features["id"]) == [1, 2, 4]


def test_box_check_reaches_the_config_and_only_applies_with_dii(annotated):
    _, widget = annotated
    assert widget.train.box_check.currentText() == "ellipse"
    widget.train.box_check.setCurrentText("extent")
    assert widget._config().dii_box_target == "extent"
    widget.train.method.setCurrentText("dcr")
    assert not widget.train.box_check.isEnabled()
    widget.train.method.setCurrentText("dii")
    assert widget.train.box_check.isEnabled()


def test_train_panel_choices_come_back_in_the_next_session(annotated):
    """What the user set in the Train panel is there again when the widget opens next
    time; the preset, when on, holds its options."""
    viewer, widget = annotated
    t = widget.train
    t.method.setCurrentText("dcr")
    t.network.setCurrentText("3d")
    t.cr_weight.setValue(0.25)
    t.steps.setValue(1234)
    t.separate_process.setChecked(False)
    t.every.setValue(7)
    before = t.config()
    again = HybridSegWidget(viewer).train
    assert again.config() == before and (before.method, before.lambda_cr, before.steps) == ("dcr", 0.25, 1234)
    assert not again.separate_process.isChecked() and again.every.value() == 7
    again.paper.setChecked(True)
    third = HybridSegWidget(viewer).train
    assert third.paper.isChecked() and not third.method.isEnabled()
    assert third.config() == TrainConfig(network="3d", steps=1234).with_preset("paper")


@pytest.mark.parametrize(
    "stored",
    [
        "{not json",
        '["a list"]',
        '{"method": "gone", "steps": "many", "live": 1, "every": 5}',
        '{"steps": 1e300, "lambda_cr": NaN, "every": 5}',
        '{"steps": Infinity, "every": 5}',
    ],
)
def test_train_panel_ignores_remembered_choices_it_cannot_use(qtbot, tmp_path, stored):
    """An unreadable settings file, or a method this version no longer has, leaves the
    panel at its defaults; the values it can use still come back."""
    from qtpy.QtCore import QSettings

    from napari_hybridseg._qt.train_panel import SETTINGS_KEY, TrainPanel

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat)
    settings.setValue(SETTINGS_KEY, stored)
    panel = TrainPanel(settings=settings)
    qtbot.addWidget(panel)
    huge = "1e300" in stored
    assert panel.config() == (TrainConfig(steps=panel.steps.maximum()) if huge else TrainConfig())
    assert panel.live.isChecked() and panel.every.value() == (5 if stored.startswith('{"') else 20)


def test_new_object_picks_next_id(annotated):
    viewer, widget = annotated
    widget.annotate.image_combo.setCurrentText("b")
    widget.new_object()
    assert viewer.layers["b scribbles"].selected_label == 3


def test_train_live_shows_prediction_and_weights(annotated, qtbot, tmp_path):
    viewer, widget = annotated
    widget.project_root = tmp_path / "proj"
    widget.annotate.image_combo.setCurrentText("b")
    widget.train.every.setValue(2)
    widget.train.method.setCurrentText("dii+dcr")
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT) as blocker:
        assert widget.start_training(steps=6)
    event = blocker.args[0]
    assert isinstance(event, ev.FinishedEvent) and event.step == 6
    assert not widget.session.busy and widget.session.model is not None
    pred = viewer.layers["b prediction"]
    assert pred.data.shape == (64, 64) and role_of(pred) == ("prediction", "b")
    assert viewer.layers["b disagreement"].data.shape == (64, 64)
    # the table, the box colours and texts agree with weights.csv
    with open(event.run_dir + "/weights.csv") as fh:
        rows = {(r["image"], r["instance"], r["kind"]): float(r["weight"]) for r in csv.DictReader(fh)}
    table = widget.weights_panel.table
    shown = {
        tuple(table.item(r, c).text() for c in range(3)): float(table.item(r, 3).text().split()[0])
        for r in range(table.rowCount())
    }
    assert shown.keys() == rows.keys()
    for key, value in rows.items():
        assert shown[key] == pytest.approx(value, abs=1e-3)
    boxes = viewer.layers["b boxes"]
    expected = [rows[("b", str(i), "box")] for i in boxes.features["id"]]
    np.testing.assert_allclose(boxes.features["weight"], expected, atol=1e-6)
    np.testing.assert_allclose(boxes.edge_color, weight_colors(expected), atol=1e-6)
    assert boxes.text.string.format == "{weight:.2f}"
    scr_colors = viewer.layers["b scribbles"].colormap.color_dict
    (stroke,) = [k for k in rows if k[2] == "scribble" and k[1].startswith("2@")]
    np.testing.assert_allclose(scr_colors[2], weight_colors([rows[stroke]])[0], atol=1e-6)
    assert widget.train.progress.value() == 6
    assert widget.train.loss_plot.series["total"]
    assert widget.next_panel.list.count() >= 1
    # the run folder is the CLI's
    assert {"model.pt", "weights.csv", "metrics.jsonl", "config.json"} <= {
        p.name for p in (tmp_path / "proj" / "runs").glob("*/*")
    }


def test_stop_mid_run(annotated, qtbot):
    viewer, widget = annotated
    widget.train.live.setChecked(False)
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT) as blocker:
        widget.start_training(steps=100_000)
        qtbot.waitUntil(lambda: widget.train.progress.value() >= 2, timeout=TIMEOUT)
        widget.stop_training()
    event = blocker.args[0]
    assert isinstance(event, ev.FinishedEvent) and event.stopped and event.step < 100_000


def test_worker_error_becomes_notification_and_keeps_annotations(annotated, qtbot, monkeypatch):
    viewer, widget = annotated
    from napari_hybridseg.training import TrainingLoop

    def boom(self):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(TrainingLoop, "train_step", boom)
    widget.train.separate_process.setChecked(False)  # the patched loop lives in this process
    errors = []
    monkeypatch.setattr("napari_hybridseg._qt.live_view.notify_error", errors.append)
    before = viewer.layers["b scribbles"].data.copy()
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT) as blocker:
        widget.start_training(steps=5)
    assert isinstance(blocker.args[0], ev.ErrorEvent)
    assert errors and "simulated failure" in errors[0]
    np.testing.assert_array_equal(viewer.layers["b scribbles"].data, before)
    assert len(viewer.layers["b boxes"].data) == 3


def test_cannot_start_without_full_mask(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((32, 32)), name="x")
    widget = HybridSegWidget(viewer)
    widget.create_layers()
    viewer.layers["x boxes"].add_rectangles(np.array([[2, 2], [10, 10]]))
    errors = []
    monkeypatch.setattr("napari_hybridseg._qt.widget.notify_error", errors.append)
    assert widget.start_training(steps=3) is False
    assert "full mask" in errors[0]


def test_pin_and_go_to(annotated, qtbot):
    viewer, widget = annotated
    widget.train.live.setChecked(False)
    widget.pin(("b", "1", "box"), 0.0)
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT):
        widget.start_training(steps=4)
    weights = {w.key: w for w in widget.live.weights}
    assert weights[("b", "1", "box")].weight == 0.0 and weights[("b", "1", "box")].pinned
    widget.go_to("b", "box", "2")
    corners = viewer.layers["b boxes"].data[1]
    np.testing.assert_allclose(viewer.camera.center[-2:], corners.mean(0), atol=1e-6)
    assert viewer.layers["b"].visible and not viewer.layers["a"].visible


def test_export_round_trip_and_model_save_load(annotated, qtbot, tmp_path):
    viewer, widget = annotated
    widget.train.live.setChecked(False)
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT):
        widget.start_training(steps=3)
    written = widget.export_predictions(tmp_path / "out", "nii.gz")
    assert sorted(p.name for p in written) == ["a.nii.gz", "b.nii.gz"]
    back, _ = read_image(tmp_path / "out" / "b.nii.gz")
    assert back.shape == (64, 64)
    widget.save_model(tmp_path / "m.pt")
    widget.session.model = None
    widget.load_model(tmp_path / "m.pt")
    assert widget.session.model is not None and widget.session.model_path == tmp_path / "m.pt"
    # and through napari's own File > Save Layers
    viewer.layers["b scribbles"].metadata["hybridseg"]["format"] = "tif"
    viewer.layers.selection = {viewer.layers["b scribbles"]}
    viewer.layers.save(str(tmp_path / "scr.tif"), selected=True, plugin="napari-hybridseg")
    scr, _ = read_image(tmp_path / "scr.tif")
    np.testing.assert_array_equal(scr, viewer.layers["b scribbles"].data)


def test_autosave_writes_project(annotated, qtbot, tmp_path):
    viewer, widget = annotated
    root = tmp_path / "auto"
    widget.save_project(root)
    boxes = viewer.layers["b boxes"]
    boxes.add_rectangles(np.array([[40, 40], [50, 50]]))
    qtbot.waitUntil(lambda: len((root / "boxes" / "b.csv").read_text().splitlines()) == 5, timeout=10_000)


def test_widget_via_plugin_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-hybridseg", "Hybrid segmentation")
    assert isinstance(widget, HybridSegWidget)


def test_an_image_tagged_while_training_is_previewed(annotated, qtbot):
    viewer, widget = annotated
    widget.train.every.setValue(1)
    widget.annotate.image_combo.setCurrentText("a")
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT):
        assert widget.start_training(steps=100_000)
        qtbot.waitUntil(lambda: "a prediction" in viewer.layers, timeout=TIMEOUT)
        viewer.add_image(np.random.default_rng(5).random((64, 64)).astype(np.float32), name="c")
        widget.annotate.image_combo.setCurrentText("c")
        widget.create_layers()
        qtbot.waitUntil(lambda: "c prediction" in viewer.layers, timeout=TIMEOUT)
        widget.stop_training()


def test_a_killed_training_process_leaves_napari_and_the_annotations(annotated, qtbot, tmp_path, monkeypatch):
    """kill -9 of the training process: one clear message, every annotation kept, and the
    last checkpoint becomes the model to continue from."""
    import os
    import signal

    from napari_hybridseg.config import TrainConfig

    viewer, widget = annotated
    widget.project_root = tmp_path / "proj"
    widget.train.live.setChecked(False)
    small = dict(batch_size=2, patch_size=32, width=4, depth=2, checkpoint_every=2)
    widget._config = lambda steps=None: TrainConfig(steps=steps, **small)
    errors = []
    monkeypatch.setattr("napari_hybridseg._qt.live_view.notify_error", errors.append)
    before = {name: np.array(viewer.layers[name].data, copy=True) for name in ("b scribbles", "a masks")}
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT) as blocker:
        assert widget.start_training(steps=100_000)
        qtbot.waitUntil(lambda: widget.train.progress.value() >= 3, timeout=TIMEOUT)
        os.kill(widget.session.runner.pid, signal.SIGKILL)
    event = blocker.args[0]
    assert isinstance(event, ev.ErrorEvent) and "killed" in event.message and "annotations are kept" in event.message
    assert len(errors) == 1 and "killed" in errors[0]
    for name, data in before.items():
        np.testing.assert_array_equal(viewer.layers[name].data, data)
    assert widget.session.model_path is not None and widget.session.model_path.name == "checkpoint.pt"
    widget.train.continue_box.setChecked(True)
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT) as blocker:
        assert widget.start_training(steps=3)
    assert isinstance(blocker.args[0], ev.FinishedEvent)


def test_export_model_from_the_widget_and_load_the_package_back(annotated, qtbot, tmp_path):
    from napari_hybridseg.modelfile import load_model

    viewer, widget = annotated
    widget.train.live.setChecked(False)
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT):
        widget.start_training(steps=2)
    widget.annotate.image_combo.setCurrentText("b")
    package = widget.models.export_model(tmp_path / "shared.zip", "bioimageio")
    onnx = widget.models.export_model(tmp_path / "shared.onnx", "onnx")
    assert package.is_file() and onnx.is_file()
    shared = load_model(package)
    for a, b in zip(shared.nets[0].state_dict().values(), widget.session.model.nets[0].state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())
    widget.load_model(package)
    assert widget.session.model_path == package
