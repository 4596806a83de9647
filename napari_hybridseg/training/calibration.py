"""A weak annotation's evidence measured against its controls (the annotations that the
full masks imply, :mod:`napari_hybridseg.data.controls`).

A raw score has no fixed meaning: how a perfectly good annotation scores depends on the
data, the shapes, the drawing style and how far the training has gone.  An annotation is
therefore lowered only where it scores clearly worse than nearly every control of its
kind and class.
"""

from __future__ import annotations

import torch

# an annotation is lowered where it scores worse than this quantile of its controls ...
CONTROL_QUANTILE = 0.9
# ... by more than this many times their spread (the distance between that quantile and
# the opposite one) ...
CONTROL_MARGIN = 0.5
# (both quantiles read off the controls' median and interquartile range as if they were
# normal: a few controls, one of them odd, move them little, where their own 10th and 90th
# percentiles would follow the odd one)
_Z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(CONTROL_QUANTILE)))
_IQR_PER_SD = 1.349  # a normal distribution's interquartile range, in standard deviations
# ... if there are at least this many of them (of its kind of claim and class)
MIN_CONTROLS = 3
# the unit of the box fits' spread is at least this IoU: controls that all fit almost
# perfectly would otherwise make a clean box's small miss look far out
MIN_FIT_SPREAD = 0.1


def _robust_range(mine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The controls' median and the distance from it to their ``CONTROL_QUANTILE``, read
    off their interquartile range as if they were normal."""
    q25, median, q75 = torch.quantile(mine, torch.tensor([0.25, 0.5, 0.75]).to(mine))
    return median, _Z * (q75 - q25) / _IQR_PER_SD


def calibrated(weak: torch.Tensor, groups: torch.Tensor, ctrl: torch.Tensor, ctrl_groups: torch.Tensor) -> torch.Tensor:
    """Per-pixel scores measured against the controls of the same group: minus their
    ``CONTROL_QUANTILE``, in units of their spread (that quantile minus the opposite
    one; for the background, whose controls are large regions, at least their median's
    distance from 0), minus ``CONTROL_MARGIN``; the quantiles are robust estimates, from
    the controls' median and interquartile range.  Positive, so that the weight is
    lowered, only where an annotation scores clearly worse than nearly every annotation
    the full masks imply.  A group with fewer than ``MIN_CONTROLS`` controls keeps its
    raw scores."""
    out = weak.clone()
    groups, ctrl_groups = groups.to(weak.device), ctrl_groups.to(weak.device)
    for g in torch.unique(groups):
        mine = ctrl[ctrl_groups == g].float()
        if g < 0 or mine.numel() < MIN_CONTROLS:
            continue
        median, reach = _robust_range(mine)
        high, spread = median + reach, 2 * reach
        if g == 0:  # the background's controls are large regions whose scores barely vary:
            # there the unit is at least their typical distance from 0 (no evidence either way)
            spread = torch.maximum(spread, mine.median().abs())
        spread = spread.clamp(min=torch.finfo(mine.dtype).tiny)
        out[groups == g] = ((weak[groups == g] - high) / spread - CONTROL_MARGIN).to(out)
    return out


def calibrated_fit(
    fit: torch.Tensor, groups: torch.Tensor, ctrl: torch.Tensor, ctrl_groups: torch.Tensor
) -> torch.Tensor:
    """How much worse each box fits a predicted object than the controls of its group (the
    tight boxes of the full masks' objects of its class), on the scale of
    :func:`calibrated` with the sign turned, fits being better when higher: the controls'
    opposite quantile minus the box's fit, in units of their spread (at least
    ``MIN_FIT_SPREAD``), minus ``CONTROL_MARGIN``.  NaN where a box has no fit or its
    group fewer than ``MIN_CONTROLS`` fitted controls."""
    out = torch.full_like(fit, float("nan"))
    groups, ctrl_groups = groups.to(fit.device), ctrl_groups.to(fit.device)
    for g in torch.unique(groups[~torch.isnan(fit)]):
        mine = ctrl[(ctrl_groups == g) & ~torch.isnan(ctrl)].float()
        if mine.numel() < MIN_CONTROLS:
            continue
        median, reach = _robust_range(mine)
        sel = (groups == g) & ~torch.isnan(fit)
        out[sel] = ((median - reach - fit[sel]) / (2 * reach).clamp(min=MIN_FIT_SPREAD) - CONTROL_MARGIN).to(out)
    return out
