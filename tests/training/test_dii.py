"""DII: closed-form per-instance classifier gradients, the direction of the update, the
schedule and the weights' bookkeeping."""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_hybridseg.annotations import ImageAnnotations, LabelClasses, Project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.data.targets import InstanceRecord
from napari_hybridseg.errors import ConfigError
from napari_hybridseg.losses import affinity_edges, box_losses, pixel_ce
from napari_hybridseg.networks import create_model
from napari_hybridseg.protocol import InstanceKey
from napari_hybridseg.synthetic import synth_image
from napari_hybridseg.task import Task
from napari_hybridseg.training import TrainingLoop
from napari_hybridseg.training.calibration import CONTROL_MARGIN, calibrated
from napari_hybridseg.training.classifier import classifier_grads, gradient_space
from napari_hybridseg.training.schedule import DII_TRAVEL, dii_learning_rate
from napari_hybridseg.training.weights import InstanceWeights

# the closed forms below are checked at the classifier's own logits (zero logits: see the
# test that compares them with a zeroed classifier)
TINY = dict(steps=1, batch_size=2, patch_size=32, width=4, depth=2, dii_logits="trained")


def _net(task=None):
    return create_model(task or Task(), depth=2, width=4, seed=0).double().eval()


def flat_classifier_grad(classifier) -> torch.Tensor:
    """Autograd's classifier gradient in the layout of ``classifier_grads``."""
    return torch.cat([classifier.weight.grad.flatten(1), classifier.bias.grad[:, None]], dim=1).flatten()


def _autograd_per_instance(net, x, loss_of_k, n):
    rows = []
    for k in range(n):
        net.zero_grad()
        loss_of_k(net(x), k).backward()
        rows.append(flat_classifier_grad(net.classifier).clone())
    return torch.stack(rows)


@pytest.mark.parametrize("task", [Task(), Task(1, 3, 2), Task(1, 1, 3)], ids=str)
def test_closed_form_equals_autograd_for_cross_entropy(task):
    torch.manual_seed(0)
    net = _net(task)
    shape = (2, *([8] * task.spatial_dims))
    x = torch.randn(shape[0], 1, *shape[1:], dtype=torch.float64)
    target = torch.randint(-1, task.n_outputs, shape)
    inst = torch.randint(-1, 5, shape)
    inst[target < 0] = -1

    def loss_k(z, k):
        return (pixel_ce(z, target) * (inst == k)).sum()

    expected = _autograd_per_instance(net, x, loss_k, 5)
    with torch.no_grad():
        feats = net.features(x)
    z = net.classifier(feats).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(pixel_ce(z, target).sum(), z)
    got = classifier_grads(feats, g, inst, 5)
    assert (got - expected).norm() / expected.norm() < 1e-6


def test_closed_form_equals_autograd_for_box_projection_and_affinity():
    torch.manual_seed(1)
    net = _net()
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    boxmap = torch.full((1, 32, 32), -1)
    boxmap[0, 3:10, 4:12] = 0
    boxmap[0, 14:25, 15:22] = 1
    boxmap[0, 26:31, 2:9] = 2
    region = torch.full_like(boxmap, -1)  # box plus its one-pixel ring, as in targets.py
    for k in range(3):
        ring = torch.nn.functional.max_pool2d((boxmap == k).double()[None], 3, 1, 1)[0] > 0
        region[ring] = k
    edges = affinity_edges(x, 0.3)

    def loss_k(z, k):
        return box_losses(z, boxmap, 3, edges, 1.0)[k]

    expected = _autograd_per_instance(net, x, loss_k, 3)
    with torch.no_grad():
        feats = net.features(x)
    z = net.classifier(feats).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(box_losses(z, boxmap, 3, edges, 1.0).sum(), z)
    got = classifier_grads(feats, g, region, 3)
    assert expected.norm() > 0
    assert (got - expected).norm() / expected.norm() < 1e-6


def _extent_loss_reference(z: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """-log p_fg at the most object-like pixel of every row and column of one box."""
    log_fg = torch.log_softmax(z, 0)[1]
    loss = z.new_zeros(())
    for axis in (0, 1):
        for line in torch.nonzero(box.any(1 - axis))[:, 0].tolist():
            sel = torch.zeros_like(box)
            if axis == 0:
                sel[line] = box[line]
            else:
                sel[:, line] = box[:, line]
            loss = loss - log_fg[sel][(z[1] - z[0])[sel].argmax()]
    return loss


def _closed_form_on_first_weak_sample(project, cfg):
    """The loop, its first network in float64, the closed-form weak gradients, and the
    first weak sample with its tensors ``(x, target, instance, boxmap)``."""
    loop = TrainingLoop(project, cfg)
    net = loop.state.nets[0].double()
    for s in loop.tset.samples:
        s.image = s.image.astype(np.float64)
    got = loop.scorer.weak_gradients(net)
    s = loop.tset.weak[0]
    tensors = [torch.from_numpy(a[None]) if a is not None else None for a in (s.image, s.target, s.instance, s.boxmap)]
    x, t, inst, br = tensors[0], tensors[1].long(), tensors[2].long(), tensors[3]
    return loop, net, got, s, (x, t, inst, br.long() if br is not None else None)


@pytest.mark.parametrize(
    "box_target, dii_box_target",
    [
        ("filled", "same"),
        ("projection", "same"),
        ("projection", "filled"),
        ("projection", "ellipse"),
        ("projection", "extent"),
    ],
)
def test_weak_gradients_match_autograd(hand_project, box_target, dii_box_target):
    cfg = TrainConfig(method="dii", box_target=box_target, dii_box_target=dii_box_target, **TINY)
    loop, net, got, s, (x, t, inst, br) = _closed_form_on_first_weak_sample(hand_project, cfg)
    edges = affinity_edges(x, cfg.affinity_threshold)
    box_instance = torch.from_numpy(loop.tset.box_instance)

    def loss_k(z, k):
        loss = (pixel_ce(z, t) * (inst == k)).sum()
        if br is not None and dii_box_target == "filled":  # scored as if the box were its mask
            mine = (br >= 0) & (inst == k)
            loss = loss + (pixel_ce(z, torch.where(mine, 1, -1))).sum()
        elif br is not None and dii_box_target == "ellipse":  # as if its inscribed ellipse were
            mine = torch.from_numpy(s.boxcore[None]) & (inst == k)
            loss = loss + (pixel_ce(z, torch.where(mine, 1, -1))).sum()
        elif br is not None and dii_box_target == "extent":
            for b in torch.nonzero(box_instance == k)[:, 0].tolist():
                loss = loss + _extent_loss_reference(z[0], br[0] == b)
        elif br is not None:
            nb = int(br.max()) + 1
            per_box = box_losses(z, br, nb, edges, cfg.pairwise_weight)
            loss = loss + per_box[box_instance[:nb] == k].sum()
        return loss

    net.eval()
    expected = _autograd_per_instance(net, x, loss_k, len(loop.weights))
    assert (got - expected).norm() / expected.norm() < 1e-6


class _PointwiseNet(torch.nn.Module):
    """Features that depend on each pixel alone, so that tiles cannot change them."""

    n_outputs, n_features = 2, 4

    def __init__(self):
        super().__init__()
        self.classifier = torch.nn.Conv2d(4, 2, 1).double()

    def features(self, x):
        return torch.cat([x, x**2, torch.sin(3 * x), torch.cos(5 * x)], 1)


def test_each_pixel_counts_in_one_tile(hand_project, monkeypatch):
    """Small tiles give the gradients of one whole-image tile (pixel-local terms)."""
    from napari_hybridseg.training import dii

    loop = TrainingLoop(hand_project, TrainConfig(method="dii", dii_box_target="ellipse", **TINY))
    net = _PointwiseNet()
    for s in loop.tset.samples:
        s.image = s.image.astype(np.float64)
    whole = loop.scorer.weak_gradients(net)
    monkeypatch.setitem(dii.DII_TILE, 2, 24)  # 64 pixels: three tiles per axis, uneven cores
    tiled = loop.scorer.weak_gradients(net)
    assert whole.abs().sum() > 0
    torch.testing.assert_close(tiled, whole, rtol=1e-9, atol=1e-9)


def _direction_project():
    rng = np.random.default_rng(4)
    img_s, lab_s = synth_image(rng, (64, 64), n_objects=6)
    img_w, lab_w = synth_image(rng, (64, 64), n_objects=6)
    scr = np.zeros((64, 64), np.int32)
    # a correct stroke inside each object ...
    for i, obj in enumerate([o for o in np.unique(lab_w) if o > 0][:3]):
        ys, xs = np.nonzero(lab_w == obj)
        keep = slice(0, len(ys) // 2)
        scr[ys[keep], xs[keep]] = 2 + i
    # ... correct background strokes, and a "foreground" stroke on empty background that
    # conflicts with the strong data
    # conflicts with the strong data, drawn as one line (each connected stroke is one
    # annotation; DII takes most of a user's strokes of a class to be right)
    bg = np.argwhere(lab_w == 0)
    pick = bg[np.linspace(0, len(bg) - 1, 200).astype(int)]
    scr[pick[1::5, 0], pick[1::5, 1]] = 1
    rows = [y for y in range(64) if (lab_w[y] == 0).sum() >= 40]
    y = rows[len(rows) // 2]
    scr[y, np.flatnonzero(lab_w[y] == 0)[:30]] = 9
    return Project([ImageAnnotations("s", img_s, strong=lab_s), ImageAnnotations("w", img_w, scribbles=scr)])


@pytest.mark.parametrize(
    "reference, logits", [("none", "trained"), ("controls", "zero")], ids=["paper", "against-controls"]
)
def test_dii_lowers_conflicting_and_raises_agreeing_instances(reference, logits):
    cfg = TrainConfig(
        method="dii",
        steps=1000,
        batch_size=4,
        patch_size=32,
        width=8,
        depth=2,
        dii_warmup=1000,
        dii_reference=reference,
        dii_logits=logits,
    )
    loop = TrainingLoop(_direction_project(), cfg)
    for _ in range(40):  # warm up on the data so that g_S is meaningful
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


def _records(n):
    return [InstanceRecord(InstanceKey("a", str(i), "box"), f"sig{i}") for i in range(n)]


def test_instance_weights_clamp_and_pin():
    w = InstanceWeights(_records(3))
    w.pin(("a", "2", "box"), 0.0)
    for _ in range(5):
        w.step(torch.tensor([1.0, -1.0, -1.0]), 0.5)
    g = w.values()
    assert 0 <= g[0] < 0.5 and g[1] == 1.0 and g[2] == 0.0
    assert [x.pinned for x in w.table()] == [False, False, True]


def test_weights_carry_over_by_key_and_signature_and_pins_wait_for_their_key():
    w = InstanceWeights(_records(3), pins={InstanceKey("a", "9", "box"): 0.0})
    with torch.no_grad():
        w.gamma.copy_(torch.tensor([0.2, 0.3, 0.4]))
    records = _records(3)
    records[1] = InstanceRecord(records[1].key, "edited")
    records.append(InstanceRecord(InstanceKey("a", "9", "box"), "new"))
    new = w.carried_to(records[1:])
    assert [round(x.weight, 3) for x in new.table()] == [1.0, 0.4, 0.0]
    assert new.table()[-1].pinned


def test_weights_round_trip_through_a_checkpoint():
    w = InstanceWeights(_records(2), pins={InstanceKey("a", "1", "box"): 1.0})
    w.step(torch.tensor([1.0, 1.0]), 0.3)
    back = InstanceWeights(_records(2))
    back.load_state_dict(w.state_dict())
    assert torch.equal(back.values(), w.values()) and back.pins == w.pins and back.updates == 1


def test_image_granularity_has_one_weight_per_weak_image(hand_project):
    loop = TrainingLoop(hand_project, TrainConfig(granularity="image", **TINY))
    assert [r.key for r in loop.weights.records] == [InstanceKey("w", "image", "image")]
    loop = TrainingLoop(hand_project, TrainConfig(granularity="object", background_tile=0, **TINY))
    assert sorted((r.key.instance, r.key.kind) for r in loop.weights.records) == [
        ("1", "box"),
        ("2", "box"),
        ("background", "background"),
    ]


def test_gradient_spaces_match_autograd_of_their_parametrisation():
    torch.manual_seed(0)
    feats = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    target = torch.randint(0, 2, (1, 6, 6))
    w, b = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    mu = feats.mean(dim=(0, 2, 3))
    # raw layer z = W f + b
    w_raw = w.clone().requires_grad_(True)
    z = torch.einsum("cf,bfhw->bchw", w_raw, feats) + b[None, :, None, None]
    z.retain_grad()
    pixel_ce(z, target).sum().backward()
    closed = classifier_grads(feats, z.grad, torch.zeros_like(target), 1)
    assert torch.allclose(gradient_space(closed, 2, "weight"), w_raw.grad.flatten()[None])
    # the same layer written as z = W (f - mu) + b', with b' = b + W mu
    w_c = w.clone().requires_grad_(True)
    z2 = torch.einsum("cf,bfhw->bchw", w_c, feats - mu[None, :, None, None]) + (b + w @ mu)[None, :, None, None]
    assert torch.allclose(z2, z)
    pixel_ce(z2, target).sum().backward()
    assert torch.allclose(gradient_space(closed, 2, "centred", mu), w_c.grad.flatten()[None])
    assert gradient_space(closed, 2, "weight+bias").shape == (1, 8)


def test_default_dii_lr_lets_weights_reach_zero():
    from napari_hybridseg.training.schedule import poly_factor

    assert dii_learning_rate(TrainConfig(steps=20_000), 1000, 50) == pytest.approx(0.1)  # the paper's rate
    short = TrainConfig(steps=300)
    lr = dii_learning_rate(short, 50, 41)
    assert lr > 0.1
    assert sum(lr * poly_factor(t, 300) for t in range(50, 300, 41)) == pytest.approx(DII_TRAVEL)
    assert dii_learning_rate(TrainConfig(steps=300, dii_lr=0.05), 50, 41) == 0.05
    with pytest.raises(ConfigError, match="dii_lr"):
        TrainConfig(dii_lr=0.0)


def test_weight_updates_keep_no_autograd_graph(hand_project):
    """The passes over the whole data set must not hold the graph of every tile."""
    loop = TrainingLoop(hand_project, TrainConfig(method="dii+dcr", **TINY))
    hyper = loop.scorer.hypergradient(loop.state.nets)
    assert hyper.shape == (len(loop.weights),) and not hyper.requires_grad and hyper.grad_fn is None


def test_weights_csv_quotes_commas_and_neutralises_formulas():
    import csv
    import io

    records = [
        InstanceRecord(InstanceKey("a,b", "1", "box")),
        InstanceRecord(InstanceKey("=HYPERLINK(1)", "2", "box")),
        InstanceRecord(InstanceKey("plain", "2@3:4", "scribble")),
    ]
    rows = list(csv.reader(io.StringIO(InstanceWeights(records).csv())))
    assert rows[0] == ["image", "instance", "kind", "weight"] and all(len(r) == 4 for r in rows)
    assert [r[0] for r in rows[1:]] == ["a,b", "'=HYPERLINK(1)", "plain"]


@pytest.mark.parametrize("dii_box_target", ["same", "filled"])
def test_weak_gradients_of_several_classes_match_autograd(dii_box_target):
    """Three classes: boxes of class 2 and 1 judged on their own class channel, strokes of
    each class; the closed form against autograd over the network's 3 outputs."""
    from napari_hybridseg.annotations import Box, LabelClasses

    rng = np.random.default_rng(3)
    img_s, lab_s = synth_image(rng, (64, 64), n_objects=4)
    img_w, _ = synth_image(rng, (64, 64), n_objects=4)
    strokes = np.zeros((64, 64), np.uint8)
    strokes[60, 2:20], strokes[58, 30:50], strokes[2, 30:60] = 1, 3, 2
    weak = ImageAnnotations("w", img_w, boxes=[Box(1, 4, 4, 20, 20, cls=2), Box(2, 30, 30, 50, 52)], scribbles=strokes)
    project = Project(
        [ImageAnnotations("s", img_s, strong=np.minimum(lab_s, 2)), weak], classes=LabelClasses(("a", "b"))
    )
    cfg = TrainConfig(method="dii", box_target="projection", dii_box_target=dii_box_target, **TINY)
    loop, net, got, _, (x, t, inst, br) = _closed_form_on_first_weak_sample(project, cfg)
    assert net.n_outputs == 3
    edges = affinity_edges(x, cfg.affinity_threshold)
    box_instance = torch.from_numpy(loop.tset.box_instance)
    box_class = torch.from_numpy(loop.tset.box_class)
    assert sorted(box_class.tolist()) == [1, 2]

    def loss_k(z, k):
        loss = (pixel_ce(z, t) * (inst == k)).sum()
        if dii_box_target == "filled":  # every pixel of the box is its class
            claim = torch.where((br >= 0) & (inst == k), box_class[br.clamp(min=0)], -1)
            return loss + pixel_ce(z, claim).sum()
        nb = int(br.max()) + 1
        per_box = box_losses(z, br, nb, edges, cfg.pairwise_weight, box_class[:nb])
        return loss + per_box[box_instance[:nb] == k].sum()

    net.eval()
    expected = _autograd_per_instance(net, x, loss_k, len(loop.weights))
    assert expected.norm() > 0 and (got - expected).norm() / expected.norm() < 1e-6


# -- DII measured against controls: the annotations the full masks imply, scored like
# the user's, and a weak annotation's score relative to theirs --------------------------

CTRL = dict(TINY, dii_reference="controls")


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
    loop = TrainingLoop(project, TrainConfig(method="dii", background_tile=0, **CTRL))  # one background region
    tset = _controls(loop)
    boxes, strokes = tset.weak  # one sample of boxes and background, one of strokes
    kinds = [r.key.kind for r in tset.instances]
    assert kinds.count("box") == 3 and kinds.count("scribble") == 3 and kinds.count("background") == 1
    # every box is the tight box of one disc, and nothing else is claimed by a box
    owned = [np.argwhere(boxes.boxmap == b) for b in range(3)]
    spans = sorted((tuple(o.min(0)), tuple(o.max(0) + 1)) for o in owned)
    comps, n = ndi.label(labels > 0)
    expected = sorted(((r[0].start, r[1].start), (r[0].stop, r[1].stop)) for r in ndi.find_objects(comps))
    assert spans == expected
    # the background control is exactly the mask's background outside every box
    bg = boxes.instance == kinds.index("background")
    assert (boxes.target[bg] == 0).all() and not (bg & (boxes.boxmap >= 0)).any()
    assert bg.sum() == ((labels == 0) & (boxes.boxmap < 0)).sum() - _ring_pixels(boxes)
    # each stroke paints one whole object and carries its class (binary project: 1)
    painted = []
    for k in np.unique(strokes.instance[strokes.instance >= 0]):
        mine = strokes.instance == k
        assert (strokes.target[mine] == 1).all()
        painted.append(next(i for i in range(1, n + 1) if np.array_equal(mine, comps == i)))
    assert sorted(painted) == list(range(1, n + 1))
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
    loop = TrainingLoop(project, TrainConfig(method="dii", **CTRL))
    tset = _controls(loop)
    assert sorted(tset.box_class.tolist()) == [1, 1, 2]
    strokes = tset.weak[1]
    classes = {
        int(strokes.target[strokes.instance == k][0]) for k in np.unique(strokes.instance[strokes.instance >= 0])
    }
    assert classes == {1, 2}


def test_a_sparse_volume_gets_controls_on_its_annotated_slices_only(sparse_volume):
    item = sparse_volume[2]
    for network in ("2d", "3d"):
        cfg = TrainConfig(method="dii", network=network, patch_size_3d=16, **CTRL)
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
        _, scores = loop.scorer.scores(loop.state.nets)  # 3D controls are scored like 2D ones
        assert scores.shape == (len(tset.instances),) and torch.isfinite(scores).all()


def test_control_scores_match_autograd_without_their_own_pixels():
    """A control's score is its claim's gradient against the strong gradient less the
    part that its own pixels contribute (which it would agree with by construction)."""
    project, labels = _known_project()
    cfg = TrainConfig(method="dii", dii_space="weight", dii_box_target="ellipse", **CTRL)
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
    # 0..10: median 5, interquartile range 5, so a robust standard deviation of 5 / 1.349
    sd = 5 / 1.349
    high, spread = 5 + 1.2816 * sd, 2 * 1.2816 * sd
    torch.testing.assert_close(out[:3], (weak[:3] - high) / spread - CONTROL_MARGIN, rtol=1e-4, atol=1e-4)
    # lowered only what scores clearly worse than nearly every control: not 9.5, just
    # above the 90th percentile of 0..10
    assert out[1] > 0 > out[0] > out[2]
    assert out[3] == 7.0 and out[4] == 1.0  # too few controls, or none: the raw score
    # the background's controls (large regions that barely vary) are measured in units of
    # their median's distance from 0, not of their tiny spread; an object's are not
    tight = torch.tensor([-10.0, -10.01, -9.99, -10.02, -9.98])
    for group, lowered in ((0, [False, True]), (2, [True, True])):
        ids = torch.full((5,), group)
        out = calibrated(torch.tensor([-9.0, -3.0]), torch.tensor([group, group]), tight, ids)
        assert (out > 0).tolist() == lowered


def test_one_odd_control_among_few_does_not_silence_its_group():
    """Nine box controls, one of them an odd object that scores far worse than the rest:
    a box scoring clearly worse than the other eight is still lowered, a typical one not."""
    ctrl = torch.tensor([-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 10.0])
    out = calibrated(torch.tensor([0.5, 3.0]), torch.tensor([3, 3]), ctrl, torch.full((9,), 3))
    assert out[0] < 0 < out[1]


def test_dii_reference_is_checked_and_the_paper_preset_has_no_controls(hand_project):
    with pytest.raises(ConfigError, match="dii_reference"):
        TrainConfig(dii_reference="mask")
    cfg = TrainConfig(**CTRL).with_preset("paper")
    assert cfg.dii_reference == "none"
    assert TrainingLoop(hand_project, cfg).scorer.controls is None


def test_zero_logit_gradients_are_those_of_a_classifier_that_outputs_zero(hand_project):
    """``dii_logits="zero"``: the closed-form gradients (checked against autograd for the
    trained logits above) of the same features with a classifier zeroed out."""
    cfg = TrainConfig(method="dii", **{**CTRL, "dii_reference": "none", "dii_logits": "zero"})
    loop = TrainingLoop(hand_project, cfg)
    net = loop.state.nets[0].double().eval()
    got = loop.scorer.weak_gradients(net)
    zeroed = TrainingLoop(hand_project, TrainConfig(method="dii", **{**CTRL, "dii_reference": "none"}))
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
    loop = TrainingLoop(project, TrainConfig(method="dii", **{**CTRL, "dii_logits": logits}))
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


def test_calibrated_takes_the_rules_quantile_and_margin():
    ctrl = torch.arange(11.0)  # median 5, robust standard deviation 5 / 1.349
    groups = torch.tensor([3, 3])
    weak = torch.tensor([6.0, 9.0])
    sd = 5 / 1.349
    out = calibrated(weak, groups, ctrl, torch.full((11,), 3), quantile=0.75, margin=0.0)
    high, spread = 5 + 0.6745 * sd, 2 * 0.6745 * sd
    torch.testing.assert_close(out, (weak - high) / spread, rtol=1e-4, atol=1e-4)
    # 9.0 is lowered under the looser rule, not under the default one
    assert out[1] > 0 > calibrated(weak, groups, ctrl, torch.full((11,), 3), own=None)[1]


def test_a_box_margin_moves_boxes_groups_alone():
    ctrl = torch.arange(11.0).repeat(2)
    ctrl_groups = torch.tensor([2] * 11 + [3] * 11)  # strokes of class 1, then its boxes
    weak, groups = torch.tensor([6.0, 9.0, 6.0, 9.0]), torch.tensor([2, 2, 3, 3])
    base = calibrated(weak, groups, ctrl, ctrl_groups, own=None)
    wider = calibrated(weak, groups, ctrl, ctrl_groups, own=None, box_margin=1.5)
    torch.testing.assert_close(wider[:2], base[:2])  # strokes keep the margin
    torch.testing.assert_close(wider[2:], base[2:] - (1.5 - 0.5))  # boxes are read a unit more leniently


def test_own_quantile_keeps_most_of_a_group_when_every_annotation_scores_worse_than_the_controls():
    # controls the networks fit far better than anything unseen: every weak box scores worse
    ctrl, ctrl_groups = torch.arange(11.0), torch.full((11,), 3)
    weak = torch.arange(20.0, 50.0, 3.0)
    groups = torch.full((10,), 3)
    assert (calibrated(weak, groups, ctrl, ctrl_groups, own=None) > 0).all()
    out = calibrated(weak, groups, ctrl, ctrl_groups)  # the default: own=0.5
    assert (out[:5] < 0).all() and out[-1] > 0  # at most the worse half is lowered
    # where the controls already set a threshold above the group's median, nothing changes
    low = torch.tensor([1.0, 2.0, 3.0, 4.0, 30.0])
    torch.testing.assert_close(
        calibrated(low, groups[:5], ctrl, ctrl_groups), calibrated(low, groups[:5], ctrl, ctrl_groups, own=None)
    )
    # too few annotations to have a majority: judged by the controls alone
    two = torch.tensor([25.0, 26.0])
    assert (calibrated(two, groups[:2], ctrl, ctrl_groups) > 0).all()


def test_the_scorer_calibrates_with_the_configs_own_quantile(monkeypatch):
    from napari_hybridseg.training import dii as dii_module

    seen = []
    monkeypatch.setattr(dii_module, "calibrated", lambda *a, own=None, **k: seen.append(own) or a[0])
    for own in (0.5, None):
        seen.clear()
        cfg = TrainConfig(method="dii", steps=2, batch_size=2, patch_size=32, width=4, depth=2, dii_own_quantile=own)
        loop = TrainingLoop(_direction_project(), cfg)
        loop.scorer.hypergradient(loop.state.nets)
        assert seen and all(o == own for o in seen)  # once per reading of the boxes (mean, quantile)


def test_a_box_given_another_class_starts_again_at_weight_one():
    """A box that DII distrusted while it named the wrong class is judged afresh once the
    user corrects its class, as a moved box is."""
    from napari_hybridseg.annotations import Box
    from napari_hybridseg.data.targets import build_training_set

    rng = np.random.default_rng(0)
    strong = np.zeros((32, 32), np.int32)
    strong[4:10, 4:10], strong[20:28, 20:28] = 1, 2
    image, weak = rng.random((32, 32)).astype(np.float32), rng.random((32, 32)).astype(np.float32)

    def instances(cls):
        items = [
            ImageAnnotations("s", image, strong=strong),
            ImageAnnotations("w", weak, boxes=[Box(1, 4, 4, 12, 12, cls=cls)]),
        ]
        project = Project(items, classes=LabelClasses(("liver", "tumour")))
        return build_training_set(project, TrainConfig(width=4, depth=2, patch_size=32, batch_size=2)).instances

    w = InstanceWeights(instances(2))
    row = next(i for i, r in enumerate(w.records) if r.key.kind == "box")
    with torch.no_grad():
        w.gamma[row] = 0.05
    assert [x.weight for x in w.carried_to(instances(2)).table() if x.key.kind == "box"] == [pytest.approx(0.05)]
    assert [x.weight for x in w.carried_to(instances(1)).table() if x.key.kind == "box"] == [1.0]


def test_a_checkpoint_from_before_box_signatures_held_the_class_resumes_whole():
    """Resuming a checkpoint whose box signatures lack the class keeps every weight, the
    optimiser's state and the count of updates (the schedule goes on where it was)."""
    records = [InstanceRecord(InstanceKey("a", str(i), "box"), f"None,{i},0,{i + 4},4,1") for i in (1, 2)]
    w = InstanceWeights(records)
    for _ in range(3):
        w.step(torch.tensor([1.0, -1.0]), 0.3)
    state = w.state_dict()
    state["instances"] = json.dumps([[*r.key, r.signature.rsplit(",", 1)[0]] for r in records])
    back = InstanceWeights(records)
    back.load_state_dict(state)
    assert torch.equal(back.values(), w.values()) and back.updates == 3
