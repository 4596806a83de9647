"""What the user made is never overwritten or dropped through the widget: another
project's folder, undo, layer names that name files, copies of layers, layers that do not
lie over their image, and layers the engine cannot read."""

import numpy as np
import pytest

from napari_hybridseg._qt import layers as L
from napari_hybridseg._qt.widget import HybridSegWidget
from napari_hybridseg.annotations import Project
from napari_hybridseg.bridge import role_of
from napari_hybridseg.errors import HybridSegError
from napari_hybridseg.synthetic import make_project

pytestmark = pytest.mark.gui


@pytest.fixture
def errors(monkeypatch):
    said = []
    for module in ("widget", "project_folder", "model_actions"):
        monkeypatch.setattr(f"napari_hybridseg._qt.{module}.notify_error", said.append)
    return said


def _annotations(root):
    return {
        n: (i.boxes, None if i.strong is None else i.strong.tobytes()) for n, i in Project.load(root).images.items()
    }


def test_opening_another_project_over_one_in_view_is_refused_not_autosaved_into(make_napari_viewer, qtbot, tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    make_project(a, n_images=3, strong_fraction=0.34, shape=(32, 32), seed=1)
    make_project(b, n_images=3, strong_fraction=0.34, shape=(32, 32), seed=2)
    before = _annotations(b)
    widget = HybridSegWidget(make_napari_viewer())
    widget.open_project(a)
    with pytest.raises(HybridSegError, match="B: the viewer shows images of another project"):
        widget.open_project(b)
    widget.viewer.layers["img002 boxes"].add_rectangles(np.array([[2, 2], [8, 8]]))
    qtbot.wait(1200)
    assert _annotations(b) == before and widget.project_root == a
    widget.open_project(a)  # the project in view may be opened again
    with pytest.raises(HybridSegError, match="holds another project's images"):
        widget.save_project(b)
    assert _annotations(b) == before


def test_undo_and_redo_reach_autosave(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((32, 32)), name="a")
    widget = HybridSegWidget(viewer)
    widget.create_layers()
    widget.save_project(tmp_path / "p")
    strokes = viewer.layers["a scribbles"]
    strokes.paint((10, 10), 2)
    qtbot.waitUntil(lambda: Project.load(tmp_path / "p")["a"].scribbles is not None, timeout=10_000)
    strokes.undo()
    qtbot.waitUntil(lambda: Project.load(tmp_path / "p")["a"].scribbles is None, timeout=10_000)
    strokes.redo()
    qtbot.waitUntil(lambda: Project.load(tmp_path / "p")["a"].scribbles is not None, timeout=10_000)


@pytest.mark.parametrize("name", ["../../escaped", "cells 1/2", ".hidden"])
def test_a_layer_name_that_cannot_name_files_is_refused(make_napari_viewer, tmp_path, errors, name):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.float32), name=name)
    widget = HybridSegWidget(viewer)
    widget.create_layers()
    assert errors and errors[-1].startswith(f"layer {name!r}") and "rename the layer" in errors[-1]
    assert [role_of(layer)[0] for layer in viewer.layers] == [None]


def test_a_copy_of_a_layer_is_not_taken_for_the_original(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.float32), name="a")
    widget = HybridSegWidget(viewer)
    widget.create_layers()
    said = []
    monkeypatch.setattr("napari_hybridseg._qt.widget.notify_info", said.append)
    masks = viewer.layers["a masks"]
    masks.data[2:4, 2:4] = 1
    copy = viewer.add_labels(np.ones((16, 16), np.uint16), name="a masks copy", metadata=dict(masks.metadata))
    assert role_of(copy) == (None, None) and "'a masks copy' is a copy" in said[-1]
    assert L.collect_project(viewer)["a"].strong.sum() == 4
    # a renamed image keeps its files' name: another image may not take it
    viewer.layers["a"].name = "first"
    assert "first" in [widget.annotate.image_combo.itemText(i) for i in range(widget.annotate.image_combo.count())]
    viewer.add_image(np.zeros((16, 16), np.float32), name="a")
    with pytest.raises(HybridSegError, match="image 'a' is already annotated as 'first'"):
        L.ensure_annotation_layers(viewer, viewer.layers[-1])
    # two layers given one role by a script: refused, naming both, rather than one dropped
    L.tag(copy, "strong", "a")
    with pytest.raises(HybridSegError, match="'a masks' and 'a masks copy' both hold the strong of image 'a'"):
        L.collect_project(viewer)


def test_only_layers_that_lie_over_the_image_are_assigned(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((20, 30), np.float32), name="a", scale=(0.5, 0.5))
    other = viewer.add_labels(np.zeros((20, 31), np.uint16), name="other", scale=(0.5, 0.5))
    moved = viewer.add_shapes(name="moved", scale=(0.5, 0.5), translate=(10, 20))
    unscaled = viewer.add_labels(np.zeros((20, 30), np.uint16), name="unscaled")
    assert "'other' is (20, 31), its image 'a' (20, 30)" in L.assign_role(viewer, image, other, "masks")
    assert "another translate" in L.assign_role(viewer, image, moved, "boxes")
    assert "another scale" in L.assign_role(viewer, image, unscaled, "scribbles")
    fits = viewer.add_shapes(name="fits", scale=(0.5, 0.5))
    assert L.assign_role(viewer, image, fits, "boxes") is None and role_of(fits) == ("boxes", "a")


def test_layers_the_engine_cannot_read_are_refused_naming_them(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 3, 16, 16), np.float32), name="timelapse")
    viewer.add_image([np.zeros((64, 64)), np.zeros((32, 32))], name="pyramid", multiscale=True)
    widget = HybridSegWidget(viewer)
    for name in ("timelapse", "pyramid"):
        widget.annotate.image_combo.setCurrentText(name)
        widget.create_layers()
    assert "'timelapse' has 4 dimensions" in errors[0] and "'pyramid' is multiscale" in errors[1]
    viewer.add_image(np.zeros((16, 16), np.float32), name="a")
    widget.annotate.image_combo.setCurrentText("a")
    widget.create_layers()
    viewer.layers["a boxes"].add_lines(np.array([[5, 5], [5, 20]]))
    with pytest.raises(HybridSegError, match="'a boxes': shape 1 is a line; boxes are rectangles"):
        L.collect_project(viewer)
