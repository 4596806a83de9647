"""DII measured against controls: the annotations the full masks imply, scored like the
user's, and a weak annotation's score relative to theirs."""

import numpy as np
import pytest
import torch
from test_dii import _autograd_per_instance, _direction_project, flat_classifier_grad

from napari_hybridseg.annotations import ImageAnnotations, LabelClasses, Project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.errors import ConfigError
from napari_hybridseg.losses import pixel_ce
from napari_hybridseg.training import TrainingLoop
from napari_hybridseg.training.dii import CONTROL_MARGIN, CONTROL_QUANTILE, calibrated

TINY = dict(steps=1, batch_size=2, patch_size=32, width=4, depth=2, dii_reference="controls")


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _known_project(classes=None):
    """A strong image with three discs (two of class 1, one of class 2) and a weak one."""
    shape = (64, 64)
    labels = np.zeros(shape, np.uint8)
    labels[_disc(shape, 14, 14, 7)] = 1
    labels[_disc(shape, 40, 20, 9)] = 1
    labels[_disc(shape, 30, 48, 8)] = 2
    image = (labels > 0) * 1.0 + np.random.default_rng(0).normal(0, 0.1, shape)
    strokes = np.zeros(shape, np.int32)
    strokes[30:33, 10:40] = 2
    weak = ImageAnnotations("w", image.astype(np.float32), scribbles=strokes)
    project = Project([ImageAnnotations("s", image.astype(np.float32), strong=labels), weak], classes=classes)
    return project, labels


def _controls(loop):
    ctrl = loop.scorer.controls
    assert ctrl is not None
    return ctrl.tset


def test_controls_are_tight_boxes_cores_and_background_regions_of_the_full_masks():
    project, labels = _known_project()
    loop = TrainingLoop(project, TrainConfig(method="dii", **TINY))
    tset = _controls(loop)
    boxes, strokes = tset.weak  # one sample of boxes and background, one of strokes
    kinds = [r.key.kind for r in tset.instances]
    assert kinds.count("box") == 3 and kinds.count("scribble") == 3 and kinds.count("background") == 1
    # every box is the tight box of one disc, and nothing else is claimed by a box
    objects = [labels == 1, labels == 2]
    owned = [np.argwhere(boxes.boxmap == b) for b in range(3)]
    spans = sorted((tuple(o.min(0)), tuple(o.max(0) + 1)) for o in owned)
    from scipy import ndimage as ndi

    comps, n = ndi.label(labels > 0)
    expected = sorted(((r[0].start, r[1].start), (r[0].stop, r[1].stop)) for r in ndi.find_objects(comps))
    assert spans == expected
    # the background control is exactly the mask's background outside every box
    bg = boxes.instance == kinds.index("background")
    assert (boxes.target[bg] == 0).all() and not (bg & (boxes.boxmap >= 0)).any()
    assert bg.sum() == ((labels == 0) & (boxes.boxmap < 0)).sum() - _ring_pixels(boxes)
    # each stroke lies deep inside one object and carries its class (binary project: 1)
    for k in np.unique(strokes.instance[strokes.instance >= 0]):
        mine = strokes.instance == k
        assert (strokes.target[mine] == 1).all()
        assert any((obj[mine]).all() for obj in objects)
        depth = ndi.distance_transform_edt(labels > 0)
        assert depth[mine].min() >= 0.5 * depth[mine].max() - 1
    # controls are never trained on: the sampler and the loss see the project's samples only
    assert all(s in loop.tset.samples for s in loop.sampler.tset.samples)
    assert not any(s is boxes or s is strokes for s in loop.tset.samples)


def _ring_pixels(boxes_sample) -> int:
    """Background pixels of the one-pixel ring around the boxes (the box's affinity term
    owns them, so the background region does not)."""
    ring = (boxes_sample.instance >= 0) & (boxes_sample.boxmap < 0) & (boxes_sample.target < 0)
    return int(ring.sum())


def test_controls_of_a_project_with_classes_keep_each_objects_class():
    project, _ = _known_project(LabelClasses(("a", "b")))
    loop = TrainingLoop(project, TrainConfig(method="dii", **TINY))
    tset = _controls(loop)
    assert sorted(tset.box_class.tolist()) == [1, 1, 2]
    strokes = tset.weak[1]
    classes = {
        int(strokes.target[strokes.instance == k][0]) for k in np.unique(strokes.instance[strokes.instance >= 0])
    }
    assert classes == {1, 2}


def test_a_sparse_volume_gets_controls_on_its_annotated_slices_only():
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 0.1, (6, 48, 48)).astype(np.float32)
    mask = np.zeros((6, 48, 48), np.uint8)
    for z in range(6):
        mask[z][_disc((48, 48), 20, 20, 8)] = 1
        mask[z][_disc((48, 48), 36, 34, 6)] = 1
    vol[mask > 0] += 1
    item = ImageAnnotations("v", vol, strong=mask, axes="zyx", strong_slices=[1, 4])
    for network in ("2d", "3d"):
        cfg = TrainConfig(method="dii", network=network, patch_size_3d=16, **TINY)
        loop = TrainingLoop(Project([item]), cfg)
        tset = _controls(loop)
        boxes = [r for r in tset.instances if r.key.kind == "box"]
        assert len(boxes) == 4, network  # two discs on each of the two annotated slices
        for s in tset.weak:
            labelled = s.instance >= 0
            if s.z is None:  # one 3D sample: only the annotated slices carry controls
                assert sorted(np.unique(np.nonzero(labelled)[0]).tolist()) == [1, 4]
            else:
                assert s.z in (1, 4)


def test_control_scores_match_autograd_without_their_own_pixels():
    """A control's score is its claim's gradient against the strong gradient less the
    part that its own pixels contribute (which it would agree with by construction)."""
    project, labels = _known_project()
    cfg = TrainConfig(method="dii", dii_space="weight", dii_box_target="ellipse", **TINY)
    loop = TrainingLoop(project, cfg)
    net = loop.state.nets[0].double().eval()
    _, got = loop.scorer._dot_products([net])
    tset = _controls(loop)
    strong = loop.tset.strong[0]
    x = torch.from_numpy(strong.image[None]).double()
    target = torch.from_numpy(strong.target[None]).long()
    total = int((target >= 0).sum())
    n = len(tset.instances)
    expected = torch.zeros(n, dtype=torch.float64)
    for s in tset.weak:
        t = torch.from_numpy(s.target[None]).long()
        inst = torch.from_numpy(s.instance[None]).long()
        core = torch.from_numpy(s.boxcore[None]) if s.boxcore is not None else None
        boxmap = torch.from_numpy(s.boxmap[None]) if s.boxmap is not None else None

        def claim(z, k, t=t, inst=inst, core=core, boxmap=boxmap):
            loss = (pixel_ce(z, t) * (inst == k)).sum()
            if boxmap is not None:  # a box claims the ellipse inscribed in it
                mine = core & (boxmap >= 0) & (inst == k)
                loss = loss + pixel_ce(z, torch.where(mine, 1, -1)).sum()
            return loss

        present = [k for k in range(n) if (inst == k).any()]
        g_k = _autograd_per_instance(net, x, claim, n)
        for k in present:
            net.zero_grad()
            others = torch.where(inst == k, -1, target)
            (pixel_ce(net(x), others).sum() / total).backward()
            g_s = flat_classifier_grad(net.classifier).view(net.n_outputs, -1)[:, :-1].flatten()
            w_k = g_k[k].view(net.n_outputs, -1)[:, :-1].flatten()
            expected[k] = -(w_k @ g_s)
    assert expected.abs().min() > 0
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-12)


def test_calibrated_scores_are_measured_against_their_own_groups_controls():
    ctrl = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 100.0, 200.0])
    ctrl_groups = torch.tensor([3] * 11 + [2, 2])  # group 2 has too few controls
    weak = torch.tensor([9.5, 30.0, -5.0, 7.0, 1.0])
    groups = torch.tensor([3, 3, 3, 2, -1])
    out = calibrated(weak, groups, ctrl, ctrl_groups)
    high, low = 10 * CONTROL_QUANTILE, 10 * (1 - CONTROL_QUANTILE)
    expect = (weak[:3] - high) / (high - low) - CONTROL_MARGIN
    torch.testing.assert_close(out[:3], expect)
    # lowered only what scores clearly worse than nearly every control: not 9.5, just
    # above the 90th percentile of 0..10
    assert out[1] > 0 > out[0] > out[2]
    assert out[3] == 7.0 and out[4] == 1.0  # too few controls, or none: the raw score


def test_dii_with_controls_lowers_a_wrong_stroke_and_keeps_the_right_ones():
    cfg = TrainConfig(
        method="dii",
        steps=1000,
        batch_size=4,
        patch_size=32,
        width=8,
        depth=2,
        dii_warmup=1000,
        dii_reference="controls",
    )
    loop = TrainingLoop(_direction_project(), cfg)
    for _ in range(40):
        loop.train_step()
        loop.state.step += 1
    with torch.no_grad():
        loop.weights.gamma.fill_(0.5)
    for _ in range(3):
        loop.dii_update()
    by_label: dict[int, list[float]] = {}
    for w in loop.weights.table():
        by_label.setdefault(int(w.instance.split("@")[0]), []).append(w.weight)
    assert np.mean(by_label[9]) < 0.5
    assert all(np.mean(by_label[2 + i]) > 0.5 for i in range(3))


def test_dii_reference_is_checked_and_the_paper_preset_has_no_controls(hand_project):
    with pytest.raises(ConfigError, match="dii_reference"):
        TrainConfig(dii_reference="mask")
    cfg = TrainConfig(**TINY).with_preset("paper")
    assert cfg.dii_reference == "none"
    assert TrainingLoop(hand_project, cfg).scorer.controls is None


def test_zero_logit_gradients_are_those_of_a_classifier_that_outputs_zero(hand_project):
    """``dii_logits="zero"``: the closed-form gradients (checked against autograd for the
    trained logits above) of the same features with a classifier zeroed out."""
    cfg = TrainConfig(method="dii", dii_logits="zero", **{**TINY, "dii_reference": "none"})
    loop = TrainingLoop(hand_project, cfg)
    net = loop.state.nets[0].double().eval()
    got = loop.scorer.weak_gradients(net)
    zeroed = TrainingLoop(hand_project, TrainConfig(method="dii", **{**TINY, "dii_reference": "none"}))
    twin = zeroed.state.nets[0].double().eval()
    twin.load_state_dict(net.state_dict())
    with torch.no_grad():
        twin.classifier.weight.zero_()
        twin.classifier.bias.zero_()
    expected = zeroed.scorer.weak_gradients(twin)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("logits", ["zero", "trained"])
def test_zero_logit_evidence_does_not_depend_on_how_far_the_classifier_has_fit(logits):
    """The classifier's fit (here: its weights scaled, as training sharpens them) moves the
    trained-logit evidence but not the zero-logit one, which reads the features only."""
    project, _ = _known_project()
    loop = TrainingLoop(project, TrainConfig(method="dii", dii_logits=logits, **TINY))
    net = loop.state.nets[0].double().eval()
    before = loop.scorer.hypergradient([net])
    with torch.no_grad():
        net.classifier.weight.mul_(25.0)
        net.classifier.bias.add_(3.0)
    after = loop.scorer.hypergradient([net])
    if logits == "zero":
        torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-9)
    else:
        assert not torch.allclose(after, before, rtol=1e-3, atol=1e-6)
