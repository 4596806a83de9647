"""One step: boxes keyed by crop, per-pixel weights, and the DCR pieces."""

import numpy as np
import torch

from napari_hybridseg.config import TrainConfig
from napari_hybridseg.losses import affinity_edges, box_losses
from napari_hybridseg.training.dcr import cr_weight, cross_pseudo_loss, cutmix_masks, mix
from napari_hybridseg.training.step import crop_boxes


def test_the_same_box_in_two_crops_is_two_terms():
    """A batch holding one box twice loses what the two crops lose apart."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=gen)
    z = torch.randn(2, 2, 16, 16, generator=gen)
    boxmap = torch.full((2, 16, 16), -1)
    boxmap[0, 2:9, 3:12] = 5  # box 5 of the training set, whole in the first crop ...
    boxmap[1, 0:6, 8:16] = 5  # ... and cut by the edges of the second, flipped differently
    box_instance, box_class = torch.arange(8), torch.ones(8, dtype=torch.long)
    local, n, inst, cls = crop_boxes(boxmap, box_instance, box_class)
    assert n == 2 and inst.tolist() == [5, 5]
    edges = affinity_edges(x, 0.3)
    together = box_losses(z, local, n, edges, 1.0, cls).sum()
    apart = 0.0
    for b in range(2):
        loc, nb, _, c = crop_boxes(boxmap[b : b + 1], box_instance, box_class)
        apart = apart + box_losses(z[b : b + 1], loc, nb, edges[:, b : b + 1], 1.0, c).sum()
    torch.testing.assert_close(together, apart)


def test_crop_boxes_keeps_instances_and_classes():
    boxmap = torch.full((3, 4, 4), -1)
    boxmap[0, :2, :2], boxmap[0, 2:, 2:], boxmap[2, 1:3, 1:3] = 1, 0, 1
    local, n, inst, cls = crop_boxes(boxmap, torch.tensor([7, 9]), torch.tensor([1, 2]))
    assert n == 3 and sorted(zip(inst.tolist(), cls.tolist())) == [(7, 1), (9, 2), (9, 2)]
    assert set(local[boxmap >= 0].tolist()) == {0, 1, 2} and (local[boxmap < 0] == -1).all()
    assert crop_boxes(torch.full((1, 2, 2), -1), torch.tensor([1]), torch.tensor([1]))[1] == 0


def test_cutmix_mask_and_mixing():
    m = cutmix_masks(np.random.default_rng(0), 3, (16, 16))
    assert m.shape == (3, 1, 16, 16) and set(np.unique(m)) <= {0.0, 1.0} and m.sum() > 0
    a, b = torch.zeros(3, 1, 16, 16), torch.ones(3, 1, 16, 16)
    mt = torch.from_numpy(m)
    assert torch.equal(mix(a, b, mt), mt)
    labels = mix(torch.zeros(3, 16, 16), torch.full((3, 16, 16), 7.0), mt)
    assert torch.equal(labels, mt[:, 0] * 7)


def test_cutmix_in_3d_covers_about_half():
    m = cutmix_masks(np.random.default_rng(1), 200, (8, 16, 16))
    assert m.shape == (200, 1, 8, 16, 16)
    assert 0.3 < m.mean() < 0.6


def test_cross_pseudo_loss_uses_the_other_networks_labels():
    z1 = torch.tensor([[[[5.0]], [[-5.0]]]])  # predicts class 0
    z2 = torch.tensor([[[[-5.0]], [[5.0]]]])  # predicts class 1
    y1, y2 = z1.argmax(1), z2.argmax(1)
    w = torch.ones(1, 1, 1)
    # each network is told the other's (opposite) label: both terms are large
    assert cross_pseudo_loss(z1, z2, y1, y2, w) > 9
    # agreeing labels give a small loss; zero weight gives none
    assert cross_pseudo_loss(z1, z2, y2, y1, w) < 1e-3
    assert cross_pseudo_loss(z1, z2, y1, y2, torch.zeros(1, 1, 1)) == 0


def test_cr_rampup_rises_to_lambda():
    assert cr_weight(TrainConfig(steps=100, lambda_cr=2.0), 0) == 2.0
    ramped = TrainConfig(steps=100, lambda_cr=2.0, cr_rampup=0.3)
    values = [cr_weight(ramped, s) for s in range(0, 40)]
    assert values[0] == np.float64(2.0 * np.exp(-5.0))
    assert all(a < b for a, b in zip(values[:30], values[1:31]))
    assert values[30] == values[39] == 2.0
    # unset, the weight is the network's: the ramp-up rises to it alike
    assert cr_weight(TrainConfig(steps=100), 0, 3) == 0.1 and cr_weight(TrainConfig(steps=100), 0) == 1.0
    assert cr_weight(TrainConfig(steps=100, cr_rampup=0.3), 30, 3) == 0.1


def test_float16_overflows_are_skipped_a_while_then_stop_the_run(hand_project, monkeypatch):
    """With a gradient scaler a non-finite loss skips the step; a run of them is divergence."""
    import pytest

    from napari_hybridseg.devices import Precision
    from napari_hybridseg.errors import DivergedError
    from napari_hybridseg.training import TrainingLoop
    from napari_hybridseg.training.step import MAX_SKIPPED_STEPS

    class SkippingScaler:  # what GradScaler does with inf/NaN gradients: no optimiser step
        def scale(self, loss):
            return loss

        def step(self, opt):
            pass

        def update(self):
            pass

    loop = TrainingLoop(
        hand_project, TrainConfig(method="naive", steps=100, batch_size=2, patch_size=32, width=4, depth=2)
    )
    loop.state.precision = Precision("cpu", None, SkippingScaler())
    from napari_hybridseg.training import step

    overflowing = step.pixel_ce
    monkeypatch.setattr(step, "pixel_ce", lambda z, t: overflowing(z, t) * float("inf"))  # an overflowed loss
    for _ in range(MAX_SKIPPED_STEPS):
        loop.train_step()
    with pytest.raises(DivergedError, match="diverged"):
        loop.train_step()
