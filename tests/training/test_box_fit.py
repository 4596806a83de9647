"""Box fit (``dii_box_fit``): a box judged by the predicted object it encloses, against
the tight boxes of the full masks."""

import dataclasses

import numpy as np
import torch

from napari_hybridseg.annotations import Box, ImageAnnotations, Project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.training import TrainingLoop
from napari_hybridseg.training.box_fit import FitBox, box_fits, boxes_of_map, boxes_of_objects, object_radius
from napari_hybridseg.training.calibration import calibrated_fit


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _touching(shape=(96, 96)):
    """Two discs of radius 10 that touch over a short neck, and one apart."""
    mask = _disc(shape, 30, 30, 10) | _disc(shape, 30, 48, 10) | _disc(shape, 70, 70, 10)
    return mask.astype(np.int8)


def _boxmap(shape, rects, z=None):
    boxmap = np.full(shape, -1, np.int32)
    order = sorted(range(len(rects)), key=lambda b: -(rects[b][2] - rects[b][0]) * (rects[b][3] - rects[b][1]))
    for b, (y0, x0, y1, x1) in ((b, rects[b]) for b in order):  # smaller boxes own overlaps, as in training
        if z is None:
            boxmap[y0:y1, x0:x1] = b
        else:
            boxmap[z, y0:y1, x0:x1] = b
    return boxmap


def _boxes(rects, cls=1):
    return [FitBox(b, (), rect, cls) for b, rect in enumerate(rects)]


TIGHT, LOOSE, SHIFTED, EMPTY = (20, 20, 41, 41), (10, 10, 55, 66), (60, 72, 81, 93), (70, 5, 90, 25)


def test_a_tight_box_on_one_of_two_touching_objects_fits_and_loose_shifted_or_empty_boxes_do_not():
    pred = _touching()
    fits = box_fits(pred, _boxes([TIGHT, LOOSE, EMPTY, (60, 60, 81, 81), SHIFTED]), {1: 10.0})
    # the touching pair is cut at its neck: the tight box encloses one whole disc
    assert fits[0] > 0.9 and fits[3] > 0.9
    assert fits[1] < 0.35  # the loose box holds both discs of the pair
    assert fits[2] == 0.0  # nothing predicted in it
    assert fits[4] < 0.4  # moved by half its side off the lone disc
    # a class without a radius (no controls) is not fitted
    assert box_fits(pred, _boxes([TIGHT], cls=2), {1: 10.0}) == {}


def test_boxes_on_slices_of_a_volume_fit_as_on_their_plane():
    plane = _touching()
    volume = np.zeros((4, *plane.shape), np.int8)
    volume[2] = plane
    rects = [TIGHT, LOOSE, EMPTY]
    flat = box_fits(plane, boxes_of_map(_boxmap(plane.shape, rects), np.ones(3, int)), {1: 10.0})
    in_volume = boxes_of_map(_boxmap(volume.shape, rects, z=2), np.ones(3, int))
    assert {b.plane for b in in_volume} == {(2,)}
    assert box_fits(volume, in_volume, {1: 10.0}) == flat
    assert flat[0] > 0.9 and flat[1] < 0.35
    # on another slice nothing is predicted
    elsewhere = boxes_of_map(_boxmap(volume.shape, rects, z=1), np.ones(3, int))
    assert set(box_fits(volume, elsewhere, {1: 10.0}).values()) == {0.0}


def test_object_radius_is_the_median_half_width_and_touching_objects_do_not_change_it():
    target = np.zeros((40, 40), np.int8)
    target[2:13, 2:13] = 1  # half width 6
    target[20:25, 20:25] = 1  # 3
    target[28:39, 28:39] = 2
    radius = object_radius([target], 2)
    assert radius == {1: 4.5, 2: 6.0}
    one, two = _disc((96, 96), 30, 30, 10), _touching()
    single = object_radius([one.astype(np.int8)], 1)[1]
    assert object_radius([two[:50]], 1)[1] == single and abs(single - 10) < 0.1


def test_the_controls_of_the_fit_are_the_full_masks_objects_cut_apart():
    boxes = boxes_of_objects(_touching(), {1: 10.0}, start=5)
    assert [b.index for b in boxes] == [5, 6, 7]
    assert all(b.cls == 1 and b.plane == () for b in boxes)
    assert sorted((b.rect[3] - b.rect[1]) for b in boxes)[-1] <= 21  # no box holds both discs of the pair


def test_fits_are_measured_against_their_classes_controls():
    ctrl = torch.tensor([0.90, 0.85, 0.95, 0.92, 0.88, 0.9, 0.9])
    ctrl_groups = torch.tensor([3, 3, 3, 3, 3, 5, 5])  # class 2 has two controls only
    fit = torch.tensor([0.91, 0.30, float("nan"), 0.1])
    groups = torch.tensor([3, 3, 0, 5])
    out = calibrated_fit(fit, groups, ctrl, ctrl_groups)
    assert out[0] < 0 < out[1]
    assert torch.isnan(out[2]) and torch.isnan(out[3])


class _ThresholdNet(torch.nn.Module):
    """Predicts foreground where the (normalised) image is above ``level``: a network
    that segments perfectly, whose objects' boxes are the truth's."""

    n_outputs, n_features = 2, 1

    def __init__(self, level: float):
        super().__init__()
        self.classifier = torch.nn.Conv2d(1, 2, 1).double()
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[[[-10.0]]], [[[10.0]]]]))
            self.classifier.bias.copy_(torch.tensor([10.0 * level, -10.0 * level]))

    def features(self, x):
        return x


def _scene(seed, shape=(96, 96)):
    """Pairs of touching discs and single discs, and their image."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate([(20, 20), (20, 62), (62, 20), (64, 66)]):
        labels[_disc(shape, cy, cx, 9)] = 2 * k + 1
        if k % 2 == 0:  # a neighbour touching it
            labels[_disc(shape, cy, cx + 17, 9) & (labels == 0)] = 2 * k + 2
    image = (labels > 0) * 1.0 + rng.normal(0, 0.05, shape)
    return image.astype(np.float32), labels


def test_box_fit_lowers_a_loose_box_among_touching_objects_and_keeps_tight_ones():
    img_s, lab_s = _scene(0)
    img_w, lab_w = _scene(1)
    boxes = []
    for k in np.unique(lab_w)[1:]:
        ys, xs = np.nonzero(lab_w == k)
        boxes.append(Box(int(k), ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
    boxes[0] = Box(1, 6, 6, 36, 54)  # around the first touching pair: one box for two objects
    project = Project([ImageAnnotations("s", img_s, strong=lab_s), ImageAnnotations("w", img_w, boxes=boxes)])
    cfg = TrainConfig(method="dii", steps=1, batch_size=2, patch_size=32, width=4, depth=2, dii_box_fit=True)
    loop = TrainingLoop(project, cfg)
    weak = next(s for s in loop.tset.weak)
    net = _ThresholdNet(float(weak.image.min() + weak.image.max()) / 2)
    score = loop.scorer.hypergradient([net])
    fits = loop.scorer.instance_fits()
    box_of = {int(r.key.instance): i for i, r in enumerate(loop.tset.instances) if r.key.kind == "box"}
    assert fits[box_of[1]] < 0.6
    assert all(fits[box_of[k]] > 0.85 for k in box_of if k != 1)
    assert score[box_of[1]] > 0
    # against the controls (the strong image's tight boxes, as well fitted), the loose box
    # is clearly worse and the tight ones are not
    scorer, ctrl = loop.scorer, loop.scorer.control_scorer
    measured = calibrated_fit(fits, scorer.groups, ctrl.fitter.values(scorer.dist), ctrl.fitter.groups)
    assert measured[box_of[1]] > 0
    assert all(measured[box_of[k]] < 0 for k in box_of if k != 1)
    # without the option the scores are those of the claims alone
    claims_only = TrainingLoop(project, dataclasses.replace(cfg, dii_box_fit=False)).scorer.hypergradient([net])
    assert torch.equal(score, torch.maximum(claims_only, measured.nan_to_num(-np.inf).to(claims_only)))
