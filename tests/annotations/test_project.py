"""The project folder: loading, saving and every validation rule."""

import json

import numpy as np
import pytest
import tifffile

from napari_hybridseg.annotations import Box, ImageAnnotations, Project, boxes_to_csv
from napari_hybridseg.errors import AnnotationError, ImageReadError


def _project(tmp_path, shape=(32, 40), boxes="id,y0,x0,y1,x1\n1,2,3,10,12\n"):
    root = tmp_path / "p"
    (root / "images").mkdir(parents=True)
    tifffile.imwrite(root / "images" / "a.tif", np.random.default_rng(0).random(shape).astype(np.float32))
    if boxes is not None:
        (root / "boxes").mkdir()
        (root / "boxes" / "a.csv").write_text(boxes)
    return root


def test_load_roles_and_round_trip(tiny_project, tmp_path):
    p = Project.load(tiny_project)
    assert p.summary() == {"strong": 1, "weak": 5, "unlabelled": 0}
    p["img001"].exhaustive = False
    p.save(tmp_path / "copy")
    q = Project.load(tmp_path / "copy")
    for a in p:
        b = q[a.name]
        np.testing.assert_array_equal(a.image, b.image)
        assert a.boxes == b.boxes and a.role == b.role
        for x, y in ((a.strong, b.strong), (a.scribbles, b.scribbles)):
            assert (x is None) == (y is None) and (x is None or np.array_equal(x, y))
    assert q["img001"].exhaustive is False and q["img002"].exhaustive is True


def test_box_file_format(tmp_path):
    root = _project(tmp_path)
    (b,) = Project.load(root)["a"].boxes
    assert b == Box(1, 2, 3, 10, 12)
    assert boxes_to_csv([b], volume=False) == "id,y0,x0,y1,x1\n1,2,3,10,12\n"


@pytest.mark.parametrize(
    "csv_text, message",
    [
        ("id,y0,x0,y1,x1\n1,10,3,2,12\n", "inverted"),
        ("id,y0,x0,y1,x1\n1,2,3,2,12\n", "empty"),
        ("id,y0,x0,y1,x1\n1,a,3,10,12\n", "must be numbers"),
        ("id,y0,x0,y1,x1\n1,2.5,3,10,12\n", "whole pixel"),
        ("id,top,left,bottom,right\n1,2,3,10,12\n", "wrong columns"),
        ("id,y0,x0,y1,x1\n1,2,3,10,12\n1,4,4,8,8\n", "duplicate box id 1"),
        ("id,y0,x0,y1,x1\n1,2,3,10\n", "expected 5 values"),
        ("id,y0,x0,y1,x1\n1,100,100,110,110\n", "entirely outside"),
        ("", "empty file"),
        ("id,y0,x0,y1,x1\n0,2,3,10,12\n", r"a\.csv:2: box id 0.*from 1"),
        ("id,y0,x0,y1,x1\n\n1,2,3,10,12\n\n2,10,3,2,12\n", r"a\.csv:5: box 2 is inverted"),
    ],
)
def test_bad_boxes(tmp_path, csv_text, message):
    root = _project(tmp_path, boxes=csv_text)
    with pytest.raises(AnnotationError, match=message) as info:
        Project.load(root)
    assert "a.csv" in str(info.value)
    assert "\n" not in str(info.value)


def test_box_partly_outside_is_clipped_with_warning(tmp_path):
    root = _project(tmp_path, boxes="id,y0,x0,y1,x1\n1,-3,30,10,50\n")
    with pytest.warns(UserWarning, match="clipped"):
        (b,) = Project.load(root)["a"].boxes
    assert (b.y0, b.x0, b.y1, b.x1) == (0, 30, 10, 40)


def test_mask_shape_mismatch(tmp_path):
    root = _project(tmp_path)
    (root / "strong").mkdir()
    tifffile.imwrite(root / "strong" / "a.tif", np.zeros((32, 41), np.uint8))
    with pytest.raises(AnnotationError, match=r"strong/a.tif: shape \(32, 41\) differs"):
        Project.load(root)


@pytest.mark.parametrize("folder", ["strong", "scribbles"])
def test_non_integer_labels(tmp_path, folder):
    root = _project(tmp_path)
    (root / folder).mkdir()
    tifffile.imwrite(root / folder / "a.tif", np.full((32, 40), 0.5, np.float32))
    with pytest.raises(AnnotationError, match=f"{folder}/a.tif: values must be integers"):
        Project.load(root)


def test_negative_labels(tmp_path):
    root = _project(tmp_path)
    (root / "scribbles").mkdir()
    tifffile.imwrite(root / "scribbles" / "a.tif", np.full((32, 40), -1, np.int16))
    with pytest.raises(AnnotationError, match="must be >= 0"):
        Project.load(root)


def test_nan_in_image(tmp_path):
    root = _project(tmp_path)
    img = np.zeros((32, 40), np.float32)
    img[3, 3] = np.nan
    tifffile.imwrite(root / "images" / "a.tif", img)
    with pytest.raises(AnnotationError, match="a.tif: image contains NaN or Inf"):
        Project.load(root)


def test_unreadable_image(tmp_path):
    root = _project(tmp_path)
    (root / "images" / "a.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError, match="a.tif"):
        Project.load(root)


def test_empty_project_and_missing_folder(tmp_path):
    (tmp_path / "e" / "images").mkdir(parents=True)
    with pytest.raises(AnnotationError, match="empty project"):
        Project.load(tmp_path / "e")
    with pytest.raises(AnnotationError, match="project folder not found"):
        Project.load(tmp_path / "nothing")


def test_label_without_image(tmp_path):
    root = _project(tmp_path)
    (root / "boxes" / "ghost.csv").write_text("id,y0,x0,y1,x1\n1,0,0,2,2\n")
    with pytest.raises(AnnotationError, match="ghost.csv: no image 'ghost'"):
        Project.load(root)


def test_bad_project_json(tmp_path):
    root = _project(tmp_path)
    (root / "project.json").write_text("{not json")
    with pytest.raises(AnnotationError, match="project.json: not valid JSON"):
        Project.load(root)


def test_volume_boxes_need_z(tmp_path):
    root = _project(tmp_path, shape=(5, 32, 40), boxes="id,z,y0,x0,y1,x1\n1,2,2,3,10,12\n")
    item = Project.load(root)["a"]
    assert item.is_volume and item.boxes == [Box(1, 2, 3, 10, 12, z=2)]
    (root / "boxes" / "a.csv").write_text("id,z,y0,x0,y1,x1\n1,9,2,3,10,12\n")
    with pytest.raises(AnnotationError, match="slice 9"):
        Project.load(root)
    (root / "boxes" / "a.csv").write_text("id,y0,x0,y1,x1\n1,2,3,10,12\n")
    with pytest.raises(AnnotationError, match="the image is 3D"):
        Project.load(root)


def test_save_is_atomic_and_removes_emptied_annotations(tmp_path, tiny_project):
    p = Project.load(tiny_project)
    name = next(a.name for a in p if a.boxes)
    p[name].boxes = []
    p.save(names=[name])
    assert not (tiny_project / "boxes" / f"{name}.csv").exists()
    leftovers = [f for f in tiny_project.rglob(".*") if f.is_file()]
    assert leftovers == []
    flags = json.loads((tiny_project / "project.json").read_text())
    assert name in flags["images"]


def test_in_memory_validation():
    img = np.zeros((16, 16), np.float32)
    with pytest.raises(AnnotationError, match="duplicate box id 3"):
        Project([ImageAnnotations("x", img, boxes=[Box(3, 0, 0, 4, 4), Box(3, 5, 5, 9, 9)])])
    with pytest.raises(AnnotationError, match="shape"):
        Project([ImageAnnotations("x", img, strong=np.zeros((8, 8), np.uint8))])
    assert ImageAnnotations("x", img).role == "unlabelled"
    assert ImageAnnotations("x", np.zeros((16, 16, 3))).n_channels == 3


@pytest.mark.parametrize(
    "folder, values, dtype",
    [("strong", [0, 2**31], np.uint32), ("scribbles", [0, 2**32 + 1], np.int64), ("strong", [0, 2**40], np.float64)],
)
def test_labels_that_do_not_fit_are_refused_not_wrapped(tmp_path, folder, values, dtype):
    root = _project(tmp_path)
    (root / folder).mkdir()
    arr = np.zeros((32, 40), dtype)
    arr[1, 1] = values[1]
    tifffile.imwrite(root / folder / "a.tif", arr)
    with pytest.raises(AnnotationError, match=f"{folder}/a.tif: label value {values[1]} is too large"):
        Project.load(root)


def test_labels_of_any_integer_dtype_that_fit_are_read(tmp_path):
    root = _project(tmp_path)
    (root / "strong").mkdir()
    arr = np.zeros((32, 40), np.uint64)
    arr[2:5, 2:5] = 2**31 - 1
    tifffile.imwrite(root / "strong" / "a.tif", arr)
    assert Project.load(root)["a"].strong.max() == 2**31 - 1


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"images": {"a": {"exhaustive": "false"}}}', "exhaustive must be true or false"),
        ('{"images": {"a": {"exhaustive": NaN}}}', "exhaustive must be true or false"),
        ('{"images": {"a": "exhaustive"}}', "entry for image 'a' must be an object"),
        ('{"images": {"a": []}}', "entry for image 'a' must be an object"),
        ('{"images": []}', 'expected {"images"'),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
        ('{"images": {"a": {"exhaustive": false}}}\xff', "not valid JSON"),
    ],
)
def test_project_json_is_validated_in_one_line(tmp_path, text, message):
    root = _project(tmp_path)
    (root / "project.json").write_bytes(text.encode("utf-8", "surrogateescape") if "\xff" not in text else b"\xff")
    with pytest.raises(AnnotationError, match=message) as info:
        Project.load(root)
    assert "project.json" in str(info.value) and "\n" not in str(info.value)


def test_a_box_file_that_is_not_utf8_is_named(tmp_path):
    root = _project(tmp_path, boxes=None)
    (root / "boxes").mkdir()
    (root / "boxes" / "a.csv").write_bytes(b"id,y0,x0,y1,x1\n1,2,3,10,12\n\xff\xfe")
    with pytest.raises(AnnotationError, match="a.csv: not UTF-8 text"):
        Project.load(root)


def test_many_clipped_boxes_give_one_warning(tmp_path):
    rows = "".join(f"{i},-1,0,5,5\n" for i in range(1, 2001))
    root = _project(tmp_path, boxes="id,y0,x0,y1,x1\n" + rows)
    with pytest.warns(UserWarning) as caught:
        Project.load(root)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "2000 boxes extend past the image and were clipped" in messages[0]
    assert "a.csv" in messages[0]


def test_links_that_leave_the_project_are_refused_without_reading_them(tmp_path):
    root = _project(tmp_path)
    secret = tmp_path / "secret.tif"
    secret.write_bytes(b"top secret, not an image")
    (root / "images" / "b.tif").symlink_to(secret)
    with pytest.raises(AnnotationError, match="b.tif: links outside the project") as info:
        Project.load(root)
    assert "secret," not in str(info.value)
    inside = root / "images" / "c.tif"
    inside.symlink_to(root / "images" / "a.tif")  # a link that stays inside is fine
    (root / "images" / "b.tif").unlink()
    assert set(Project.load(root).images) == {"a", "c"}


def test_a_linked_folder_outside_the_project_is_refused_and_never_written_through(tmp_path):
    root = _project(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "strong").symlink_to(outside, target_is_directory=True)
    with pytest.raises(AnnotationError, match="strong: links outside the project"):
        Project.load(root)
    item = ImageAnnotations("a", np.zeros((32, 40), np.float32), strong=np.ones((32, 40), np.uint8))
    with pytest.raises(AnnotationError, match="links outside the project"):
        Project([item]).save(root)
    assert not any(outside.iterdir())


def test_files_with_upper_case_extensions_are_saved_in_place(tmp_path):
    """Loading accepts ``a.TIF`` and ``a.CSV``; saving writes to those files, not beside them,
    so that the folder still loads, and removes them when the annotation is emptied."""
    root = _project(tmp_path, boxes=None)
    (root / "images" / "a.tif").rename(root / "images" / "a.TIF")
    for folder in ("strong", "scribbles", "boxes"):
        (root / folder).mkdir()
    mask = np.zeros((32, 40), np.uint8)
    mask[4:9, 5:11] = 1
    tifffile.imwrite(root / "strong" / "a.TIF", mask)
    tifffile.imwrite(root / "scribbles" / "a.Tiff", mask)
    (root / "boxes" / "a.CSV").write_text("id,y0,x0,y1,x1\n1,2,3,10,12\n")
    p = Project.load(root)
    p["a"].strong[0, 0] = 1
    p.save()
    assert sorted(f.name for f in root.rglob("a.*")) == ["a.CSV", "a.TIF", "a.TIF", "a.Tiff"]
    q = Project.load(root)
    assert q["a"].strong[0, 0] == 1 and len(q["a"].boxes) == 1
    q["a"].scribbles[:] = 0
    q["a"].boxes = []
    q.save()
    assert sorted(f.name for f in root.rglob("a.*")) == ["a.TIF", "a.TIF"]


@pytest.mark.parametrize("folder, name", [("strong", "a.png"), ("scribbles", "a.jpg"), ("images", "b.jpeg")])
def test_files_of_a_type_a_folder_cannot_hold_are_named_not_ignored(tmp_path, folder, name):
    """A mask saved as PNG was silently left out (the image then counted as unlabelled)."""
    root = _project(tmp_path, boxes=None)
    (root / folder).mkdir(exist_ok=True)
    (root / folder / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / folder / "notes.txt").write_text("kept out of the way")
    with pytest.raises(AnnotationError, match=rf"{name}: .*(TIFF|NIfTI)"):
        Project.load(root)


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "a\\b", ".hidden", "c:d", " "])
def test_an_image_name_that_cannot_name_its_files_is_refused_before_anything_is_written(tmp_path, name):
    """An image's name becomes ``images/<name>.tif``: one with a path in it would write
    outside the project (its mask over its image), a hidden one would never be read back."""
    image = np.zeros((8, 8), np.float32)
    project = Project(
        [ImageAnnotations("fine", image), ImageAnnotations(name, image, strong=np.ones((8, 8), np.uint8))]
    )
    with pytest.raises(AnnotationError, match="its name names its files and cannot hold"):
        project.save(tmp_path / "deep" / "p")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_a_volumes_masked_slices_are_those_listed_and_those_holding_labels(tmp_path):
    """The command line reads a project's masked slices as napari reads its masks layer:
    the slices listed in project.json and every slice holding a label (painted elsewhere,
    say), so both train the same slices."""
    from napari_hybridseg.bridge.layer_data import annotated_slices, project_layer_data
    from napari_hybridseg.images import write_image

    for folder in ("images", "strong"):
        (tmp_path / folder).mkdir()
    write_image(tmp_path / "images" / "ct.tif", np.zeros((8, 16, 16), np.float32))
    mask = np.zeros((8, 16, 16), np.uint8)
    mask[2, 4:8, 4:8] = mask[5, 6:10, 6:10] = 1
    write_image(tmp_path / "strong" / "ct.tif", mask)
    (tmp_path / "project.json").write_text(json.dumps({"images": {"ct": {"annotated_slices": [2, 7]}}}))
    loaded = Project.load(tmp_path)["ct"]
    (_, kwargs, _) = next(t for t in project_layer_data(Project.load(tmp_path)) if t[1]["name"] == "ct masks")

    class Layer:
        data, metadata = mask, kwargs["metadata"]

    assert loaded.strong_slices == annotated_slices(Layer) == [2, 5, 7]


def test_a_nifti_mask_in_another_orientation_than_its_scan_is_refused(tmp_path):
    from napari_hybridseg.images import ImageMeta, write_image

    for folder in ("images", "strong"):
        (tmp_path / folder).mkdir()
    scan = np.array([[-0.8, 0, 0, 100], [0, -0.8, 0, -50], [0, 0, 3, 20], [0, 0, 0, 1]], float)
    write_image(
        tmp_path / "images" / "ct.nii.gz", np.zeros((4, 8, 8), np.float32), ImageMeta(affine=scan, format="nii.gz")
    )
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1, 2:4, 2:4] = 1
    write_image(tmp_path / "strong" / "ct.nii.gz", mask, ImageMeta(affine=scan, format="nii.gz"))
    assert Project.load(tmp_path)["ct"].strong.sum() == 4
    flipped = np.diag([0.8, 0.8, 3, 1])  # the same grid read mirrored in x and y
    write_image(tmp_path / "strong" / "ct.nii.gz", mask, ImageMeta(affine=flipped, format="nii.gz"))
    with pytest.raises(AnnotationError, match=r"strong/ct.nii.gz: its NIfTI affine differs from its image's"):
        Project.load(tmp_path)
