"""How a weak annotation's DII score is read against its controls' scores.

Controls are the annotations the full masks imply (:mod:`napari_hybridseg.data.controls`),
scored as the user's are; an annotation is lowered only where it scores clearly worse,
per pixel, than nearly every control of its kind and class.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import TrainConfig
from ..data.targets import TrainingSet

# an annotation is lowered where it scores worse than this quantile of its controls, by
# more than this many times their spread (that quantile minus the opposite one), both read
# off the controls' median and interquartile range as if normal (one odd control of a few
# moves them little), if there are at least MIN_CONTROLS of them (of its claim and class); and
# where it also scores worse than ``own`` (TrainConfig.dii_own_quantile) of its group, if
# the group has MIN_CONTROLS annotations (most of a user's annotations are taken as right)
CONTROL_QUANTILE = 0.9
CONTROL_MARGIN = 0.5
_IQR_PER_SD = 1.349  # a normal distribution's interquartile range, in standard deviations
MIN_CONTROLS = 3


def instance_groups(tset: TrainingSet, n: int) -> torch.Tensor:
    """For every instance, which controls it is compared with: ``2 * class`` for
    pixels labelled with their class (strokes, background regions), ``2 * class + 1``
    for boxes; -1 for an instance with no labelled pixel."""
    groups = np.full(n, -1, np.int64)
    for s in tset.weak:
        sel = (s.instance >= 0) & (s.target >= 0)
        groups[s.instance[sel]] = 2 * s.target[sel].astype(np.int64)
    groups[tset.box_instance] = 2 * tset.box_class + 1
    return torch.from_numpy(groups)


def calibrated(
    weak,
    groups,
    ctrl,
    ctrl_groups,
    quantile=CONTROL_QUANTILE,
    margin=CONTROL_MARGIN,
    own=TrainConfig.dii_own_quantile,
    box_margin=None,
) -> torch.Tensor:
    """Per-pixel scores measured against the controls of the same group: minus their
    ``CONTROL_QUANTILE``, in units of their spread (that quantile minus the opposite
    one; for the background, whose controls are large regions, at least their median's
    distance from 0), minus ``CONTROL_MARGIN``; the quantiles are robust estimates, from
    the controls' median and interquartile range.  Positive, so that the weight is
    lowered, only where an annotation scores clearly worse than nearly every annotation
    the full masks imply.  A group with fewer than ``MIN_CONTROLS`` controls keeps its
    raw scores.  ``quantile``, ``margin`` and ``own`` (None: no floor from the group): the rule's constants;
    ``box_margin``: the margin of boxes' groups, if not ``margin``."""
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(quantile)))
    out = weak.clone()
    groups, ctrl_groups = groups.to(weak.device), ctrl_groups.to(weak.device)
    for g in torch.unique(groups):
        mine, sel = ctrl[ctrl_groups == g].float(), groups == g
        if g < 0 or mine.numel() < MIN_CONTROLS:
            continue
        q25, median, q75 = torch.quantile(mine, torch.tensor([0.25, 0.5, 0.75]).to(mine))
        sd = (q75 - q25) / _IQR_PER_SD
        high, spread = median + z * sd, 2 * z * sd
        if g == 0:  # the background's controls are large regions whose scores barely vary:
            # there the unit is at least their typical distance from 0 (no evidence either way)
            spread = torch.maximum(spread, mine.median().abs())
        spread = spread.clamp(min=torch.finfo(mine.dtype).tiny)
        if own is not None and int(sel.sum()) >= MIN_CONTROLS:
            high = torch.maximum(high, torch.quantile(weak[sel].float(), own))
        m = box_margin if box_margin is not None and g % 2 == 1 else margin
        out[sel] = ((weak[sel] - high) / spread - m).to(out)
    return out
