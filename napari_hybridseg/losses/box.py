"""What a box teaches: the box-projection and pairwise-affinity terms of BoxInst
(Tian et al., CVPR 2021), and the gradient of a box's claim that its object
reaches every row and column.

Shapes: ``logits`` ``(B, K, *S)``, the box's plane being the last two axes;
``boxmap`` ``(B, *S)`` long, the box index of each pixel in ``[0, n_boxes)`` or -1
(one index per box *and crop*: the same box seen in two crops is two boxes here);
``box_class`` ``(n_boxes,)`` long, the class channel each box asserts (default 1);
``image`` ``(B, C, *S)`` the normalised input (for colour affinities).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# 8-neighbourhood offsets in the image plane, for the pairwise affinity term
NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]`` (``fill`` outside)."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def crop_boxes(boxmap: torch.Tensor, box_instance: torch.Tensor, box_class: torch.Tensor):
    """Number the boxes of a batch by (crop, box): the same box in two crops is two
    terms, each with its own rows, columns and patch edges.

    Returns ``(local map, n, instance per box, class per box)``; the local map is
    ``(B, *P)`` with ids ``0..n-1`` (-1 outside boxes).
    """
    present = boxmap >= 0
    if not present.any():
        return boxmap, 0, box_instance[:0], box_class[:0]
    n_global = len(box_instance)
    crop = torch.arange(boxmap.shape[0], device=boxmap.device).view(-1, *([1] * (boxmap.ndim - 1)))
    key = torch.where(present, crop * n_global + boxmap, -1)
    # a lookup table instead of torch.unique: no sort of every box pixel
    used = torch.nonzero(torch.bincount(key[present], minlength=boxmap.shape[0] * n_global))[:, 0]
    table = torch.full((boxmap.shape[0] * n_global + 1,), -1, dtype=key.dtype, device=key.device)
    table[used] = torch.arange(len(used), dtype=key.dtype, device=key.device)
    local = table[key]  # -1 reads the spare last entry, -1
    which = used % n_global
    return local, int(used.numel()), box_instance[which], box_class[which]


def row_nanmedian(x: torch.Tensor) -> torch.Tensor:
    """Median of each row ignoring NaN; falls back to a sort where the device has no
    ``nanmedian`` kernel (MPS on older PyTorch)."""
    try:
        return torch.nanmedian(x, dim=1).values
    except (NotImplementedError, RuntimeError):
        count = (~torch.isnan(x)).sum(1)
        ordered = torch.sort(torch.nan_to_num(x, nan=float("inf")), dim=1).values  # NaN last
        index = ((count - 1).clamp(min=0) // 2)[:, None]  # the lower middle, as torch.nanmedian
        return ordered.gather(1, index)[:, 0]


def affinity_edges(image: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """Which in-plane neighbour pairs have similar colour: bool ``(8, B, *S)``.

    Similarity is ``exp(-|I_i - I_j| / theta)`` (Tian et al., BoxInst, CVPR 2021, use
    LAB colour with a fixed theta); we set ``theta`` per image to the median
    neighbour difference so that it adapts to the noise level and intensity
    range of any modality.  Pairs with similarity >= ``threshold`` count.
    """
    diffs = [torch.linalg.vector_norm(image - _shift(image, dy, dx, float("nan")), dim=1) for dy, dx in NEIGHBOURS]
    d = torch.stack(diffs)  # (8, B, *S), NaN outside
    flat = d.movedim(1, 0).reshape(d.shape[1], -1)
    theta = row_nanmedian(flat).clamp(min=1e-6).view(1, -1, *([1] * (d.ndim - 2)))
    sim = torch.exp(-d / theta)
    return torch.nan_to_num(sim, nan=0.0) >= threshold


def box_losses(
    logits: torch.Tensor,
    boxmap: torch.Tensor,
    n_boxes: int,
    edges: torch.Tensor | None,
    pairwise_weight: float = 1.0,
    box_class: torch.Tensor | None = None,
) -> torch.Tensor:
    """Box-projection plus pairwise-affinity loss of every box, ``(n_boxes,)``.

    For box ``j`` with ``A_j`` pixels in the patch: ``A_j * (P_j + w * Q_j)``, where
    ``P_j`` is the Dice loss between its class's probability max-projected onto the
    rows and columns of the box and all-ones (the object touches every row and column
    of a tight box), and ``Q_j`` the mean of ``-log P(same label)`` over
    similar-coloured neighbour pairs centred in the box (BoxInst, Tian et al. 2021).
    A projection is skipped along an axis where the box is cut by the patch edge.
    Scaling by ``A_j`` makes a box weigh like the same number of cross-entropy pixels,
    and keeps every term a per-instance sum.
    """
    h, w = logits.shape[-2:]
    dev = logits.device
    inside = boxmap >= 0
    if n_boxes == 0 or not inside.any():
        return logits.new_zeros(n_boxes)
    # pixels addressed by flat index into 1-D log-probability maps, one per class:
    # 1-D gathers, and index_select's backward needs no sort
    logp = F.log_softmax(logits.float(), dim=1)
    k_out = logp.shape[1]
    lp = logp.movedim(1, 0).reshape(k_out, -1)  # (K, N)
    flat = torch.nonzero(inside.reshape(-1))[:, 0]
    yi = torch.div(flat, w, rounding_mode="floor") % h
    xi = flat % w
    j = boxmap.reshape(-1)[flat]
    cls = box_class[j] if box_class is not None else torch.ones_like(j)
    p = lp.reshape(-1).index_select(0, cls * lp.shape[1] + flat).exp()
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

    total = projection(yi, xi, h, w) + projection(xi, yi, w, h)
    if edges is not None and pairwise_weight > 0:
        # every (box pixel, neighbour) pair at once; a neighbour off the plane never has
        # an edge, so its flat index is never used
        offsets = torch.tensor([dy * w + dx for dy, dx in NEIGHBOURS], device=dev)
        valid = edges.reshape(len(NEIGHBOURS), -1)[:, flat]  # (8, N)
        k, n = torch.nonzero(valid, as_tuple=True)
        here, there = flat[n], flat[n] + offsets[k]
        same = torch.logsumexp(lp.index_select(1, here) + lp.index_select(1, there), dim=0)
        num = torch.zeros(n_boxes, device=dev).index_add_(0, j[n], -same)
        den = torch.zeros(n_boxes, device=dev).index_add_(0, j[n], torch.ones_like(same))
        total = total + pairwise_weight * num / den.clamp(min=1)
    return area * total


def extent_claim_grad(logits: torch.Tensor, boxmap: torch.Tensor, box_class: torch.Tensor | None = None):
    """Gradient w.r.t. ``logits`` of every box's claim that its object reaches each of
    its rows and columns: the sum, over the rows and columns of every box, of
    ``-log p_c`` (``c`` the box's class) at the row's (column's) most class-like pixel.

    This is the box projection's assumption (Tian et al., BoxInst, CVPR 2021) with a
    log loss: a row that the network confidently calls background carries a full unit
    of gradient, where the Dice of the projections fades as the probability saturates.
    A tight box around an object of any shape asks little; a box too large, moved off
    its object or drawn on background asks for background pixels to become object.
    Closed form: at each such pixel, softmax minus one-hot(c), once per row or column
    it is the maximum of (tied maxima share it).
    """
    grad = torch.zeros_like(logits)
    inside = boxmap >= 0
    if not inside.any():
        return grad
    where = torch.nonzero(inside, as_tuple=True)  # (b, *spatial) index tuples
    bi, ys, xs = where[0], where[-2], where[-1]
    box = boxmap[where]
    cls = box_class[box] if box_class is not None else torch.ones_like(box)
    z = logits.movedim(1, -1)[where]  # (N, K)
    own = z.gather(1, cls[:, None])[:, 0]
    rest = z.scatter(1, cls[:, None], float("-inf"))
    margin = own - torch.logsumexp(rest, dim=1)  # log-odds of the box's class: its argmax is p_c's
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
    step = torch.softmax(z, dim=1) - F.one_hot(cls, z.shape[1]).to(z)
    grad.movedim(1, -1)[where] = step * count[:, None]
    return grad
