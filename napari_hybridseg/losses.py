"""Per-pixel and per-box losses, with ``reduction="none"``-style outputs.

Shapes: ``logits`` (B, 2, H, W); ``target`` (B, H, W) long with -1 ignored;
``boxrect`` (B, H, W) long, the batch-local box index of each pixel or -1;
``image`` (B, C, H, W) the normalised input (for colour affinities).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# 8-neighbourhood offsets for the pairwise affinity term
NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def pixel_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per pixel ``(B, H, W)``; 0 where ``target`` is -1."""
    loss = F.cross_entropy(logits, target.clamp(min=0), reduction="none")
    return loss * (target >= 0)


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]`` (``fill`` outside)."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def affinity_edges(image: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """Which neighbour pairs have similar colour: bool ``(8, B, H, W)``.

    Similarity is ``exp(-|I_i - I_j| / theta)`` (Tian et al., BoxInst, CVPR 2021, use
    LAB colour with a fixed theta); we set ``theta`` per image to the median
    neighbour difference so that it adapts to the noise level and intensity
    range of any modality.  Pairs with similarity >= ``threshold`` count.
    """
    diffs = []
    for dy, dx in NEIGHBOURS:
        shifted = _shift(image, dy, dx, float("nan"))
        diffs.append(torch.linalg.vector_norm(image - shifted, dim=1))
    d = torch.stack(diffs)  # (8, B, H, W), NaN outside
    flat = d.permute(1, 0, 2, 3).reshape(d.shape[1], -1)
    theta = torch.nanmedian(flat, dim=1).values.clamp(min=1e-6).view(1, -1, 1, 1)
    sim = torch.exp(-d / theta)
    return torch.nan_to_num(sim, nan=0.0) >= threshold


def box_losses(
    logits: torch.Tensor,
    boxrect: torch.Tensor,
    n_boxes: int,
    edges: torch.Tensor | None,
    pairwise_weight: float = 1.0,
) -> torch.Tensor:
    """Box-projection plus pairwise-affinity loss of every box, ``(n_boxes,)``.

    For box ``j`` with ``A_j`` pixels in the patch: ``A_j * (P_j + w * Q_j)``, where
    ``P_j`` is the Dice loss between the foreground probability's max-projections
    onto the rows and columns of the box and all-ones (the object touches every
    row and column of a tight box), and ``Q_j`` the mean of ``-log P(same label)``
    over similar-coloured neighbour pairs centred in the box (BoxInst, Tian et al.
    2021).  A projection is skipped along an axis where the box is cut by the patch
    edge.  Scaling by ``A_j`` makes a box weigh like the same number of
    cross-entropy pixels, and keeps every term a per-instance sum.
    """
    b, _, h, w = logits.shape
    dev = logits.device
    inside = boxrect >= 0
    if n_boxes == 0 or not inside.any():
        return logits.new_zeros(n_boxes)
    # pixels addressed by flat index into 1-D log-probability maps, one per class:
    # 1-D gathers, and index_select's backward needs no sort
    logp = F.log_softmax(logits.float(), dim=1)
    lp0, lp1 = logp[:, 0].reshape(-1), logp[:, 1].reshape(-1)
    flat = torch.nonzero(inside.reshape(-1))[:, 0]
    yi = torch.div(flat, w, rounding_mode="floor") % h
    xi = flat % w
    j = boxrect.reshape(-1)[flat]
    p = lp1.index_select(0, flat).exp()
    area = torch.zeros(n_boxes, device=dev).index_add_(0, j, torch.ones_like(p))

    def projection(coord: torch.Tensor, other: torch.Tensor, size: int, other_size: int) -> torch.Tensor:
        key = j * size + coord
        m = torch.zeros(n_boxes * size, device=dev).scatter_reduce(0, key, p, "amax", include_self=False)
        present = torch.zeros(n_boxes * size, device=dev).index_fill_(0, key, 1.0).view(n_boxes, size)
        m = m.view(n_boxes, size) * present
        lo = torch.full((n_boxes,), other_size, device=dev, dtype=torch.long).scatter_reduce(0, j, other, "amin")
        hi = torch.full((n_boxes,), -1, device=dev, dtype=torch.long).scatter_reduce(0, j, other, "amax")
        cut = (lo == 0) | (hi == other_size - 1)
        dice = 1 - 2 * m.sum(1) / (m.pow(2).sum(1) + present.sum(1)).clamp(min=1)
        return dice * (~cut)

    proj = projection(yi, xi, h, w) + projection(xi, yi, w, h)
    total = proj
    if edges is not None and pairwise_weight > 0:
        # every (box pixel, neighbour) pair at once; a neighbour off the map never has
        # an edge, so its flat index is never used
        offsets = torch.tensor([dy * w + dx for dy, dx in NEIGHBOURS], device=dev)
        valid = edges.reshape(len(NEIGHBOURS), -1)[:, flat]  # (8, N)
        k, n = torch.nonzero(valid, as_tuple=True)
        here, there = flat[n], flat[n] + offsets[k]
        both_bg = lp0.index_select(0, here) + lp0.index_select(0, there)
        both_fg = lp1.index_select(0, here) + lp1.index_select(0, there)
        same = torch.logaddexp(both_bg, both_fg)
        num = torch.zeros(n_boxes, device=dev).index_add_(0, j[n], -same)
        den = torch.zeros(n_boxes, device=dev).index_add_(0, j[n], torch.ones_like(same))
        total = total + pairwise_weight * num / den.clamp(min=1)
    return area * total


def mean_gamma(gamma: torch.Tensor, members: list[torch.Tensor]) -> torch.Tensor:
    """Mean weight of each image's instances (1 for an image without any)."""
    out = []
    for idx in members:
        out.append(gamma[idx].mean() if idx.numel() else gamma.new_ones(()))
    return torch.stack(out) if out else gamma.new_ones(0)


def extent_claim_grad(logits: torch.Tensor, boxrect: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. ``logits`` of every box's claim that its object reaches each of
    its rows and columns: the sum, over the rows and columns of every box, of
    ``-log p_fg`` at the row's (column's) most object-like pixel in the box.

    This is the box projection's assumption (Tian et al., BoxInst, CVPR 2021) with a
    log loss: a row that the network confidently calls background carries a full unit
    of gradient, where the Dice of the projections fades as the probability saturates.
    A tight box around an object of any shape asks little; a box too large, moved off
    its object or drawn on background asks for background pixels to become object.
    Closed form: at each such pixel, softmax minus one-hot(foreground), once per row or
    column it is the maximum of (tied maxima share it).  ``boxrect``: (B, H, W) long, box index or -1.
    """
    grad = torch.zeros_like(logits)
    inside = boxrect >= 0
    if not inside.any():
        return grad
    bi, ys, xs = torch.nonzero(inside, as_tuple=True)
    box = boxrect[bi, ys, xs]
    margin = (logits[:, 1] - logits[:, 0])[bi, ys, xs]  # argmax of p_fg = argmax of the log-odds
    count = torch.zeros_like(margin)
    span = max(logits.shape[-2:])
    box_key = bi * (int(box.max()) + 1) + box
    for coord in (ys, xs):
        key = box_key * span + coord
        _, group = torch.unique(key, return_inverse=True)
        best = torch.full((int(group.max()) + 1,), float("-inf"), dtype=margin.dtype, device=margin.device)
        best = best.scatter_reduce(0, group, margin, "amax")
        is_max = (margin == best[group]).to(margin.dtype)
        ties = torch.zeros_like(best).index_add_(0, group, is_max)
        count += is_max / ties[group]  # tied maxima share the row's unit
    p_bg = torch.softmax(logits[bi, :, ys, xs], dim=1)[:, 0]
    grad[bi, 0, ys, xs] = p_bg * count
    grad[bi, 1, ys, xs] = -p_bg * count
    return grad
