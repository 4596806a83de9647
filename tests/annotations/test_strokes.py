"""Scribble strokes: every connected stroke on a slice is its own annotation, named stably."""

import numpy as np

from napari_hybridseg.annotations import parse_stroke_id, slice_strokes


def test_each_connected_stroke_of_a_value_is_separate():
    scr = np.zeros((20, 30), np.int32)
    scr[2, 3:10] = 2  # two strokes drawn with the default value 2 ...
    scr[12:15, 20] = 2
    scr[5, 5:8] = 1  # ... a background stroke
    scr[8, 9] = 2  # touches nothing of value 2: a third stroke
    strokes = slice_strokes(scr)
    assert [(s.label, s.instance_id) for s in strokes] == [(1, "1@5:5"), (2, "2@2:3"), (2, "2@8:9"), (2, "2@12:20")]
    assert sum(s.pixels.size for s in strokes) == int((scr > 0).sum())


def test_diagonal_pixels_belong_to_one_stroke():
    scr = np.zeros((6, 6), np.int32)
    scr[np.arange(5), np.arange(5)] = 3
    (stroke,) = slice_strokes(scr)
    assert stroke.pixels.size == 5 and stroke.instance_id == "3@0:0"


def test_identity_survives_edits_of_other_strokes_and_signature_tracks_its_own():
    scr = np.zeros((20, 20), np.int32)
    scr[2, 2:8] = 2
    scr[10, 2:8] = 2
    before = {s.instance_id: s.signature for s in slice_strokes(scr)}
    scr[15, 10:14] = 2  # a new stroke elsewhere
    scr[10, 8] = 2  # the second stroke is extended
    after = {s.instance_id: s.signature for s in slice_strokes(scr)}
    assert after["2@2:2"] == before["2@2:2"]
    assert after["2@10:2"] != before["2@10:2"]
    assert "2@15:10" in after


def test_volume_strokes_carry_their_slice():
    (stroke,) = slice_strokes(np.pad(np.ones((2, 2), np.int32) * 4, 3), z=7)
    assert stroke.instance_id == "4@7:3:3" and parse_stroke_id(stroke.instance_id) == (4, (7, 3, 3))
