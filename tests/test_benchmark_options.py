"""`benchmarks/label_efficiency.py`: `--set KEY=VALUE` options reach TrainConfig with their
field's type, and `--weak` gives every weak image its kind."""

import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def label_efficiency(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "label_efficiency", raising=False)
    import label_efficiency

    return label_efficiency


@pytest.fixture
def config_options(label_efficiency):
    return label_efficiency.config_options


def _discs(k: int) -> np.ndarray:
    labels = np.zeros((48, 48), np.int32)
    yy, xx = np.mgrid[:48, :48]
    for i, (cy, cx) in enumerate([(12, 12), (12, 34), (34, 12), (34, 34)], start=1):
        labels[(yy - cy - k % 3) ** 2 + (xx - cx) ** 2 <= 36] = i
    return labels


@pytest.mark.parametrize("weak", ["alternate", "boxes", "scribbles"])
def test_weak_option_gives_the_weak_images_their_kind(label_efficiency, weak):
    train = [(f"im{k}", np.random.default_rng(k).random((48, 48)).astype(np.float32), _discs(k)) for k in range(5)]
    hybrid, _, _ = label_efficiency.build_project(train, "10pct", 0, 0.0, weak=weak)
    kinds = [(bool(item.boxes), item.has_scribbles) for item in hybrid.images.values()]
    assert kinds[0] == (False, False)  # the masked image
    expected = {
        "alternate": [(False, True), (True, False), (False, True), (True, False)],
        "boxes": [(True, False)] * 4,
        "scribbles": [(False, True)] * 4,
    }[weak]
    assert kinds[1:] == expected


def test_set_options_take_their_fields_types(config_options):
    got = config_options(["augment=false", "dii_space=weight", "lambda_cr=0.5", "dii_warmup=20", "background_tile=64"])
    assert got == {"augment": False, "dii_space": "weight", "lambda_cr": 0.5, "dii_warmup": 20, "background_tile": 64}
    assert config_options(["augment=true"]) == {"augment": True}


def test_box_claims_nest_cue_marks_a_box_enclosing_a_smaller_one(monkeypatch):
    """`box_claims.py`'s `nest` judge: a box three times too large around one of two touching
    discs encloses the other's box; the two tight boxes, which overlap, enclose nothing;
    a box of another class or slice does not count."""
    from napari_hybridseg.annotations import Box

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "box_claims", raising=False)
    import box_claims

    a, b = Box(1, 10, 10, 20, 20), Box(2, 10, 18, 20, 28)  # touching objects, boxes overlapping by 2 px
    loose = Box(3, 0, 0, 30, 30)
    assert box_claims.enclosure(a, [a, b]) == 0.0 and box_claims.enclosure(b, [a, b]) == 0.0
    assert box_claims.enclosure(loose, [a, b, loose]) == 1.0
    assert box_claims.enclosure(loose, [Box(4, 10, 10, 20, 20, cls=2), Box(5, 10, 10, 20, 20, z=1)]) == 0.0
    largest = {1: a.area}  # the largest object box of class 1 in the full masks
    scores = box_claims.with_pixel_free_judges({"ellipse": 0.9}, loose, [a, loose], largest)
    assert scores["nest"] == 0.0 and scores["ellipse+nest"] == 0.0
    # the size judge: nine times the largest object's box is too large, the same size is not,
    # and a class without objects in the full masks is not judged
    assert scores["size"] == 0.0 and scores["ellipse+size"] == 0.0
    assert box_claims.with_pixel_free_judges({"ellipse": 0.9}, b, [a, b], largest)["ellipse+size"] == 0.9
    assert box_claims.with_pixel_free_judges({"ellipse": 0.9}, loose, [loose], {2: a.area})["size"] == 1.0
    planes = [(np.array([[1, 1, 0], [0, 0, 2]]), np.array([[1, 1, 0], [0, 0, 1]]))]
    assert box_claims.largest_boxes(planes) == {1: 2}
