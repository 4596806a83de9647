"""DII: closed-form per-instance classifier gradients and the direction of the update."""

import numpy as np
import pytest
import torch

from napari_hybridseg.annotations import ImageAnnotations, Project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.dii import InstanceWeights, classifier_grads, flat_classifier_grad
from napari_hybridseg.errors import ConfigError
from napari_hybridseg.losses import affinity_edges, box_losses, extent_claim_grad, pixel_ce
from napari_hybridseg.networks import create_model
from napari_hybridseg.synthetic import synth_image
from napari_hybridseg.targets import inscribed_ellipse
from napari_hybridseg.trainer import Trainer


def _net64():
    net = create_model(1, depth=2, width=4, seed=0).double().eval()
    return net


def _autograd_per_instance(net, x, loss_of_k, n):
    rows = []
    for k in range(n):
        net.zero_grad()
        loss_of_k(net(x), k).backward()
        rows.append(flat_classifier_grad(net.classifier).clone())
    return torch.stack(rows)


def test_closed_form_equals_autograd_for_cross_entropy():
    torch.manual_seed(0)
    net = _net64()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    target = torch.randint(-1, 2, (2, 16, 16))
    inst = torch.randint(-1, 5, (2, 16, 16))
    inst[target < 0] = -1

    def loss_k(z, k):
        return (pixel_ce(z, target) * (inst == k)).sum()

    expected = _autograd_per_instance(net, x, loss_k, 5)
    with torch.no_grad():
        feats = net.features(x)
    z = net.classifier(feats).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(pixel_ce(z, target).sum(), z)
    got = classifier_grads(feats, g, inst, 5)
    rel = (got - expected).norm() / expected.norm()
    assert rel < 1e-6


def test_closed_form_equals_autograd_for_box_projection_and_affinity():
    torch.manual_seed(1)
    net = _net64()
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    boxrect = torch.full((1, 32, 32), -1)
    boxrect[0, 3:10, 4:12] = 0
    boxrect[0, 14:25, 15:22] = 1
    boxrect[0, 26:31, 2:9] = 2
    region = torch.full_like(boxrect, -1)  # box plus its one-pixel ring, as in targets.py
    for k in range(3):
        ring = torch.nn.functional.max_pool2d((boxrect == k).double()[None], 3, 1, 1)[0] > 0
        region[ring] = k
    edges = affinity_edges(x, 0.3)

    def loss_k(z, k):
        return box_losses(z, boxrect, 3, edges, 1.0)[k]

    expected = _autograd_per_instance(net, x, loss_k, 3)
    with torch.no_grad():
        feats = net.features(x)
    z = net.classifier(feats).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(box_losses(z, boxrect, 3, edges, 1.0).sum(), z)
    got = classifier_grads(feats, g, region, 3)
    assert expected.norm() > 0
    assert (got - expected).norm() / expected.norm() < 1e-6


def test_projection_loss_prefers_object_shaped_masks():
    # a disc inside its tight box: the disc satisfies the projections as well as the filled box
    yy, xx = np.mgrid[:20, :20]
    disc = (yy - 9.5) ** 2 + (xx - 9.5) ** 2 < 100  # touches every row and column.astype(float)
    boxrect = torch.full((1, 24, 24), -1)
    boxrect[0, 2:22, 2:22] = 0

    def loss(mask):
        m = torch.zeros(1, 24, 24, dtype=torch.float64)
        m[0, 2:22, 2:22] = torch.as_tensor(mask)
        logits = torch.stack([-(m * 2 - 1) * 8, (m * 2 - 1) * 8], 1)
        return float(box_losses(logits, boxrect, 1, None, 0.0)[0])

    assert loss(disc) < 0.01
    assert loss(np.ones((20, 20))) < 0.01
    assert loss(np.zeros((20, 20))) > 0.9 * 400


def test_pairwise_term_matches_a_pixel_by_pixel_reference():
    # batch of two, boxes on both, some at the border: the vectorised gathers must address
    # the same neighbour pairs as a plain loop over box pixels and their eight neighbours
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 12, 10, generator=gen, dtype=torch.float64)
    z = torch.randn(2, 2, 12, 10, generator=gen, dtype=torch.float64)
    boxrect = torch.full((2, 12, 10), -1)
    boxrect[0, 0:5, 0:4] = 0
    boxrect[0, 6:12, 3:10] = 1
    boxrect[1, 2:9, 1:8] = 2
    edges = affinity_edges(x, 0.3)
    got = box_losses(z, boxrect, 3, edges, 1.0) - box_losses(z, boxrect, 3, edges, 0.0)
    logp = torch.log_softmax(z.float(), 1)
    num, den = torch.zeros(3), torch.zeros(3)
    neighbours = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    for b, y, xx in torch.nonzero(boxrect >= 0).tolist():
        j = int(boxrect[b, y, xx])
        for k, (dy, dx) in enumerate(neighbours):
            if edges[k, b, y, xx]:
                num[j] -= torch.logsumexp(logp[b, :, y, xx] + logp[b, :, y + dy, xx + dx], 0)
                den[j] += 1
    area = torch.bincount(boxrect[boxrect >= 0], minlength=3).float()
    assert (den > 0).all()
    torch.testing.assert_close(got.float(), area * num / den, rtol=1e-5, atol=1e-4)


def _direction_project():
    rng = np.random.default_rng(4)
    img_s, lab_s = synth_image(rng, (64, 64), n_objects=6)
    img_w, lab_w = synth_image(rng, (64, 64), n_objects=6)
    scr = np.zeros((64, 64), np.int32)
    # a correct stroke inside each object ...
    for i, obj in enumerate([o for o in np.unique(lab_w) if o > 0][:3]):
        ys, xs = np.nonzero(lab_w == obj)
        scr[ys[: len(ys) // 2], xs[: len(xs) // 2]] = 2 + i
    # ... correct background strokes, and a "foreground" stroke on empty background that
    # conflicts with the strong data
    bg = np.argwhere(lab_w == 0)
    pick = bg[np.linspace(0, len(bg) - 1, 200).astype(int)]
    scr[pick[::5, 0], pick[::5, 1]] = 9
    scr[pick[1::5, 0], pick[1::5, 1]] = 1
    weak = ImageAnnotations("w", img_w, scribbles=scr)
    return Project([ImageAnnotations("s", img_s, strong=lab_s), weak])


def test_dii_lowers_conflicting_and_raises_agreeing_instances():
    cfg = TrainConfig(method="dii", steps=1000, batch_size=4, patch_size=32, width=8, depth=2, dii_warmup=1000, seed=0)
    tr = Trainer(_direction_project(), cfg)
    for _ in range(40):  # warm up on the data so that g_S is meaningful
        tr.train_step(tr.sampler.sample())
        tr.step += 1
    with torch.no_grad():
        tr.weights.gamma.fill_(0.5)
    for _ in range(3):
        tr.dii_update()
    w = {(x.instance, x.kind): x.weight for x in tr.weights_table()}
    assert w[("9", "scribble")] < 0.5
    assert all(w[(str(2 + i), "scribble")] > 0.5 for i in range(3))


def test_instance_weights_clamp_and_pin():
    w = InstanceWeights(3, lr=0.5)
    w.pin(2, 0.0)
    for _ in range(5):
        w.step(torch.tensor([1.0, -1.0, -1.0]), 0.5)
    g = w.values()
    assert g[0] >= 0 and g[0] < 0.5
    assert g[1] == 1.0
    assert g[2] == 0.0


def test_image_granularity_has_one_weight_per_weak_image(hand_project):
    cfg = TrainConfig(granularity="image", steps=2, batch_size=2, patch_size=32, width=4, depth=2)
    tr = Trainer(hand_project, cfg)
    assert [(i.image, i.instance, i.kind) for i in tr.instances] == [("w", "image", "image")]
    cfg = TrainConfig(granularity="object", steps=2, batch_size=2, patch_size=32, width=4, depth=2)
    tr = Trainer(hand_project, cfg)
    assert sorted((i.instance, i.kind) for i in tr.instances) == [
        ("1", "box"),
        ("2", "box"),
        ("background", "background"),
    ]


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


def test_extent_claim_asks_little_of_a_tight_box_and_much_of_a_loose_one():
    z = torch.full((1, 2, 40, 40), 0.0)
    z[0, 1] = -6.0  # confident background ...
    z[0, 1, 10:20, 10:20] = 6.0  # ... around a confident object
    tight = torch.full((1, 40, 40), -1, dtype=torch.long)
    tight[0, 10:20, 10:20] = 0
    loose = torch.full((1, 40, 40), -1, dtype=torch.long)
    loose[0, 5:25, 5:25] = 0
    g_tight = extent_claim_grad(z, tight).abs().sum()
    g_loose = extent_claim_grad(z, loose).abs().sum()
    # 20 rows and columns whose best pixel is already object: p_bg = sigmoid(-6) each, two classes
    assert g_tight == pytest.approx(20 * 2 * torch.sigmoid(torch.tensor(-6.0)).item(), rel=1e-4)
    # ten of the loose box's rows and ten of its columns hold no object: ~1 each
    assert g_loose > 20 * 2 * 0.99


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
def test_trainer_weak_gradients_match_autograd(hand_project, box_target, dii_box_target):
    cfg = TrainConfig(
        method="dii",
        box_target=box_target,
        dii_box_target=dii_box_target,
        steps=1,
        batch_size=2,
        patch_size=32,
        width=4,
        depth=2,
    )
    tr = Trainer(hand_project, cfg)
    net = tr.nets[0].double()
    tr.tset.slices = [s for s in tr.tset.slices]
    for s in tr.tset.slices:
        s.image = s.image.astype(np.float64)
    got = tr.weak_gradients(net)
    # autograd: instance k's loss on the full weak slice
    s = tr.tset.weak[0]
    x = torch.from_numpy(s.image[None])
    t = torch.from_numpy(s.target[None]).long()
    inst = torch.from_numpy(s.instance[None]).long()
    br = torch.from_numpy(s.boxrect[None]).long() if s.boxrect is not None else None
    edges = affinity_edges(x, cfg.affinity_threshold)

    def loss_k(z, k):
        loss = (pixel_ce(z, t) * (inst == k)).sum()
        if br is not None and dii_box_target == "filled":  # scored as if the box were its mask
            mine = (br >= 0) & (inst == k)
            loss = loss + (pixel_ce(z, torch.where(mine, 1, -1))).sum()
        elif br is not None and dii_box_target == "ellipse":  # as if its inscribed ellipse were
            mine = torch.from_numpy(s.boxcore[None]) & (inst == k)
            loss = loss + (pixel_ce(z, torch.where(mine, 1, -1))).sum()
        elif br is not None and dii_box_target == "extent":
            for b in torch.nonzero(tr.box_instance == k)[:, 0].tolist():
                loss = loss + _extent_loss_reference(z[0], br[0] == b)
        elif br is not None:
            nb = int(br.max()) + 1
            per_box = box_losses(z, br, nb, edges, cfg.pairwise_weight)
            loss = loss + per_box[tr.box_instance[:nb] == k].sum()
        return loss

    net.eval()
    expected = _autograd_per_instance(net, x, loss_k, len(tr.instances))
    assert (got - expected).norm() / expected.norm() < 1e-6


def test_gradient_spaces_match_autograd_of_their_parametrisation():
    from napari_hybridseg.dii import gradient_space

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


def test_inscribed_ellipse_drops_the_corners_only():
    core = inscribed_ellipse(20, 40)
    assert core.shape == (20, 40)
    assert core[10, 20] and core[10, 0] and core[10, 39] and core[0, 20] and core[19, 20]
    assert not core[0, 0] and not core[19, 39] and not core[0, 39] and not core[19, 0]
    assert abs(core.mean() - np.pi / 4) < 0.03  # an ellipse fills pi/4 of its box
    assert inscribed_ellipse(1, 1).all() and inscribed_ellipse(1, 7).all()


def test_default_dii_lr_lets_weights_reach_zero():
    from napari_hybridseg.config import DII_TRAVEL, poly_factor

    long_run = TrainConfig(steps=20_000)
    assert long_run.resolved_dii_lr(1000, 50) == pytest.approx(0.1)  # the paper's rate
    short = TrainConfig(steps=300)
    lr = short.resolved_dii_lr(50, 41)
    assert lr > 0.1
    reach = sum(lr * poly_factor(t, 300) for t in range(50, 300, 41))
    assert reach == pytest.approx(DII_TRAVEL)
    assert TrainConfig(steps=300, dii_lr=0.05).resolved_dii_lr(50, 41) == 0.05
    with pytest.raises(ConfigError, match="dii_lr"):
        TrainConfig(dii_lr=0.0)


def test_cr_rampup_rises_to_lambda():
    flat = TrainConfig(steps=100, lambda_cr=2.0)
    assert flat.cr_weight(0) == 2.0
    ramped = TrainConfig(steps=100, lambda_cr=2.0, cr_rampup=0.3)
    values = [ramped.cr_weight(s) for s in range(0, 40)]
    assert values[0] == pytest.approx(2.0 * np.exp(-5.0))
    assert all(a < b for a, b in zip(values[:30], values[1:31]))
    assert values[30] == values[39] == 2.0
