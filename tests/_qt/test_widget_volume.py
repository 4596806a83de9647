"""A 3D volume through the widget: boxes on slices, live preview of the visible slice."""

import numpy as np
import pytest

from napari_hybridseg import protocol as ev
from napari_hybridseg._qt import layers as L
from napari_hybridseg._qt.widget import HybridSegWidget
from napari_hybridseg.synthetic import synth_volume

pytestmark = pytest.mark.gui


@pytest.mark.parametrize("network", ["2d", "3d"])
def test_volume_boxes_train_and_preview_slice(make_napari_viewer, qtbot, network):
    viewer = make_napari_viewer()
    vol, labels = synth_volume(np.random.default_rng(0), (6, 48, 48))
    viewer.add_image(vol, name="scan")
    viewer.add_image(vol.copy(), name="scan2")
    widget = HybridSegWidget(viewer)
    from napari_hybridseg.config import TrainConfig

    chosen = widget._config  # the widget's choices (the network among them), at a tiny size
    small = dict(batch_size=2, patch_size=32, patch_size_3d=16, width=4, depth=2)
    widget._config = lambda steps=None: TrainConfig.from_dict({**chosen(steps).to_dict(), **small})
    widget.train.network.setCurrentText(network)
    widget.annotate.image_combo.setCurrentText("scan")
    widget.create_layers()
    viewer.layers["scan masks"].data = labels.astype(np.uint16)
    widget.annotate.image_combo.setCurrentText("scan2")
    widget.create_layers()
    z = 3
    ys, xs = np.nonzero(labels[z])
    y0, y1, x0, x1 = ys.min() - 0.5, ys.max() + 0.5, xs.min() - 0.5, xs.max() + 0.5
    viewer.layers["scan2 boxes"].add_rectangles(np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]]))
    project = L.collect_project(viewer)
    (box,) = project["scan2"].boxes
    assert box.z == z and project["scan2"].is_volume
    widget.refresh_status()
    roles = {widget.annotate.status.item(r, 0).text(): widget.annotate.status.item(r, 1).text() for r in range(2)}
    assert roles == {"scan": "strong", "scan2": f"weak (slices {z})"}
    viewer.dims.current_step = (z, 0, 0)
    widget.train.every.setValue(1)
    with qtbot.waitSignal(widget.finished, timeout=120_000) as blocker:
        assert widget.start_training(steps=3)
    assert isinstance(blocker.args[0], ev.FinishedEvent)
    from napari_hybridseg.modelfile import load_model

    assert load_model(f"{blocker.args[0].run_dir}/model.pt").task.spatial_dims == int(network[0])
    pred = viewer.layers["scan2 prediction"]
    assert pred.data.shape == (6, 48, 48)
    layer = viewer.layers["scan2 probability"]
    # hidden maps get the previews too (drawn when shown); only the visible slice is predicted while live
    assert not layer.visible
    assert layer.data[z].any() and not layer.data[0].any()


def _volume_with_a_model(make_napari_viewer):
    from napari_hybridseg.config import TrainConfig
    from napari_hybridseg.modelfile import LoadedModel
    from napari_hybridseg.networks import create_model
    from napari_hybridseg.task import Task

    viewer = make_napari_viewer()
    vol, _ = synth_volume(np.random.default_rng(1), (5, 32, 32))
    vol[3] = vol[3] * 8 + 2  # one slice far brighter than the rest of the volume
    viewer.add_image(vol, name="scan")
    widget = HybridSegWidget(viewer)
    widget.create_layers()
    nets = [create_model(Task(), 2, 4, seed=s).eval() for s in (0, 1)]
    widget.session.model = LoadedModel(nets, TrainConfig(depth=2, width=4), Task())
    return viewer, widget, vol, nets


def test_predict_once_scales_a_slice_like_its_volume(make_napari_viewer, qtbot):
    """The visible slice is normalised with the whole volume's statistics, as in
    training and export, not on its own."""
    from napari_hybridseg.inference import predict_image

    viewer, widget, vol, nets = _volume_with_a_model(make_napari_viewer)
    viewer.dims.current_step = (3, 0, 0)
    widget.predict_once()
    qtbot.waitUntil(lambda: "scan probability" in viewer.layers and viewer.layers["scan probability"].data[3].any())
    expected = predict_image(nets, vol, "zyx").probability[3]
    np.testing.assert_allclose(viewer.layers["scan probability"].data[3], expected, atol=1e-5)


def test_predictions_run_on_the_device_chosen_for_training(make_napari_viewer, monkeypatch, tmp_path):
    from napari_hybridseg._qt import model_actions
    from napari_hybridseg.inference import Prediction

    viewer, widget, vol, _ = _volume_with_a_model(make_napari_viewer)
    used = []

    def fake_predict(model, image, axes, device="cpu", **kwargs):
        used.append(device)
        return Prediction(np.zeros(image.shape, np.float32), None)

    monkeypatch.setattr(model_actions, "resolve_device", lambda name: f"resolved {name}")
    monkeypatch.setattr(model_actions, "predict_with_model", fake_predict)
    widget.train.device.setCurrentText("cuda")
    widget.export_predictions(tmp_path / "out")
    assert used == ["resolved cuda"]


def test_a_volume_mask_painted_on_some_slices_teaches_those_slices(make_napari_viewer, tmp_path):
    """Painting slices 1 and 4 (4 painted and erased: background there) makes a sparse
    mask: only those slices are taught, the status says which, project.json keeps them."""
    viewer = make_napari_viewer()
    vol, labels = synth_volume(np.random.default_rng(0), (6, 32, 32))
    viewer.add_image(vol, name="scan")
    widget = HybridSegWidget(viewer)
    widget.annotate.image_combo.setCurrentText("scan")
    widget.create_layers()
    masks = viewer.layers["scan masks"]
    masks.paint((1, 10, 10), 1)
    masks.paint((4, 20, 20), 1)
    masks.paint((4, 20, 20), 0)
    item = L.collect_project(viewer)["scan"]
    assert item.role == "strong" and item.strong_slices == [1, 4]
    widget.refresh_status()
    assert widget.annotate.status.item(0, 1).text() == "strong (slices 1, 4)"
    widget.save_project(tmp_path / "p")
    from napari_hybridseg.annotations import Project
    from napari_hybridseg.bridge import project_layer_data

    saved = Project.load(tmp_path / "p")
    assert saved["scan"].strong_slices == [1, 4]
    reopened = {kw["name"]: kw for _, kw, _ in project_layer_data(saved)}
    assert reopened["scan masks"]["metadata"]["hybridseg"]["annotated_slices"] == [1, 4]
    # a mask set whole (a script, a file) covers every slice again
    masks.data = labels.astype(np.uint16)
    assert L.collect_project(viewer)["scan"].strong_slices is None


def test_a_3d_model_on_a_2d_layer_is_refused_naming_the_layer(make_napari_viewer, monkeypatch, tmp_path):
    from napari_hybridseg._qt import model_actions
    from napari_hybridseg.config import TrainConfig
    from napari_hybridseg.modelfile import LoadedModel
    from napari_hybridseg.networks import create_model
    from napari_hybridseg.task import Task

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((32, 32)).astype(np.float32), name="flat")
    widget = HybridSegWidget(viewer)
    widget.create_layers()
    task = Task(spatial_dims=3)
    widget.session.model = LoadedModel([create_model(task, 2, 4, seed=0).eval()], TrainConfig(depth=2, width=4), task)
    errors = []
    monkeypatch.setattr(model_actions, "notify_error", errors.append)
    widget.predict_once()
    assert len(errors) == 1 and "'flat'" in errors[0] and "3D" in errors[0]
    with pytest.raises(Exception, match="'flat'.*3D"):
        widget.export_predictions(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_2d_model_exports_with_the_visible_volume_as_its_sample(make_napari_viewer, tmp_path):
    """The widget's package takes its test input from the image in view: for a 2D model and
    a volume, its middle slice, as ``export-model --sample`` takes it."""
    import zipfile

    viewer, widget, vol, _ = _volume_with_a_model(make_napari_viewer)
    widget.annotate.image_combo.setCurrentText("scan")
    package = widget.models.export_model(tmp_path / "m.zip", "bioimageio")
    with zipfile.ZipFile(package) as z:
        test_input = np.load(z.open("test_input.npy"))
    assert test_input.shape[:2] == (1, 1) and test_input.ndim == 4
    np.testing.assert_allclose(test_input[0, 0], vol[2][: test_input.shape[2], : test_input.shape[3]])


def test_a_slice_painted_and_undone_is_no_longer_a_masked_slice(make_napari_viewer):
    """A slip of the brush on a slice, undone, would otherwise leave that slice taught as
    all background; redo brings it back."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((6, 32, 32), np.float32), name="vol")
    widget = HybridSegWidget(viewer)
    widget.create_layers()
    masks = viewer.layers["vol masks"]
    masks.paint((1, 16, 16), 1)
    masks.paint((4, 5, 5), 1)
    masks.undo()
    assert L.collect_project(viewer)["vol"].strong_slices == [1]
    masks.redo()
    assert L.collect_project(viewer)["vol"].strong_slices == [1, 4]
    masks.undo()
    masks.undo()
    assert L.collect_project(viewer)["vol"].role == "unlabelled"


def test_masks_and_boxes_edited_across_slices_are_flagged(make_napari_viewer, monkeypatch):
    """In napari's transposed views a brush stroke crosses many slices (each would count as
    masked) and a rectangle stands across slices (it would be read as a box one row high)."""
    said = []
    monkeypatch.setattr("napari_hybridseg._qt.widget.notify_error", said.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((12, 32, 32), np.float32), name="vol")
    widget = HybridSegWidget(viewer)
    widget.create_layers()
    viewer.layers["vol masks"].paint((3, 16, 16), 1)  # axial: fine
    assert not said
    viewer.dims.order = (1, 0, 2)  # a view of z against x
    viewer.layers["vol masks"].paint((3, 16, 16), 1)
    viewer.layers["vol boxes"].add_rectangles(np.array([[4, 20, 5], [10, 20, 5], [10, 20, 15], [4, 20, 15]]))
    assert len(said) == 2 and "'vol masks': edited in a view across slices" in said[0] and "'vol boxes'" in said[1]
    with pytest.raises(Exception, match="'vol boxes': box 1 spans slices 4-10; a box lies on one slice"):
        L.collect_project(viewer)
