"""The live view redraws only what changed as displayed, and hidden images when shown."""

import numpy as np
import pytest

from napari_hybridseg import protocol as P
from napari_hybridseg._qt.widget import HybridSegWidget
from napari_hybridseg.synthetic import synth_image

pytestmark = pytest.mark.gui


@pytest.fixture
def two_images_with_boxes(make_napari_viewer):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    widget = HybridSegWidget(viewer)
    for name in ("a", "b"):
        img, lab = synth_image(rng, (48, 48), n_objects=3)
        viewer.add_image(img, name=name)
        widget.annotate.image_combo.setCurrentText(name)
        widget.create_layers()
        for obj in [o for o in np.unique(lab) if o > 0][:2]:
            ys, xs = np.nonzero(lab == obj)
            viewer.layers[f"{name} boxes"].add_rectangles(
                np.array([[ys.min() - 0.5, xs.min() - 0.5], [ys.max() + 0.5, xs.max() + 0.5]])
            )
        viewer.layers[f"{name} boxes"].features = {"id": [1, 2]}
    return viewer, widget


def _weights(value_a, value_b):
    return [
        P.InstanceWeight(P.InstanceKey(image, str(i), "box"), value)
        for image, value in (("a", value_a), ("b", value_b))
        for i in (1, 2)
    ]


def test_a_hidden_image_gets_its_weight_colours_when_shown(two_images_with_boxes):
    viewer, widget = two_images_with_boxes
    viewer.layers["a"].visible = True
    viewer.layers["b"].visible = False
    widget.live.show_weights(_weights(0.3, 0.7))
    np.testing.assert_allclose(viewer.layers["a boxes"].features["weight"], [0.3, 0.3])
    # the table lists every image at once; the hidden image's boxes wait
    assert widget.weights_panel.table.rowCount() == 4
    assert "weight" not in viewer.layers["b boxes"].features or not np.allclose(
        viewer.layers["b boxes"].features["weight"], 0.7
    )
    viewer.layers["b"].visible = True
    np.testing.assert_allclose(viewer.layers["b boxes"].features["weight"], [0.7, 0.7])


def test_weights_that_look_the_same_are_not_redrawn(two_images_with_boxes, monkeypatch):
    from napari_hybridseg._qt import layers as L

    viewer, widget = two_images_with_boxes
    viewer.layers["a"].visible = viewer.layers["b"].visible = True
    widget.live.show_weights(_weights(0.3, 0.7))
    drawn = []
    real = L.show_weights

    def spy(viewer, weights, images=None):
        drawn.append(images)
        real(viewer, weights, images)

    monkeypatch.setattr(L, "show_weights", spy)
    widget.live.show_weights(_weights(0.301, 0.7))  # 0.30 either way
    assert drawn == []
    widget.live.show_weights(_weights(0.301, 0.75))
    assert drawn == [{"b"}]
    # at the end of a run every value is shown as it is
    widget.live.show_weights(widget.live.weights, exact=True)
    assert drawn[-1] == {"a", "b"}
    np.testing.assert_allclose(viewer.layers["a boxes"].features["weight"], [0.301, 0.301])


def test_the_first_preview_appears_on_a_project_of_real_size(make_napari_viewer, qtbot, tmp_path):
    """Ten 700 x 1100 images, one fully masked, boxes on the rest; training in the child
    process (the default): the visible image's prediction arrives while training runs."""
    from napari_hybridseg.config import TrainConfig
    from napari_hybridseg.synthetic import make_project

    make_project(tmp_path / "project", n_images=10, weak="boxes", shape=(700, 1100), n_objects=40)
    viewer = make_napari_viewer()
    widget = HybridSegWidget(viewer)
    widget.open_project(tmp_path / "project")
    widget.annotate.image_combo.setCurrentText("img003")
    original = widget._config

    def small(steps=None):
        cfg = original(steps).to_dict()
        cfg.update(width=4, depth=2, batch_size=2)
        return TrainConfig.from_dict(cfg)

    widget._config = small
    widget.train.every.setValue(1)
    previews = []
    real_show = widget.live.show_preview
    widget.live.show_preview = lambda event: previews.append(event) or real_show(event)
    assert widget.train.separate_process.isChecked()
    assert widget.start_training(steps=1000)
    try:
        qtbot.waitUntil(lambda: bool(previews), timeout=120_000)
        assert widget.session.busy  # it came while training ran, not at the end
    finally:
        with qtbot.waitSignal(widget.finished, timeout=120_000):
            widget.stop_training()
    first = previews[0]
    assert first.image == "img003" and first.probability.shape == (700, 1100)
    assert viewer.layers["img003 prediction"].data.shape == (700, 1100)


def test_a_preview_of_part_of_an_image_updates_only_that_part(make_napari_viewer):
    from napari_hybridseg._qt.prediction_layers import show_prediction

    viewer = make_napari_viewer()
    widget = HybridSegWidget(viewer)
    viewer.add_image(np.zeros((120, 160), np.float32), name="a")
    widget.annotate.image_combo.setCurrentText("a")
    widget.create_layers()
    ones = np.ones((120, 160), np.float32)
    show_prediction(viewer, "a", None, ones * 0.9, ones * 0.1, all_layers=True)
    assert viewer.layers["a prediction"].data.all()
    part = np.zeros((30, 40), np.float32)
    widget.live.show_preview(P.PreviewEvent(2, "a", None, part, part + 0.3, origin=(10, 20)))
    pred = viewer.layers["a prediction"].data
    assert not pred[10:40, 20:60].any() and pred[:10].all() and pred[40:].all() and pred[:, 60:].all()
    # a hidden map takes every part in place and is not redrawn until it is shown
    disagreement = viewer.layers["a disagreement"]
    redrawn = []
    disagreement.events.set_data.connect(lambda event: redrawn.append(event))
    widget.live.show_preview(P.PreviewEvent(3, "a", None, part + 0.2, part, origin=(50, 50)))
    assert not disagreement.visible and redrawn == []
    np.testing.assert_allclose(disagreement.data[10:40, 20:60], 0.3)
    np.testing.assert_allclose(disagreement.data[50:80, 50:90], 0.0)
    np.testing.assert_allclose(disagreement.data[:10], 0.1)
    np.testing.assert_allclose(viewer.layers["a probability"].data[50:80, 50:90], 0.2)
    disagreement.visible = True
    assert redrawn  # shown: napari slices it again
    # a visible map is redrawn with each part
    redrawn.clear()
    widget.live.show_preview(P.PreviewEvent(4, "a", None, part + 0.2, part + 0.4, origin=(0, 0)))
    assert redrawn and np.allclose(disagreement.data[:30, :40], 0.4)


def test_a_live_preview_adds_the_prediction_layer_without_taking_the_users_layer(two_images_with_boxes):
    viewer, widget = two_images_with_boxes
    scribbles = viewer.layers["a scribbles"]
    viewer.layers.selection.active = scribbles  # the user paints strokes while it trains
    probability = np.full((48, 48), 0.8, np.float32)
    widget.live.show_preview(P.PreviewEvent(5, "a", None, probability, probability * 0.1))
    assert "a prediction" in viewer.layers
    assert viewer.layers.selection.active is scribbles and set(viewer.layers.selection) == {scribbles}
    # while training only the prediction is added; the run's end adds the maps of the last preview
    assert "a probability" not in viewer.layers and "a disagreement" not in viewer.layers
    widget.live.finished(P.FinishedEvent(5, None, False, 1.0), "model.safetensors")
    np.testing.assert_allclose(viewer.layers["a probability"].data, 0.8)
    np.testing.assert_allclose(viewer.layers["a disagreement"].data, 0.08)
    assert viewer.layers.selection.active is scribbles


def test_box_weights_are_written_only_where_boxes_are_large_enough_on_screen(two_images_with_boxes):
    from napari_hybridseg._qt.box_texts import MIN_BOX_PX, box_side

    viewer, widget = two_images_with_boxes
    viewer.layers["a"].visible = viewer.layers["b"].visible = True
    boxes = viewer.layers["a boxes"]
    side = box_side(boxes)
    assert side > 0
    viewer.camera.zoom = 0.5 * MIN_BOX_PX / side  # boxes at half the readable size
    widget.live.show_weights(_weights(0.3, 0.7))
    assert boxes.text.string.format == "{weight:.2f}" and not boxes.text.visible
    viewer.camera.zoom = 2 * MIN_BOX_PX / side
    assert boxes.text.visible and viewer.layers["b boxes"].text.visible
    viewer.camera.zoom = 0.5 * MIN_BOX_PX / side
    assert not boxes.text.visible
    # the box colours show the weight at every zoom
    np.testing.assert_allclose(boxes.features["weight"], [0.3, 0.3])


def test_background_regions_are_drawn_in_their_weights_colours_between_runs(two_images_with_boxes):
    from napari_hybridseg._qt import layers as L
    from napari_hybridseg.bridge import weight_colors

    viewer, widget = two_images_with_boxes
    viewer.layers["a"].visible, viewer.layers["b"].visible = True, False
    regions = {"background@0:0": 0.1, "background@0:24": 0.9, "background@24:0": 0.9, "background@24:24": 0.8}
    weights = _weights(0.3, 0.7) + [
        P.InstanceWeight(P.InstanceKey("a", name, "background"), value) for name, value in regions.items()
    ]
    widget.live.running = True  # while training no layer is added
    widget.live.show_weights(weights)
    assert L.find_layer(viewer, "a", "regions") is None
    widget.live.running = False
    widget.live.show_weights(weights, exact=True)
    layer = viewer.layers["a background regions"]
    assert viewer.layers.selection.active is not layer  # the user's layer stays active
    assert list(layer.features["region"]) == sorted(regions)
    np.testing.assert_allclose(layer.edge_color, weight_colors([regions[n] for n in sorted(regions)]), atol=1e-6)
    corners = np.asarray(layer.data[list(layer.features["region"]).index("background@24:0")])
    assert corners.min(0).tolist() == [23.5, -0.5] and corners.max(0).tolist() == [47.5, 23.5]
    # the weights table leads to a region: the view centres on it
    widget.go_to("a", "background", "background@24:24")
    np.testing.assert_allclose(viewer.camera.center[-2:], [36, 36])
    # later weights update the layer in place
    regions["background@0:0"] = 0.95
    widget.live.show_weights(
        _weights(0.3, 0.7) + [P.InstanceWeight(P.InstanceKey("a", n, "background"), v) for n, v in regions.items()],
        exact=True,
    )
    assert viewer.layers["a background regions"] is layer
    np.testing.assert_allclose(layer.features["weight"][0], 0.95)


@pytest.mark.parametrize("exhaustive, step, warned", [(True, 10, True), (False, 10, False), (True, 2, False)])
def test_many_objects_outside_the_boxes_of_an_exhaustive_image_are_pointed_out(
    two_images_with_boxes, exhaustive, step, warned
):
    from napari_hybridseg._qt import layers as L

    viewer, widget = two_images_with_boxes
    L.tag(viewer.layers["a"], "image", "a", exhaustive=exhaustive)
    widget.live.started(10, "run")
    prob = np.zeros((48, 48), np.float32)
    for y, x in [(5, 40), (40, 5), (40, 40), (20, 40)]:  # four objects far from the two boxes
        prob[y - 3 : y + 3, x - 3 : x + 3] = 0.9
    widget.live.show_preview(P.PreviewEvent(image="a", z=None, step=step, probability=prob, uncertainty=None))
    assert ("outside every box" in widget.train.message.text()) == warned
