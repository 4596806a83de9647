"""A project of several classes in napari: class colours, the class of each box and
stroke, the class picker, and classes that survive training and autosave."""

import json

import numpy as np
import pytest

from napari_hybridseg._qt import layers as L
from napari_hybridseg._qt.widget import HybridSegWidget
from napari_hybridseg.annotations import Project
from napari_hybridseg.synthetic import make_project

pytestmark = pytest.mark.gui


@pytest.fixture
def classed(make_napari_viewer, tmp_path):
    root = tmp_path / "p"
    make_project(root, n_images=3, strong_fraction=0.34, weak="both", shape=(64, 64), n_classes=2, seed=1)
    viewer = make_napari_viewer()
    widget = HybridSegWidget(viewer)
    widget.open_project(root)
    return viewer, widget, root


def test_a_classed_project_opens_with_its_classes_and_saves_them_back(classed):
    viewer, widget, root = classed
    on_disk = Project.load(root)
    project = L.collect_project(viewer, root)
    assert project.classes == on_disk.classes
    assert [b.cls for b in project["img002"].boxes] == [b.cls for b in on_disk["img002"].boxes]
    mask_colour = viewer.layers["img000 masks"].colormap.map(np.array([2]))[0, :3]
    assert mask_colour == pytest.approx(np.array(on_disk.classes.rgb(2)) / 255)
    first_box = on_disk["img002"].boxes[0]
    assert viewer.layers["img002 boxes"].edge_color[0][:3] == pytest.approx(
        np.array(on_disk.classes.rgb(first_box.cls)) / 255
    )
    # a box drawn in napari is of the class picked
    widget.classes.pick(2)
    boxes = viewer.layers["img002 boxes"]
    boxes.add_rectangles(np.array([[5, 5], [20, 25]]))
    assert L.collect_project(viewer, root)["img002"].boxes[-1].cls == 2
    widget._annotations_changed()  # autosave
    again = Project.load(root)
    assert again.classes.names == ("size1", "size2") and again["img002"].boxes[-1].cls == 2
    assert json.loads((root / "project.json").read_text())["classes"][0]["name"] == "size1"


def test_the_picked_class_is_what_the_brush_paints(classed):
    viewer, widget, root = classed
    widget.classes.pick(2)
    assert viewer.layers["img001 scribbles"].selected_label == 3  # 1 + class
    assert viewer.layers["img000 masks"].selected_label == 2
    widget.classes.pick(0)  # background, for strokes
    assert viewer.layers["img001 scribbles"].selected_label == 1


def test_classes_are_added_renamed_and_recoloured_in_the_panel(classed):
    viewer, widget, root = classed
    panel = widget.classes
    assert panel.list.count() == 3  # background, size1, size2
    assert panel.add_class("tumour")
    panel.list.item(1).setText("small")  # rename by editing the row
    assert panel.set_colour(3, "#0000ff")
    classes = L.collect_project(viewer, root).classes
    assert classes.names == ("small", "size2", "tumour") and classes.colours[2] == "#0000ff"
    assert viewer.layers["img000 masks"].colormap.map(np.array([3]))[0, :3] == pytest.approx([0, 0, 1])
    panel.list.item(2).setText("small")  # a name taken twice is refused, the list shows what holds
    assert L.collect_project(viewer, root).classes.names[1] == "size2" and "named twice" in panel.hint.text()
    assert panel.list.item(2).text() == "size2"


def test_a_project_of_one_structure_becomes_one_of_two_classes(make_napari_viewer, monkeypatch):
    from napari_hybridseg._qt.class_panel import ClassPanel
    from napari_hybridseg.synthetic import synth_image

    viewer = make_napari_viewer()
    widget = HybridSegWidget(viewer)
    img, lab = synth_image(np.random.default_rng(0), (48, 48), n_objects=4)
    viewer.add_image(img, name="a")
    widget.annotate.image_combo.setCurrentText("a")
    widget.create_layers()
    viewer.layers["a masks"].data = lab.astype(np.uint16)  # objects numbered 1..4
    assert widget.classes.classes is None and not widget.classes.hint.isHidden()
    asked = []
    monkeypatch.setattr(ClassPanel, "_confirm", lambda self, text: asked.append(text) or False)
    assert not widget.classes.add_class("tumour")  # declined: nothing changes
    assert widget.classes.classes is None and viewer.layers["a masks"].data.max() == lab.max()
    monkeypatch.setattr(ClassPanel, "_confirm", lambda self, text: True)
    assert widget.classes.add_class("tumour") and len(asked) == 1
    project = L.collect_project(viewer)
    assert project.classes.names == ("object", "tumour")
    assert set(np.unique(project["a"].strong)) == {0, 1}


def test_the_weights_table_names_each_annotations_class(classed):
    from napari_hybridseg import protocol as P

    viewer, widget, root = classed
    project = Project.load(root)
    box = project["img002"].boxes[0]
    stroke = next(v for v in np.unique(project["img001"].scribbles) if v >= 2)
    ys, xs = np.nonzero(project["img001"].scribbles == stroke)
    weights = [
        P.InstanceWeight(P.InstanceKey("img002", str(box.id), "box"), 0.5),
        P.InstanceWeight(P.InstanceKey("img001", f"{stroke}@{ys[0]}:{xs[0]}", "scribble"), 0.9),
        P.InstanceWeight(P.InstanceKey("img002", "background", "background"), 0.7),
    ]
    widget.live.show_weights(weights)
    table = widget.weights_panel.table
    assert not table.isColumnHidden(4)
    shown = {table.item(r, 2).text(): table.item(r, 4).text() for r in range(table.rowCount())}
    assert shown == {"box": f"size{box.cls}", "scribble": f"size{stroke - 1}", "background": "background"}


def test_export_writes_class_ids_and_the_label_table(classed, tmp_path):
    from napari_hybridseg.config import TrainConfig
    from napari_hybridseg.images import read_image
    from napari_hybridseg.modelfile import LoadedModel
    from napari_hybridseg.networks import create_model
    from napari_hybridseg.task import Task

    viewer, widget, root = classed
    task = Task(1, 2, 2, class_names=("size1", "size2"))
    nets = [create_model(task, 2, 4, seed=s).eval() for s in (0, 1)]
    widget.session.model = LoadedModel(nets, TrainConfig(depth=2, width=4), task)
    written = widget.export_predictions(tmp_path / "out")
    assert {p.name for p in written} == {"img000.tif", "img001.tif", "img002.tif"}
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"labels.txt", "labels.ctbl"}
    labels, _ = read_image(tmp_path / "out" / "img000.tif")
    assert labels.dtype == np.uint8 and labels.max() <= 2
    assert "1 size1" in (tmp_path / "out" / "labels.ctbl").read_text()
