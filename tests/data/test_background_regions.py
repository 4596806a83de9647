"""The background of a boxed image in regions: each its own weak annotation, so that a
missed object silences only its region; one region for small images, per slice in volumes."""

import numpy as np
import pytest

from napari_hybridseg.annotations import Box, ImageAnnotations, Project
from napari_hybridseg.annotations.regions import background_regions, region_rects
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.data.targets import build_training_set


def _project(shape=(200, 300), exhaustive=True, volume=False):
    rng = np.random.default_rng(0)
    strong = np.zeros((64, 64), np.int32)
    strong[20:40, 20:40] = 1
    img = rng.random(shape).astype(np.float32)
    boxes = [Box(1, 10, 10, 30, 30), Box(2, 150, 250, 180, 290)]
    if volume:
        img = rng.random((3, *shape)).astype(np.float32)
        boxes = [Box(1, 10, 10, 30, 30, z=1)]
    return Project(
        [
            ImageAnnotations("s", rng.random((64, 64)).astype(np.float32), strong=strong),
            ImageAnnotations("w", img, boxes=boxes, exhaustive=exhaustive),
        ]
    )


def test_the_background_of_a_large_boxed_image_is_cut_into_regions():
    ts = build_training_set(_project(), TrainConfig(background_tile=100))
    names = [r.key.instance for r in ts.instances if r.key.kind == "background"]
    # 200 x 300 in tiles of about 100: 2 x 3 regions, named by their top-left corner
    assert names == [f"background@{y}:{x}" for y in (0, 100) for x in (0, 100, 200)]
    (weak,) = ts.weak
    keys = [r.key.instance for r in ts.instances]
    bg = weak.target == 0
    rects = region_rects(names, (200, 300))
    for name in names:
        _, y0, x0, y1, x1 = rects[name]
        inside = np.zeros(bg.shape, bool)
        inside[y0:y1, x0:x1] = True
        assert set(np.unique(weak.instance[bg & inside])) == {keys.index(name)}
    # box pixels belong to their boxes, not to a region
    assert weak.instance[20, 20] == keys.index("1")


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (TrainConfig(background_tile=0), ["background"]),
        (TrainConfig(background_tile=512), ["background"]),
        (TrainConfig(background_tile=100, granularity="image"), []),
    ],
    ids=["one-region", "image-smaller-than-a-region", "paper-granularity"],
)
def test_one_region_where_asked_and_one_weight_per_image_with_image_granularity(cfg, expected):
    ts = build_training_set(_project(), cfg)
    assert [r.key.instance for r in ts.instances if r.key.kind == "background"] == expected
    if cfg.granularity == "image":
        (weak,) = ts.weak
        assert set(np.unique(weak.instance[weak.target == 0])) == {0}  # the image's one weight


def test_a_volumes_regions_are_per_slice_and_images_not_boxed_exhaustively_have_none():
    ts = build_training_set(_project(shape=(64, 64), volume=True), TrainConfig(background_tile=128))
    assert [r.key.instance for r in ts.instances if r.key.kind == "background"] == ["background@1:0:0"]
    ts = build_training_set(_project(exhaustive=False), TrainConfig(background_tile=100))
    assert not [r for r in ts.instances if r.key.kind == "background"]


def test_region_names_and_rectangles_agree():
    index, names = background_regions((130, 257), 64, z=4)
    assert len(names) == 3 * 5 and index.max() == len(names) - 1
    rects = region_rects([*names, "7", "background@x"], (9, 130, 257))
    assert set(rects) == set(names)  # names that are no region are left out
    for k, name in enumerate(names):
        z, y0, x0, y1, x1 = rects[name]
        assert z == 4 and (index[y0:y1, x0:x1] == k).all() and (index == k).sum() == (y1 - y0) * (x1 - x0)
    assert region_rects(["background"], (130, 257)) == {"background": (None, 0, 0, 130, 257)}


def test_objects_outside_every_box_are_counted():
    from napari_hybridseg.bridge import unboxed_objects

    fg = np.zeros((100, 100), bool)
    centres = [(10, 10), (10, 50), (50, 50), (80, 20), (80, 80)]
    for y, x in centres:
        fg[y - 4 : y + 4, x - 4 : x + 4] = True
    fg[95, 95] = True  # a speck is no object
    boxes = [Box(1, 5, 5, 15, 15), Box(2, 45, 45, 55, 55), Box(3, 0, 0, 10, 10, z=4)]
    assert unboxed_objects(fg, boxes) == (3, 5)
    # a preview of a part of the image: boxes are moved into its frame
    assert unboxed_objects(fg[40:, 40:], boxes, origin=(40, 40)) == (1, 2)
    # boxes of another slice do not count
    assert unboxed_objects(fg, boxes, z=4) == (4, 5)  # only the box of slice 4 counts there
    assert unboxed_objects(fg, []) == (0, 0)


def test_by_default_an_unboxed_object_shares_its_region_with_a_small_part_of_a_tiles_background():
    """In a 128 px tile of nuclei (the dsb2018 tiles of the benchmark), one object left
    unboxed is taught as background; with the whole tile one region, its disagreement is
    diluted by all the background that is right and DII keeps the region."""
    rng = np.random.default_rng(0)
    strong = np.zeros((64, 64), np.int32)
    strong[20:40, 20:40] = 1
    boxes = [Box(1, 10, 10, 30, 30), Box(2, 90, 20, 115, 45)]  # the object at (60:80, 80:100) is missed
    project = Project(
        [
            ImageAnnotations("s", rng.random((64, 64)).astype(np.float32), strong=strong),
            ImageAnnotations("w", rng.random((128, 128)).astype(np.float32), boxes=boxes),
        ]
    )
    ts = build_training_set(project, TrainConfig())
    (weak,) = ts.weak
    background = weak.target == 0
    holding = np.unique(weak.instance[60:80, 80:100])
    assert holding.min() >= 0  # background regions, each its own weight
    for region in holding:
        assert (background & (weak.instance == region)).sum() <= 0.25 * background.sum()


@pytest.mark.parametrize("tile", [48, 64, 100])
def test_a_region_beside_a_column_of_regions_covered_by_boxes_keeps_its_own_rectangle(tile):
    """Regions wholly under boxes have no weight and no name; their neighbours are still
    drawn on the grid that cut them, not across the boxes."""
    shape = (150, 310)
    index, names = background_regions(shape, tile)
    columns = sorted({int(n.split(":")[1]) for n in names})
    present = [n for n in names if int(n.split(":")[1]) != columns[1]]  # the second column covered
    rects = region_rects(present, shape)
    for name in present:
        _, y0, x0, y1, x1 = rects[name]
        k = names.index(name)
        assert (index[y0:y1, x0:x1] == k).all() and (index == k).sum() == (y1 - y0) * (x1 - x0), name
