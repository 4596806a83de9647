"""Boxes between napari's rectangles and the project's pixel boxes (no viewer needed)."""

import numpy as np
import pytest

from napari_hybridseg.annotations import Box
from napari_hybridseg.bridge import box_to_corners, corners_to_box


def _rect(y0, x0, y1, x1):
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)


@pytest.mark.parametrize("edges", [(1.6, 7.4), (1.4, 7.6), (1.5, 7.5), (1.51, 7.49), (1.9, 7.1)])
def test_a_drawn_box_holds_the_pixels_whose_centres_it_encloses(edges):
    """Pixel k spans [k - 0.5, k + 0.5]: a rectangle drawn a little inside or outside an
    object's pixels 2..7 keeps every pixel whose centre it encloses, on every side alike."""
    lo, hi = edges
    box = corners_to_box(_rect(lo, lo, hi, hi), 1)
    assert (box.y0, box.x0, box.y1, box.x1) == (2, 2, 8, 8)


def test_boxes_round_trip_through_corners_with_float_noise():
    for box in (Box(1, 2, 3, 8, 9), Box(4, 0, 0, 1, 1, z=2, cls=3)):
        noisy = box_to_corners(box) * 0.3 / 0.3 + 1e-9
        assert corners_to_box(noisy, box.id, box.cls) == box
        assert corners_to_box(box_to_corners(box) - 1e-9, box.id, box.cls) == box
