"""Targets and instance maps built from strong and weak annotations."""

import numpy as np
import pytest

from napari_hybridseg.annotations import Box, ImageAnnotations, Project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.data.targets import build_training_set, inscribed_ellipse
from napari_hybridseg.errors import ConfigError
from napari_hybridseg.protocol import InstanceKey

TINY = dict(batch_size=2, patch_size=32, width=4, depth=2)


def _cfg(**kw):
    return TrainConfig(**{**TINY, **kw})


def _keys(tset):
    return [r.key for r in tset.instances]


def test_box_targets_filled_and_projection(hand_project):
    filled = build_training_set(hand_project, _cfg(box_target="filled", background_tile=0))  # one region
    w = filled.weak[0]
    k1 = _keys(filled).index(InstanceKey("w", "1", "box"))
    kb = _keys(filled).index(InstanceKey("w", "background", "background"))
    assert (w.target[4:20, 4:20] == 1).all() and (w.instance[4:20, 4:20] == k1).all()
    assert w.target[0, 0] == 0 and w.instance[0, 0] == kb
    proj = build_training_set(hand_project, _cfg(box_target="projection", background_tile=0)).weak[0]
    assert (proj.target[3:21, 3:21] == -1).all()  # box and its ring: no cross-entropy
    assert (proj.instance[3:21, 3:21] == k1).all()
    assert (proj.boxmap[4:20, 4:20] >= 0).all() and proj.boxmap[3, 3] == -1
    assert proj.target[0, 0] == 0


def test_not_exhaustive_leaves_outside_ignored(hand_project):
    hand_project["w"].exhaustive = False
    w = build_training_set(hand_project, _cfg(box_target="filled")).weak[0]
    assert w.target[0, 0] == -1 and w.instance[0, 0] == -1
    assert all(r.key.kind == "box" for r in build_training_set(hand_project, _cfg()).instances)


def test_overlapping_boxes_smaller_owns_overlap():
    img = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    p = Project(
        [
            ImageAnnotations("s", img, strong=np.zeros((40, 40), np.uint8)),
            ImageAnnotations("w", img, boxes=[Box(1, 0, 0, 30, 30), Box(2, 10, 10, 20, 20)]),
        ]
    )
    ts = build_training_set(p, _cfg(box_target="filled"))
    assert ts.weak[0].instance[15, 15] == _keys(ts).index(InstanceKey("w", "2", "box"))
    assert ts.weak[0].instance[5, 5] == _keys(ts).index(InstanceKey("w", "1", "box"))


def test_every_stroke_is_an_instance_with_its_own_target():
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    scr = np.zeros((32, 32), np.int32)
    scr[2, 2:10] = 1
    scr[20, 5:15] = 2
    scr[26, 5:15] = 2  # a second stroke drawn with the same value
    p = Project(
        [ImageAnnotations("s", img, strong=np.ones((32, 32), np.uint8)), ImageAnnotations("w", img, scribbles=scr)]
    )
    ts = build_training_set(p, _cfg())
    w = ts.weak[0]
    assert (w.target[2, 2:10] == 0).all() and (w.target[20, 5:15] == 1).all() and (w.target[26, 5:15] == 1).all()
    assert (w.target[scr == 0] == -1).all()
    assert _keys(ts) == [InstanceKey("w", i, "scribble") for i in ("1@2:2", "2@20:5", "2@26:5")]
    assert len({w.instance[2, 2], w.instance[20, 5], w.instance[26, 5]}) == 3


def test_volume_scribbles_are_one_instance_per_stroke_and_slice():
    """Each stroke on each slice of a volume has its own weight, with its own signature."""
    rng = np.random.default_rng(0)
    vol = rng.random((6, 32, 32)).astype(np.float32)
    mask = np.zeros((6, 32, 32), np.uint8)
    mask[:, 10:20, 10:20] = 1
    scr = np.zeros((6, 32, 32), np.int32)
    scr[1, 12, 12:18] = 2
    scr[3, 14, 12:18] = 2
    p = Project([ImageAnnotations("s", vol, strong=mask), ImageAnnotations("w", vol, scribbles=scr)])
    ts = build_training_set(p, _cfg())
    assert _keys(ts) == [InstanceKey("w", "2@1:12:12", "scribble"), InstanceKey("w", "2@3:14:12", "scribble")]
    scr2 = scr.copy()
    scr2[3, 15, 12:18] = 2  # the stroke on slice 3 is thickened
    edited = build_training_set(
        Project([ImageAnnotations("s", vol, strong=mask), ImageAnnotations("w", vol, scribbles=scr2)]), _cfg()
    )
    before = {r.key: r.signature for r in ts.instances}
    after = {r.key: r.signature for r in edited.instances}
    assert after[_keys(ts)[0]] == before[_keys(ts)[0]]
    assert after[_keys(ts)[1]] != before[_keys(ts)[1]]


def test_volume_trains_on_annotated_slices():
    rng = np.random.default_rng(0)
    vol = rng.random((6, 32, 32)).astype(np.float32)
    mask = np.zeros((6, 32, 32), np.uint8)
    mask[:, 10:20, 10:20] = 1
    p = Project(
        [
            ImageAnnotations("s", vol, strong=mask),
            ImageAnnotations("w", vol, boxes=[Box(1, 5, 5, 15, 15, z=2), Box(2, 5, 5, 15, 15, z=4)]),
        ]
    )
    ts = build_training_set(p, _cfg())
    assert len(ts.strong) == 6 and sorted(s.z for s in ts.weak) == [2, 4]


def test_samples_follow_image_names_not_insertion_order(hand_project):
    forward = build_training_set(hand_project, _cfg())
    backward = build_training_set(Project(list(hand_project)[::-1]), _cfg())
    assert [s.name for s in forward.samples] == [s.name for s in backward.samples] == ["s", "w"]
    assert forward.instances == backward.instances


def test_no_strong_data_is_an_error():
    img = np.zeros((32, 32), np.float32)
    with pytest.raises(ValueError, match="full mask"):
        build_training_set(Project([ImageAnnotations("w", img, boxes=[Box(1, 0, 0, 5, 5)])]), _cfg())


def test_inscribed_ellipse_drops_the_corners_only():
    core = inscribed_ellipse(20, 40)
    assert core.shape == (20, 40)
    assert core[10, 20] and core[10, 0] and core[10, 39] and core[0, 20] and core[19, 20]
    assert not core[0, 0] and not core[19, 39] and not core[0, 39] and not core[19, 0]
    assert abs(core.mean() - np.pi / 4) < 0.03  # an ellipse fills pi/4 of its box
    assert inscribed_ellipse(1, 1).all() and inscribed_ellipse(1, 7).all()


def test_a_slack_box_claims_what_the_tight_box_claims():
    """A box drawn 2 px loose around a disc: its ellipse claims background pixels unless
    the slack is taken off first, and then it claims object pixels only."""
    yy, xx = np.mgrid[:24, :24]
    disc = (yy - 11.5) ** 2 + (xx - 11.5) ** 2 <= 10**2  # a disc of radius 10 centred in 24 x 24
    assert (inscribed_ellipse(24, 24) & ~disc).any()
    core = inscribed_ellipse(24, 24, slack=2)
    assert core.any() and not (core & ~disc).any()
    assert core.sum() > 0.8 * disc.sum()
    # a slack larger than the box leaves the middle half of each side, never nothing
    small = inscribed_ellipse(8, 8, slack=10)
    assert small[3:5, 3:5].all() and not small[:2].any() and not small[:, :2].any()
    # a slack that would widen the claim past the box, or is no number, is refused
    for bad in (-1.0, float("nan")):
        with pytest.raises(ConfigError, match="dii_box_slack"):
            _cfg(dii_box_slack=bad)


def test_class_ids_reach_the_targets_from_masks_boxes_and_strokes():
    from napari_hybridseg.annotations import LabelClasses

    img = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    mask = np.zeros((40, 40), np.uint8)
    mask[2:10, 2:10], mask[20:30, 20:30] = 1, 2
    strokes = np.zeros((40, 40), np.uint8)
    strokes[35, 2:10], strokes[36, 12:20], strokes[37, 22:30] = 1, 2, 3
    weak = ImageAnnotations("w", img, boxes=[Box(1, 2, 2, 12, 12, cls=2)], scribbles=strokes, exhaustive=False)
    classes = LabelClasses(("liver", "tumour"))
    tset = build_training_set(
        Project([ImageAnnotations("s", img, strong=mask), weak], classes=classes), _cfg(box_target="filled")
    )
    assert tset.task.n_outputs == 3
    np.testing.assert_array_equal(tset.strong[0].target, mask)
    w = tset.weak[0]
    assert (w.target[2:12, 2:12] == 2).all()
    assert (w.target[35, 2:10] == 0).all() and (w.target[36, 12:20] == 1).all() and (w.target[37, 22:30] == 2).all()
    proj = build_training_set(Project([ImageAnnotations("s", img, strong=mask), weak], classes=classes), _cfg())
    assert proj.box_class.tolist() == [2]
    # one structure: every mask value above 0 and every stroke value from 2 is that structure
    weak.boxes = [Box(1, 2, 2, 12, 12)]
    binary = build_training_set(Project([ImageAnnotations("s", img, strong=mask * 3), weak]), _cfg())
    assert set(np.unique(binary.strong[0].target)) == {0, 1} and binary.task.n_outputs == 2
    assert (binary.weak[0].target[37, 22:30] == 1).all()


def test_a_volume_masked_on_some_slices_teaches_only_those_and_its_strokes_elsewhere(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.random((6, 32, 32)).astype(np.float32)
    mask = np.zeros((6, 32, 32), np.uint8)
    mask[1, 4:12, 4:12] = 1  # slices 1 and 4 annotated; slice 4 has no object on it
    strokes = np.zeros((6, 32, 32), np.uint8)
    strokes[3, 20, 2:20] = 1
    item = ImageAnnotations("v", vol, strong=mask, scribbles=strokes, strong_slices=[4, 1])
    project = Project([item])
    assert item.strong_slices == [1, 4] and item.role == "strong" and item.weak_slices() == [3]
    tset = build_training_set(project, _cfg())
    assert [(s.z, s.strong) for s in tset.samples] == [(1, True), (4, True), (3, False)]
    assert not tset.samples[1].target.any()  # an annotated slice without the structure is background
    # the slices are kept in project.json; a volume masked whole writes nothing there
    project.save(tmp_path / "p")
    assert Project.load(tmp_path / "p")["v"].strong_slices == [1, 4]
    item.strong_slices = None
    project.save(tmp_path / "p")
    assert Project.load(tmp_path / "p")["v"].strong_slices is None
    assert "annotated_slices" not in (tmp_path / "p" / "project.json").read_text()


@pytest.mark.parametrize(
    "slices, message", [([7], "slice 7 is outside 0..5"), ("1,2", "expected a list of slice indices")]
)
def test_annotated_slices_are_checked(tmp_path, slices, message):
    import json

    from napari_hybridseg.errors import AnnotationError

    vol = np.zeros((6, 16, 16), np.float32)
    Project([ImageAnnotations("v", vol, strong=np.ones((6, 16, 16), np.uint8))]).save(tmp_path / "p")
    path = tmp_path / "p" / "project.json"
    data = json.loads(path.read_text())
    data["images"]["v"]["annotated_slices"] = slices
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=message):
        Project.load(tmp_path / "p")
