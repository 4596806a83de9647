"""A box's DII evidence read off the pixels its claim covers, one by one.

A box can be scored by the mean over its claimed pixels (the ellipse inscribed in it, or
the whole box) of each pixel's evidence ``-g_S . g_p``.  A box two or three times too
large claims its object and much background; where the networks' features barely tell the
two apart, the background's evidence is weak and the mean is diluted, not reversed, so
the box ranks among the clean ones.  Its pixels tell more: a tight box's claim is mostly
its object, which the full masks' gradient agrees with strongly, a loose box's is mostly
not.  With ``dii_box_evidence="quantile"`` a box is scored by the evidence of the pixel at
quantile ``q`` of its claim (sorted from most to least agreeing), where ``q`` is half the
share of a control box's claim that its object covers (the median over the class's
controls, from the full masks).  The claims of clean boxes are covered about as much as
the controls', so the pixel at ``q`` lies on the object; the claim of a box whose object
covers less than ``q`` of it is scored by a pixel off its object.  That pixel also reads
the background where a clean box's object covers less of it than the controls' objects
cover of theirs, so by default (``dii_box_evidence="both"``) a box is lowered only where its
mean and its pixel at ``q`` both score worse than its controls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.targets import TrainingSample

# boxes scored so are lowered where they score worse than their controls by this many units,
# not calibration.CONTROL_MARGIN: a clean box read at one pixel varies more about its
# controls than its mean does (benchmarks/dii_replay.py --box-evidence; BENCHMARKS.md)
BOX_MARGIN = 0.75


def claim_mask(boxmap: np.ndarray, core: np.ndarray | None, instance: np.ndarray) -> np.ndarray:
    """The pixels a box claims (``core``: the inscribed ellipses, ``None``: whole boxes),
    of pixels that belong to an instance."""
    claim = (boxmap >= 0) & (instance >= 0)
    return claim & core if core is not None else claim


def claim_shares(samples: list[TrainingSample], targets: list[np.ndarray], box_instance, box_class) -> dict[int, float]:
    """Per class, the median over the control boxes of the share of a box's claim that its
    class covers in the full mask (``targets``, one per sample)."""
    cls_of = dict(zip(np.asarray(box_instance).tolist(), np.asarray(box_class).tolist()))
    shares: dict[int, list[float]] = {}
    for s, target in zip(samples, targets):
        if s.boxmap is None:
            continue
        claim = claim_mask(s.boxmap, s.boxcore, s.instance)
        ins, truth = s.instance[claim], target[claim]
        for k in np.unique(ins).tolist():
            if k in cls_of:
                shares.setdefault(cls_of[k], []).append(float((truth[ins == k] == cls_of[k]).mean()))
    return {c: float(np.median(v)) for c, v in shares.items()}


def box_quantiles(scorer, shares: dict[int, float]) -> torch.Tensor:
    """Per instance of a scorer: half its class's covered share of a control box's claim
    for a box, NaN for the rest (and for a box of a class without controls)."""
    q = torch.full((scorer.n,), float("nan"), device=scorer.device)
    for k, c in zip(scorer.box_instance.tolist(), scorer.box_class.tolist()):
        if c in shares:
            q[k] = shares[c] / 2
    return q


@dataclass
class ClaimPixels:
    """The claimed box pixels of one pass: their instance, the classifier's input in the
    gradient space's layout, and the cross-entropy gradient of the logits.  With
    ``towards`` (the strong gradient ``(K, F')``, known before the pass), each pixel's
    evidence is computed as it is added, and only that is kept (a number per pixel, not
    ``F' + K``)."""

    towards: torch.Tensor | None = None
    index: list[torch.Tensor] = field(default_factory=list)
    inputs: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)

    def add(self, claim: torch.Tensor, index: torch.Tensor, feats: torch.Tensor, grad: torch.Tensor, space, mu):
        """Keep the pixels of ``claim`` (``(B, *S)`` bool) of one tile."""
        f = feats.movedim(1, -1)[claim]
        if space == "centred":
            f = f - mu
        elif space == "weight+bias":
            f = torch.cat([f, f.new_ones(f.shape[0], 1)], dim=1)
        self.index.append(index[claim])
        g = grad.movedim(1, -1)[claim]
        if self.towards is not None:
            self.values.append(-torch.einsum("pk,kf,pf->p", g, self.towards, f))
        else:
            self.inputs.append(f)
            self.grads.append(g)

    def evidence(self, towards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(index, -g_S . g_p)`` of every kept pixel; ``towards``: the strong gradient in
        the space's layout, ``(K, F')`` for all pixels or ``(n, K, F')`` per instance (not
        read where the pixels' evidence was computed as they were added)."""
        if not self.index:  # no box here (a rank's share, images of strokes only)
            return torch.zeros(0, dtype=torch.long, device=towards.device), towards.new_zeros(0)
        index = torch.cat(self.index)
        if self.towards is not None:
            return index, torch.cat(self.values)
        f, g = torch.cat(self.inputs), torch.cat(self.grads)
        if towards.ndim == 2:
            return index, -torch.einsum("pk,kf,pf->p", g, towards, f)
        return index, -torch.einsum("pk,pkf,pf->p", g, towards[index], f)


def at_quantile(scores: torch.Tensor, at_q: torch.Tensor) -> torch.Tensor:
    """``scores`` with each box's replaced by its score at its quantile (``at_q``, NaN for
    an instance scored by the mean)."""
    return torch.where(at_q.isnan(), scores, at_q)


def quantile_evidence(index: torch.Tensor, values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per instance ``k``, the value at quantile ``q[k]`` (lower) of its pixels' ``values``;
    NaN for an instance without pixels or a NaN ``q``.  ``q``: ``(n,)``, or ``(n, m)`` for
    ``m`` quantiles of each instance (the result has its shape)."""
    n = q.shape[0]
    out = torch.full(q.shape, float("nan"), dtype=values.dtype, device=values.device)
    if values.numel() == 0:
        return out
    order = torch.argsort(values, stable=True)
    order = order[torch.argsort(index[order], stable=True)]  # by instance, then by value
    counts = torch.bincount(index, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    shape = (n,) + (1,) * (q.ndim - 1)
    has = (counts.view(shape) > 0) & ~torch.isnan(q)
    last = (counts - 1).to(values.dtype).view(shape).expand(q.shape)[has]
    pos = starts.view(shape).expand(q.shape)[has] + torch.floor(q[has].to(values.dtype) * last).long()
    out[has] = values[order[pos]]
    return out
