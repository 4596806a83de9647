"""The box terms: hand-checked cases, the vectorised pairwise term against a plain loop,
the nanmedian fallback, and several classes."""

import numpy as np
import pytest
import torch

from napari_hybridseg.losses import affinity_edges, box_losses, extent_claim_grad, row_nanmedian


def test_projection_loss_prefers_object_shaped_masks():
    # a disc inside its tight box satisfies the projections as well as the filled box
    yy, xx = np.mgrid[:20, :20]
    disc = (yy - 9.5) ** 2 + (xx - 9.5) ** 2 < 100
    boxmap = torch.full((1, 24, 24), -1)
    boxmap[0, 2:22, 2:22] = 0

    def loss(mask):
        m = torch.zeros(1, 24, 24, dtype=torch.float64)
        m[0, 2:22, 2:22] = torch.as_tensor(mask)
        logits = torch.stack([-(m * 2 - 1) * 8, (m * 2 - 1) * 8], 1)
        return float(box_losses(logits, boxmap, 1, None, 0.0)[0])

    assert loss(disc) < 0.01
    assert loss(np.ones((20, 20))) < 0.01
    assert loss(np.zeros((20, 20))) > 0.9 * 400


def test_pairwise_term_matches_a_pixel_by_pixel_reference():
    # batch of two, boxes on both, some at the border: the vectorised gathers must address
    # the same neighbour pairs as a plain loop over box pixels and their eight neighbours
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 12, 10, generator=gen, dtype=torch.float64)
    z = torch.randn(2, 2, 12, 10, generator=gen, dtype=torch.float64)
    boxmap = torch.full((2, 12, 10), -1)
    boxmap[0, 0:5, 0:4] = 0
    boxmap[0, 6:12, 3:10] = 1
    boxmap[1, 2:9, 1:8] = 2
    edges = affinity_edges(x, 0.3)
    got = box_losses(z, boxmap, 3, edges, 1.0) - box_losses(z, boxmap, 3, edges, 0.0)
    logp = torch.log_softmax(z.float(), 1)
    num, den = torch.zeros(3), torch.zeros(3)
    neighbours = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    for b, y, xx in torch.nonzero(boxmap >= 0).tolist():
        j = int(boxmap[b, y, xx])
        for k, (dy, dx) in enumerate(neighbours):
            if edges[k, b, y, xx]:
                num[j] -= torch.logsumexp(logp[b, :, y, xx] + logp[b, :, y + dy, xx + dx], 0)
                den[j] += 1
    area = torch.bincount(boxmap[boxmap >= 0], minlength=3).float()
    assert (den > 0).all()
    torch.testing.assert_close(got.float(), area * num / den, rtol=1e-5, atol=1e-4)


def test_box_class_selects_the_channel():
    """With three outputs, a box of class 2 is satisfied by class 2 and not by class 1."""
    boxmap = torch.full((1, 10, 10), -1)
    boxmap[0, 2:8, 2:8] = 0
    z = torch.zeros(1, 3, 10, 10)
    z[0, 2, 2:8, 2:8] = 10.0
    assert box_losses(z, boxmap, 1, None, 0.0, torch.tensor([2]))[0] < 0.01
    assert box_losses(z, boxmap, 1, None, 0.0, torch.tensor([1]))[0] > 0.9 * 36


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


def test_nanmedian_falls_back_where_the_device_has_no_kernel(monkeypatch):
    x = torch.tensor([[1.0, float("nan"), 3.0, 2.0], [5.0, 4.0, float("nan"), float("nan")]])
    expected = torch.nanmedian(x, dim=1).values
    img = torch.rand(2, 1, 9, 7)
    edges = affinity_edges(img, 0.3)

    def missing(*args, **kwargs):
        raise NotImplementedError("The operator 'aten::nanmedian.dim_values' is not implemented for 'MPS'")

    monkeypatch.setattr(torch, "nanmedian", missing)
    torch.testing.assert_close(row_nanmedian(x), expected)
    assert torch.equal(affinity_edges(img, 0.3), edges)
