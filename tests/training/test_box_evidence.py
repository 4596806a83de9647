"""A box's DII evidence read off its claimed pixels (``dii_box_evidence="quantile"``): the
per-pixel evidence sums to the closed-form dot products, the quantile is the one the
controls' covered share sets, and only boxes are scored otherwise."""

import numpy as np
import pytest
import torch

from napari_hybridseg.annotations import Box, ImageAnnotations, Project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.training import TrainingLoop
from napari_hybridseg.training.box_evidence import BOX_MARGIN, ClaimPixels, claim_shares, quantile_evidence
from napari_hybridseg.training.calibration import CONTROL_MARGIN, calibrated
from napari_hybridseg.training.classifier import gradient_space

CFG = dict(
    method="dii", steps=1, batch_size=2, patch_size=32, width=4, depth=2, dii_reference="controls",
    dii_box_target="ellipse", dii_box_evidence="quantile",
)  # fmt: skip


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _project():
    """A strong image of three discs; a weak one with a tight box, a box three times too
    large and a stroke."""
    shape = (64, 64)
    labels = np.zeros(shape, np.uint8)
    for cy, cx, r in ((14, 14, 7), (44, 20, 9), (30, 48, 8)):
        labels[_disc(shape, cy, cx, r)] = 1
    image = ((labels > 0) * 1.0 + np.random.default_rng(0).normal(0, 0.1, shape)).astype(np.float32)
    strokes = np.zeros(shape, np.int32)
    strokes[42:45, 14:26] = 2
    boxes = [Box(1, 7, 7, 22, 22), Box(2, 8, 33, 52, 63)]  # tight around (14, 14); loose around (30, 48)
    weak = ImageAnnotations("w", image, boxes=boxes, scribbles=strokes)
    return Project([ImageAnnotations("s", image, strong=labels), weak]), labels


def test_quantile_evidence_takes_each_instances_lower_quantile():
    index = torch.tensor([0, 0, 0, 0, 0, 2, 2, 2, 3])
    values = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0, -1.0, 7.0, 0.0, 9.0])
    q = torch.tensor([0.5, 0.5, 0.0, float("nan")])
    got = quantile_evidence(index, values, q)
    assert got[0] == 3.0 and got[2] == -1.0  # the median of 1..5; the smallest of three
    assert got[1].isnan() and got[3].isnan()  # no pixel; no quantile
    assert quantile_evidence(index, values, torch.tensor([0.9, 0.0, 1.0, 0.0]))[2] == 7.0
    # several quantiles per instance: one column each, as asked one by one
    columns = torch.tensor([[0.5, 0.0, 1.0], [0.5, 0.5, 0.5], [0.0, 1.0, 0.5], [float("nan"), 0.2, 0.9]])
    got = quantile_evidence(index, values, columns)
    assert got.shape == columns.shape
    for j in range(columns.shape[1]):
        assert torch.equal(got[:, j].nan_to_num(-99), quantile_evidence(index, values, columns[:, j]).nan_to_num(-99))
    assert got[0].tolist() == [3.0, 1.0, 5.0] and got[2].tolist() == [-1.0, 7.0, 0.0] and got[3, 2] == 9.0
    # a pass that kept no pixel (no box in a rank's share) answers on the gradient's device and dtype
    towards = torch.ones(2, 3, dtype=torch.float64)
    index, values = ClaimPixels().evidence(towards)
    assert index.numel() == values.numel() == 0 and values.dtype == towards.dtype
    assert quantile_evidence(index, values, q.double()).isnan().all()


def test_claim_shares_are_the_share_of_a_tight_boxs_ellipse_its_object_covers():
    project, labels = _project()
    loop = TrainingLoop(project, TrainConfig(**CFG))
    ctrl = loop.scorer.controls
    shares = claim_shares(ctrl.tset.weak, ctrl.strong_targets, ctrl.tset.box_instance, ctrl.tset.box_class)
    assert set(shares) == {1}
    assert 0.8 < shares[1] <= 1.0  # a disc fills nearly all of the ellipse inscribed in its tight box
    box_q = loop.scorer.box_q
    boxes = loop.tset.box_instance.tolist()
    assert torch.allclose(box_q[boxes], torch.full((len(boxes),), shares[1] / 2))
    assert box_q[[k for k in range(len(box_q)) if k not in boxes]].isnan().all()


@pytest.mark.parametrize("space", ["centred", "weight", "weight+bias"])
def test_pixel_evidence_sums_to_each_boxs_dot_product(space):
    """Summed over a box's claimed pixels, the per-pixel evidence is the box's
    ``-g_S . g_k``; for a control, against the strong gradient less its own pixels'."""
    project, _ = _project()
    loop = TrainingLoop(project, TrainConfig(**CFG, dii_space=space))
    sc, net = loop.scorer, loop.state.nets[0].double().eval()
    for s in [*loop.tset.samples, *sc.controls.tset.weak]:
        s.image = s.image.astype(np.float64)
    weak, ctrl = sc._dot_products([net])
    g_s, mu = sc.strong_gradient(net)
    g_s = gradient_space(g_s[None], net.n_outputs, space, mu)
    claims = [ClaimPixels(), ClaimPixels()]
    sc.weak_gradients(net, None, claims[0], mu)
    _, own = sc.control_scorer.weak_gradients(net, sc.controls.strong_targets, claims[1], mu)
    per_control = g_s - gradient_space(own, net.n_outputs, space, mu) / sc.strong_pixels
    k = net.n_outputs
    for claim, towards, expected, boxes in (
        (claims[0], g_s[0].view(k, -1), weak, loop.tset.box_instance),
        (claims[1], per_control.view(len(per_control), k, -1), ctrl, sc.controls.tset.box_instance),
    ):
        index, values = claim.evidence(towards)
        summed = torch.zeros(len(expected), dtype=values.dtype).index_add_(0, index, values)
        assert set(index.unique().tolist()) == set(boxes.tolist())
        assert expected[boxes].abs().min() > 0
        torch.testing.assert_close(summed[boxes], expected[boxes].to(summed), rtol=1e-5, atol=1e-9)


def test_pixels_read_as_they_come_give_the_evidence_of_pixels_kept():
    """A :class:`ClaimPixels` given the strong gradient before the pass keeps one number per
    pixel, the same evidence as one that keeps the pixels' inputs and gradients."""
    project, _ = _project()
    loop = TrainingLoop(project, TrainConfig(**CFG))
    sc, net = loop.scorer, loop.state.nets[0]
    g_s, mu = sc.strong_gradient(net)
    towards = gradient_space(g_s[None], net.n_outputs, loop.config.dii_space, mu)[0].view(net.n_outputs, -1)
    kept, read = ClaimPixels(), ClaimPixels(towards=towards)
    for claims in (kept, read):
        sc.weak_gradients(net, None, claims, mu)
    assert not read.inputs and not read.grads and len(read.values) == len(kept.inputs) > 0
    (index_kept, kept_values), (index_read, read_values) = kept.evidence(towards), read.evidence(towards)
    assert torch.equal(index_kept, index_read) and index_kept.numel() > 0
    torch.testing.assert_close(read_values, kept_values)


def test_only_boxes_are_scored_by_a_quantile():
    project, _ = _project()
    scores = {}
    for how in ("mean", "quantile"):
        loop = TrainingLoop(project, TrainConfig(**(CFG | {"dii_box_evidence": how})))
        scores[how] = loop.scorer.scores(loop.state.nets)
    boxes = loop.tset.box_instance
    others = torch.ones(len(scores["mean"][0]), dtype=torch.bool)
    others[boxes] = False
    torch.testing.assert_close(scores["mean"][0][others], scores["quantile"][0][others])
    assert not torch.allclose(scores["mean"][0][boxes], scores["quantile"][0][boxes])
    assert torch.isfinite(scores["quantile"][0]).all() and torch.isfinite(scores["quantile"][1]).all()


def test_several_quantiles_in_one_pass_equal_one_pass_each():
    """A scorer asked for several quantiles of each box (a column each) gives every column
    as a pass with that quantile alone would, and the same sums."""
    project, _ = _project()
    loop = TrainingLoop(project, TrainConfig(**CFG))
    sc, nets = loop.scorer, loop.state.nets
    q, cq = sc.box_q.clone(), sc.control_scorer.box_q.clone()
    factors = torch.tensor([0.5, 1.0, 1.5])
    sc.box_q, sc.control_scorer.box_q = q[:, None] * factors, cq[:, None] * factors
    weak, ctrl, weak_q, ctrl_q = sc._evidence(nets)
    assert weak_q.shape == (sc.n, 3) and ctrl_q.shape == (sc.control_scorer.n, 3)
    for j, f in enumerate(factors.tolist()):
        sc.box_q, sc.control_scorer.box_q = q * f, cq * f
        one = sc._evidence(nets)
        torch.testing.assert_close(one[0], weak)
        torch.testing.assert_close(one[1], ctrl)
        for got, alone in ((weak_q[:, j], one[2]), (ctrl_q[:, j], one[3])):
            torch.testing.assert_close(got, alone, equal_nan=True)
    boxes = loop.tset.box_instance
    assert weak_q[boxes].isfinite().all() and not torch.equal(weak_q[boxes, 0], weak_q[boxes, 2])


@pytest.mark.parametrize("how", ["mean", "quantile"])
def test_boxes_scored_by_a_quantile_are_calibrated_with_their_own_margin(how):
    project, _ = _project()
    loop = TrainingLoop(project, TrainConfig(**(CFG | {"dii_box_evidence": how})))
    sc = loop.scorer
    weak, ctrl = sc.scores(loop.state.nets)
    hyper = sc.hypergradient(loop.state.nets)
    args = weak, sc.groups, ctrl, sc.control_scorer.groups
    margins = dict(own=loop.config.dii_own_quantile)
    boxes = torch.zeros(sc.n, dtype=torch.bool)
    boxes[loop.tset.box_instance] = True
    assert boxes.any() and (~boxes & (sc.groups >= 0)).any()
    box_margin = BOX_MARGIN if how == "quantile" else CONTROL_MARGIN
    expected = torch.where(boxes, calibrated(*args, margin=box_margin, **margins), calibrated(*args, **margins))
    torch.testing.assert_close(hyper, expected)
    assert BOX_MARGIN != CONTROL_MARGIN


def test_both_lowers_a_box_only_where_the_mean_and_the_quantile_both_read_it_worse():
    """``both``: a box's calibrated score is the lower of the mean's (the rule's margin) and
    the quantile's (its own margin); strokes and background regions keep the mean's."""
    project, _ = _project()
    loop = TrainingLoop(project, TrainConfig(**(CFG | {"dii_box_evidence": "both"})))
    sc, nets = loop.scorer, loop.state.nets
    assert sc.box_q is not None and sc.box_margin == BOX_MARGIN
    weak, ctrl, weak_q, ctrl_q = sc.per_pixel(nets)
    own = dict(own=loop.config.dii_own_quantile)
    by_mean = calibrated(weak, sc.groups, ctrl, sc.control_scorer.groups, **own)
    at_q = [torch.where(q.isnan(), v, q) for v, q in ((weak, weak_q), (ctrl, ctrl_q))]
    by_quantile = calibrated(at_q[0], sc.groups, at_q[1], sc.control_scorer.groups, box_margin=BOX_MARGIN, **own)
    hyper = sc.hypergradient(nets)
    boxes = torch.zeros(sc.n, dtype=torch.bool)
    boxes[loop.tset.box_instance] = True
    torch.testing.assert_close(hyper[boxes], torch.minimum(by_mean, by_quantile)[boxes])
    torch.testing.assert_close(hyper[~boxes], by_mean[~boxes])
    # the two readings differ on some box here, so the lower one is a choice
    assert not torch.allclose(by_mean[boxes], by_quantile[boxes])
    # the scores shown per pixel are the mean's, as with "mean"
    torch.testing.assert_close(sc.scores(nets)[0], weak)


def test_boxes_that_claim_no_pixels_keep_their_mean():
    """Without controls, with the extent claim or with filled training boxes, a box has no
    claimed pixels to take a quantile of: the option leaves the scores as they were."""
    project, _ = _project()
    for other in (dict(dii_reference="none"), dict(dii_box_target="extent"), dict(box_target="filled")):
        scores = []
        for how in ("mean", "quantile", "both"):
            loop = TrainingLoop(project, TrainConfig(**(CFG | other | {"dii_box_evidence": how})))
            assert loop.scorer.box_q is None
            scores.append(loop.scorer.hypergradient(loop.state.nets))
        for other_scores in scores[1:]:
            torch.testing.assert_close(scores[0], other_scores)
    assert TrainConfig().with_preset("paper").dii_box_evidence == "mean"


@pytest.mark.parametrize("network", ["2d", "3d"])
def test_boxes_on_the_slices_of_a_volume_are_scored_by_their_quantile(network, sparse_volume):
    vol, _, strong = sparse_volume
    boxes = [Box(1, 12, 12, 29, 29, z=2), Box(2, 20, 20, 48, 48, z=3)]
    weak = ImageAnnotations("w", vol.copy(), axes="zyx", boxes=boxes)
    scores = {}
    for how in ("mean", "quantile"):
        cfg = TrainConfig(**(CFG | dict(network=network, patch_size_3d=16, dii_box_evidence=how)))
        loop = TrainingLoop(Project([strong, weak]), cfg)
        scores[how] = loop.scorer.scores(loop.state.nets)
    box = loop.tset.box_instance
    assert loop.scorer.box_q[box].isfinite().all() and loop.scorer.control_scorer.box_q.isfinite().any()
    assert torch.isfinite(scores["quantile"][0]).all() and torch.isfinite(scores["quantile"][1]).all()
    assert not torch.allclose(scores["mean"][0][box], scores["quantile"][0][box])
