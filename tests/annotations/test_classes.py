"""Projects that name several structures: project.json classes, class ids in masks,
strokes and boxes; a project without classes reads exactly as a binary one."""

import json

import numpy as np
import pytest
import tifffile

from napari_hybridseg.annotations import Box, ImageAnnotations, LabelClasses, Project
from napari_hybridseg.errors import AnnotationError
from napari_hybridseg.task import task_for


def _write(root, classes=None, mask=None, scribbles=None, boxes=None, shape=(24, 32)):
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    tifffile.imwrite(root / "images" / "a.tif", rng.random(shape).astype(np.float32))
    tifffile.imwrite(root / "images" / "b.tif", rng.random(shape).astype(np.float32))
    if mask is not None:
        (root / "strong").mkdir()
        tifffile.imwrite(root / "strong" / "a.tif", mask.astype(np.uint8))
    if scribbles is not None:
        (root / "scribbles").mkdir()
        tifffile.imwrite(root / "scribbles" / "b.tif", scribbles.astype(np.uint8))
    if boxes is not None:
        (root / "boxes").mkdir()
        (root / "boxes" / "b.csv").write_text(boxes)
    if classes is not None:
        (root / "project.json").write_text(json.dumps({"classes": classes}))
    return root


def _mask(values=(1, 2)):
    mask = np.zeros((24, 32), np.uint8)
    for k, v in enumerate(values):
        mask[2 + 8 * k : 8 + 8 * k, 4:12] = v
    return mask


def test_classes_are_read_with_ids_in_masks_strokes_and_boxes(tmp_path):
    scribbles = np.zeros((24, 32), np.uint8)
    scribbles[3, 2:9] = 1  # background
    scribbles[10, 2:9] = 3  # a stroke of class 2
    boxes = "id,y0,x0,y1,x1,class\n1,2,3,10,12,tumour\n2,12,3,20,12,1\n3,1,14,9,20,\n"
    root = _write(tmp_path / "p", [{"name": "liver", "colour": "#112233"}, "tumour"], _mask(), scribbles, boxes)
    project = Project.load(root)
    assert project.classes == LabelClasses(("liver", "tumour"), ("#112233", "#3cb44b"))
    assert [b.cls for b in project["b"].boxes] == [2, 1, 1]  # an empty cell is class 1
    assert set(np.unique(project["a"].strong)) == {0, 1, 2}
    task = task_for(project)
    assert (task.n_classes, task.class_names) == (2, ("liver", "tumour"))


def test_a_project_without_classes_is_binary_as_before(tmp_path):
    root = _write(tmp_path / "p", None, _mask((1, 7)), boxes="id,y0,x0,y1,x1\n1,2,3,10,12\n")
    project = Project.load(root)
    assert project.classes is None and project["b"].boxes == [Box(1, 2, 3, 10, 12)]
    assert (task_for(project).n_classes, task_for(project).class_names) == (1, ())
    project.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "boxes" / "b.csv").read_text() == "id,y0,x0,y1,x1\n1,2,3,10,12\n"
    assert "classes" not in json.loads((tmp_path / "copy" / "project.json").read_text())


def test_classes_survive_a_save(tmp_path):
    root = _write(tmp_path / "p", ["liver", "tumour"], _mask(), boxes="id,y0,x0,y1,x1,class\n1,2,3,10,12,2\n")
    Project.load(root).save(tmp_path / "copy")
    again = Project.load(tmp_path / "copy")
    assert again.classes.names == ("liver", "tumour") and again["b"].boxes[0].cls == 2
    assert (tmp_path / "copy" / "boxes" / "b.csv").read_text() == "id,y0,x0,y1,x1,class\n1,2,3,10,12,2\n"


@pytest.mark.parametrize(
    "classes, mask, scribble, boxes, message",
    [
        (["liver", "tumour"], 3, None, None, "strong/a.tif: value 3 is no class (class ids are 1..2"),
        (["liver", "tumour"], None, 4, None, "scribbles/b.tif: value 4 is no class (1 is background, 2..3"),
        (["liver", "tumour"], None, None, "spleen", "b.csv:2: no class named 'spleen' (classes: liver, tumour)"),
        (["liver", "tumour"], None, None, "3", "b.csv:2: class 3 does not exist (classes are 1..2)"),
        (None, None, None, "2", "b.csv:2: class 2 but the project names no classes"),
        (["liver", "liver"], None, None, None, "project.json: classes: 'liver' is named twice"),
        (["liver", ""], None, None, None, "project.json: classes: class 2 has an empty name"),
        ([{"name": "liver", "colour": "red"}], None, None, None, "write it as #rrggbb"),
        ("liver", None, None, None, '"classes" must be a list of names'),
        (["7"], None, None, None, "is a number"),
    ],
)
def test_bad_classes_are_one_line_naming_the_file(tmp_path, classes, mask, scribble, boxes, message):
    scribbles = None
    if scribble is not None:
        scribbles = np.zeros((24, 32), np.uint8)
        scribbles[4, 4:9] = scribble
    box_csv = None if boxes is None else f"id,y0,x0,y1,x1,class\n1,2,3,10,12,{boxes}\n"
    root = _write(tmp_path / "p", classes, None if mask is None else _mask((1, mask)), scribbles, box_csv)
    with pytest.raises(AnnotationError) as info:
        Project.load(root)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_image_added_in_memory_is_checked_against_the_classes():
    project = Project(classes=LabelClasses(("liver",)))
    image = np.zeros((16, 16), np.float32)
    with pytest.raises(AnnotationError, match="a mask: value 2 is no class"):
        project.add(ImageAnnotations("a", image, strong=np.full((16, 16), 2, np.int32)))
    with pytest.raises(AnnotationError, match="a boxes: box 1 is class 2"):
        project.add(ImageAnnotations("a", image, boxes=[Box(1, 1, 1, 5, 5, cls=2)]))
    project.add(ImageAnnotations("a", image, strong=np.ones((16, 16), np.int32)))
