"""The simulated annotators and object shapes the benchmarks vary their data with."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import regionprops

from napari_hybridseg.annotations import BACKGROUND_STROKE
from napari_hybridseg.synthetic import ANNOTATORS, simulate_weak_labels, synth_image


def _scene(objects="round", seed=0):
    return synth_image(np.random.default_rng(seed), (160, 160), objects=objects)


def _stroke_widths(scribbles: np.ndarray) -> list[float]:
    """Each object stroke's width: twice the largest distance from one of its pixels to
    its outside, less one (diagonal strokes measure up to half a pixel wider)."""
    widths = []
    for value in np.unique(scribbles):
        if value <= BACKGROUND_STROKE:  # background strokes share a value and may cross
            continue
        parts, n = ndi.label(scribbles == value)
        dist = ndi.distance_transform_edt(parts > 0)
        widths += [2 * float(dist[parts == k].max()) - 1 for k in range(1, n + 1)]
    return widths


def test_thin_and_brush_annotators_draw_strokes_of_their_width():
    _, labels = _scene()
    thin = simulate_weak_labels(labels, np.random.default_rng(1), 0.0, False, True, style=ANNOTATORS["thin"])
    brush = simulate_weak_labels(labels, np.random.default_rng(1), 0.0, False, True, style=ANNOTATORS["brush"])
    assert max(_stroke_widths(thin.scribbles)) <= 3.5
    assert np.median(_stroke_widths(brush.scribbles)) >= 4
    # a clean object stroke stays on its object; background strokes stay off every object
    for sim in (thin, brush):
        fg_strokes = (sim.scribbles > BACKGROUND_STROKE) & (labels == 0)
        assert not fg_strokes.any() and not (labels[sim.scribbles == BACKGROUND_STROKE] > 0).any()


def test_a_varied_annotators_clean_boxes_hold_their_object_within_a_few_pixels():
    _, labels = _scene(seed=2)
    sim = simulate_weak_labels(labels, np.random.default_rng(3), 0.0, True, False, style=ANNOTATORS["varied"])
    margins = []
    for box, obj in zip(sim.boxes, regionprops(labels)):
        y0, x0, y1, x1 = obj.bbox
        sides = [y0 - box.y0, x0 - box.x0, box.y1 - y1, box.x1 - x1]
        clipped = [box.y0 == 0, box.x0 == 0, box.y1 == labels.shape[0], box.x1 == labels.shape[1]]
        margins += [m for m, c in zip(sides, clipped) if not c]
        assert min(sides) >= 0
    assert max(margins) <= 4 and len(set(margins)) > 1  # tight to loose by a few pixels


def test_object_shapes():
    ratios = {}
    for kind in ("round", "elongated", "irregular"):
        props = [p for seed in range(3) for p in regionprops(_scene(kind, seed)[1])]
        ratios[kind] = np.median([p.axis_minor_length / p.axis_major_length for p in props])
        if kind == "irregular":
            assert np.mean([p.solidity for p in props]) < 0.9
    assert ratios["elongated"] < 0.4 < 0.6 < ratios["round"]
    with pytest.raises(ValueError, match="unknown objects 'square'"):
        synth_image(np.random.default_rng(0), objects="square")
