"""Replay DII's weight updates of a recorded run under other ways of reading the controls.

``dii_phases.py --dump run.npz`` keeps, for every weight update of one run, the per-pixel
scores of every annotation and of every control.  This script runs the weights' Adam
updates again from those scores, with the package's calibration (which must reproduce the
run's final weights exactly, a check printed first) and with variants of it, and reports
box and scribble AUC, clean weights and how many corrupted annotations of each kind end
below 0.5.  The networks do not see the replayed weights, so a variant's figures say what
its evidence would do to the weights of this run, not what a run trained with it would
learn.

Variants, for a class whose controls of one kind (boxes; labelled strokes) number fewer than
``MIN_CONTROLS`` (``-always``: for every class):

- ``pooled``: the class's own median as the centre, the spread of all classes' controls of
  the same kind about their own class's median as the unit;
- ``relative``: as ``pooled`` with each deviation divided by its class's median, and the
  unit scaled back by this class's median;
- ``one-pool``: all classes' controls of the kind as one group (the centre too, unless the
  class has controls of its own).

With ``--box-evidence`` (a dump of a run by the mean, which also keeps every box's score at
several multiples of the quantile ``dii_box_evidence="quantile"`` reads): boxes scored by that
quantile times each multiple, also with wider margins (``--margins``); the mean of both
calibrated scores, and the lower of them (a box lowered only where both read it worse); the
quantile's unit widened to the mean's relative spread; and the mean or the quantile with a
box group's unit at least the spread of the user's own boxes.

    python benchmarks/dii_phases.py --dataset medical --method dii+dcr --steps 2000 --dump few_s0.npz
    python benchmarks/dii_replay.py few_s0.npz few_s1.npz few_s2.npz
    python benchmarks/dii_phases.py --dataset dsb2018 --budget few --method dii+dcr --dump few_s0.npz
    python benchmarks/dii_replay.py --steps 600 --box-evidence few_s0.npz
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev  # noqa: E402
from label_efficiency import roc_auc  # noqa: E402

from napari_hybridseg.config import TrainConfig  # noqa: E402
from napari_hybridseg.data.targets import InstanceRecord  # noqa: E402
from napari_hybridseg.protocol import InstanceKey  # noqa: E402
from napari_hybridseg.training import calibration  # noqa: E402
from napari_hybridseg.training.schedule import dii_learning_rate, poly_lr  # noqa: E402
from napari_hybridseg.training.weights import InstanceWeights  # noqa: E402

_Z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(calibration.CONTROL_QUANTILE)))
CORRUPTIONS = (("box", "loose"), ("box", "shifted"), ("box", "background"), ("scribble", "background"))


def _robust(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Median and the standard deviation read off the interquartile range, as
    :func:`calibration.calibrated` reads them."""
    q25, med, q75 = torch.quantile(x, torch.tensor([0.25, 0.5, 0.75]).to(x))
    return med, (q75 - q25) / calibration._IQR_PER_SD


def borrowing(mode: str, always: bool = False):
    """A calibration like :func:`calibration.calibrated` that lends a class with too few controls
    (or, ``always``, every class) a spread from the other classes' controls of its kind."""

    def calibrate(weak, groups, ctrl, ctrl_groups):
        out = weak.clone()
        kinds = [int(h) for h in torch.unique(ctrl_groups)]
        for g in (int(g) for g in torch.unique(groups)):
            mine = ctrl[ctrl_groups == g].float()
            if g < 0:
                continue
            if g == 0 or (mine.numel() >= calibration.MIN_CONTROLS and not always):
                if mine.numel() < calibration.MIN_CONTROLS:
                    continue
                centre, sd = _robust(mine)
            else:
                same = [h for h in kinds if h > 0 and h % 2 == g % 2]
                if mode == "one-pool":
                    pool = torch.cat([ctrl[ctrl_groups == h].float() for h in same])
                    if pool.numel() < calibration.MIN_CONTROLS:
                        continue
                    centre, sd = _robust(pool)
                    if mine.numel():
                        centre = torch.quantile(mine, 0.5)
                else:
                    if mine.numel() == 0:
                        continue
                    centre = torch.quantile(mine, 0.5)
                    deviations = []
                    for h in same:
                        theirs = ctrl[ctrl_groups == h].float()
                        if theirs.numel() < 2:
                            continue
                        m = torch.quantile(theirs, 0.5)
                        deviations.append((theirs - m) / (m.abs() if mode == "relative" else 1))
                    if sum(d.numel() for d in deviations) < calibration.MIN_CONTROLS:
                        continue
                    _, sd = _robust(torch.cat(deviations))
                    if mode == "relative":
                        sd = sd * centre.abs()
            # from here on as calibration.calibrated measures a group against its controls
            high, spread = centre + _Z * sd, 2 * _Z * sd
            if g == 0:
                spread = torch.maximum(spread, mine.median().abs())
            spread = spread.clamp(min=torch.finfo(torch.float32).tiny)
            out[groups == g] = ((weak[groups == g] - high) / spread - calibration.CONTROL_MARGIN).to(out)
        return out

    return calibrate


def recorded_scores(run: dict):
    """The scores each update saw: ``update -> (weak, ctrl)`` tensors."""
    return lambda u: (torch.from_numpy(run["weak"][u]), torch.from_numpy(run["ctrl"][u]))


def with_calibration(run: dict, calibrate, scores=None):
    """``update -> calibrated scores``: ``calibrate(weak, groups, ctrl, ctrl_groups)`` of
    ``scores`` (default: the recorded ones)."""
    scores = scores or recorded_scores(run)
    groups, ctrl_groups = torch.from_numpy(run["groups"]), torch.from_numpy(run["ctrl_groups"])

    def at(u):
        weak, ctrl = scores(u)
        return calibrate(weak, groups, ctrl, ctrl_groups)

    return at


def replay(run: dict, calibrated_at, total_steps: int) -> np.ndarray:
    """The final weights from the recorded scores, stepped as the run stepped them;
    ``calibrated_at(update)``: the calibrated scores that update moves the weights by."""
    steps = run["steps"]
    interval = int(steps[1] - steps[0]) if len(steps) > 1 else 1
    lr = dii_learning_rate(TrainConfig(steps=total_steps), int(steps[0]), interval)
    weights = InstanceWeights(InstanceRecord(InstanceKey("replay", str(i), "any")) for i in range(run["weak"].shape[1]))
    for update, step in enumerate(steps):
        weights.step(calibrated_at(update), poly_lr(lr, int(step), total_steps))
    return weights.values().numpy()


def quantile_scores(run: dict, j: int):
    """``update -> (weak, ctrl)`` with each box's score at multiple ``j`` of its quantile."""

    def scores(u):
        weak, ctrl = (run[k][u] for k in ("weak", "ctrl"))
        weak_q, ctrl_q = (run[k][u][:, j] for k in ("weak_at", "ctrl_at"))
        pair = np.where(np.isnan(weak_q), weak, weak_q), np.where(np.isnan(ctrl_q), ctrl, ctrl_q)
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in pair)

    return scores


def lower_of_both(run: dict, box_margin: float):
    """``update -> calibrated scores`` of ``dii_box_evidence="both"``: the lower of the
    mean's and the quantile's (boxes at ``box_margin``), from a dump with box scores at
    quantiles."""
    one = [float(f) for f in run["quantile_factors"]].index(1.0)
    mean = with_calibration(run, calibration.calibrated)
    by_quantile = with_calibration(
        run, functools.partial(calibration.calibrated, box_margin=box_margin), quantile_scores(run, one)
    )
    return lambda u: torch.minimum(mean(u), by_quantile(u))


def box_evidence_variants(run: dict, margins) -> dict:
    """``name -> calibrated_at`` for ways of scoring boxes by their claimed pixels, from a
    dump of a run by the mean that recorded every box's score at multiples of its quantile
    (``dii_box_evidence="quantile"``)."""
    if "weak_at" not in run or str(run["box_evidence"]) == "quantile":
        raise SystemExit("--box-evidence needs a dump of a run by the mean (or both) with box scores at quantiles")
    factors = [float(f) for f in run["quantile_factors"]]
    one = factors.index(1.0)

    at = functools.partial(quantile_scores, run)
    package = calibration.calibrated
    mean = with_calibration(run, package)
    # "quantile x1.0, box margin 0.75" is what dii_box_evidence="quantile" does (BOX_MARGIN)
    variants = {f"quantile x{f}": with_calibration(run, package, at(j)) for j, f in enumerate(factors)}
    for m in margins:
        for j, f in enumerate(factors):
            variants[f"quantile x{f}, margin {m}"] = with_calibration(run, functools.partial(package, margin=m), at(j))
    for m in margins:  # the margin of box groups alone, strokes and background regions keep theirs
        variants[f"quantile x1.0, box margin {m}"] = with_calibration(
            run, functools.partial(package, box_margin=m), at(one)
        )
    quantile = variants["quantile x1.0"]
    variants["mean of both calibrated"] = lambda u: (mean(u) + quantile(u)) / 2
    # a box lowered only where the mean and the quantile (at each box margin) both read it worse;
    # at BOX_MARGIN, dii_box_evidence="both"
    for m in (calibration.CONTROL_MARGIN, *margins):
        variants[f"lower of mean and quantile, box margin {m}"] = lower_of_both(run, m)
    # the quantile's scores measured in the unit the mean's controls give, scaled by the ratio of
    # the two controls' medians: as if the controls varied as much, relative to their centre
    groups, ctrl_groups = torch.from_numpy(run["groups"]), torch.from_numpy(run["ctrl_groups"])

    def unit_of_the_mean(u):
        weak, ctrl = at(one)(u)
        _, ctrl_mean = recorded_scores(run)(u)

        def widen(g, centre, sd, sel):
            centre_mean, sd_mean = _robust(ctrl_mean[ctrl_groups == g].float())
            return torch.maximum(sd, sd_mean * centre.abs() / centre_mean.abs().clamp(min=1e-12))

        return _box_groups_widened(package(weak, groups, ctrl, ctrl_groups), weak, groups, ctrl, ctrl_groups, widen)

    variants["quantile, unit of the mean"] = unit_of_the_mean
    own_unit = with_own_unit()
    variants["mean, unit at least the user's boxes'"] = with_calibration(run, own_unit)
    variants["quantile, unit at least the user's boxes'"] = with_calibration(run, own_unit, at(one))
    return variants


def _box_groups_widened(out, weak, groups, ctrl, ctrl_groups, widen):
    """``out`` with every box group that has ``MIN_CONTROLS`` controls measured as
    :func:`calibration.calibrated` measures it, but with the controls' robust standard
    deviation replaced by ``widen(group, centre, sd, members)``."""
    for g in (int(g) for g in torch.unique(groups)):
        mine, sel = ctrl[ctrl_groups == g].float(), groups == g
        if g % 2 == 0 or mine.numel() < calibration.MIN_CONTROLS:
            continue
        centre, sd = _robust(mine)
        sd = widen(g, centre, sd, sel)
        high = centre + _Z * sd
        if int(sel.sum()) >= calibration.MIN_CONTROLS:
            high = torch.maximum(high, torch.quantile(weak[sel].float(), TrainConfig.dii_own_quantile))
        spread = (2 * _Z * sd).clamp(min=torch.finfo(torch.float32).tiny)
        out[sel] = ((weak[sel] - high) / spread - calibration.CONTROL_MARGIN).to(out)
    return out


def with_own_unit():
    """The package's calibration with a box group's unit at least the spread of the user's
    own boxes of the group, read off their lower half (their 25th percentile's distance from
    their median, as if normal), which the corrupted share, if under a half, barely moves:
    the controls are exactly tight boxes, the user's clean boxes are not."""
    half_iqr = calibration._IQR_PER_SD / 2

    def calibrate(weak, groups, ctrl, ctrl_groups):
        def widen(g, centre, sd, sel):
            if int(sel.sum()) < calibration.MIN_CONTROLS:
                return sd
            q25, median = torch.quantile(weak[sel].float(), torch.tensor([0.25, 0.5]))
            return torch.maximum(sd, (median - q25) / half_iqr)

        out = calibration.calibrated(weak, groups, ctrl, ctrl_groups)
        return _box_groups_widened(out, weak, groups, ctrl, ctrl_groups, widen)

    return calibrate


def summary(run: dict, weights: np.ndarray) -> dict:
    bad, kind, how = run["bad"], run["kind"], run["how"]
    out = {}
    for k in ("box", "scribble"):
        clean, corrupted = weights[(kind == k) & (bad == 0)], weights[(kind == k) & (bad == 1)]
        auc = roc_auc(list(corrupted), list(clean))
        out[f"auc_{k}"] = round(auc, 3) if auc is not None else None
        out[f"clean_{k}_mean_weight"] = round(float(clean.mean()), 3) if len(clean) else None
        out[f"clean_{k}_below_half"] = f"{int((clean < 0.5).sum())}/{len(clean)}"
    for k, h in CORRUPTIONS:
        sel = (kind == k) & (how == h)
        out[f"found {k}:{h}"] = f"{int((weights[sel] < 0.5).sum())}/{int(sel.sum())}"
    return out


def raw_separation(run: dict) -> dict:
    """How well the raw per-pixel score, averaged over the last third of the updates,
    ranks each kind of corrupted box above the clean boxes of its own class (the fraction
    of such same-class pairs ranked the right way; 0.5: no information).  No calibration
    with one centre and unit per class can do better than this within a class."""
    late = run["weak"][-max(1, len(run["steps"]) // 3) :].mean(0)
    boxes = run["kind"] == "box"
    cls = run["groups"]
    out = {}
    for how in ("loose", "shifted", "background"):
        right = pairs = 0.0
        for i in np.flatnonzero(boxes & (run["how"] == how)):
            clean = late[boxes & (run["bad"] == 0) & (cls == cls[i])]
            right += (late[i] > clean).sum() + 0.5 * (late[i] == clean).sum()
            pairs += len(clean)
        out[f"raw_late_separation box:{how}"] = round(right / pairs, 3) if pairs else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dumps", type=Path, nargs="+", help=".npz files of dii_phases.py --dump")
    ap.add_argument("--steps", type=int, default=2000, help="the recorded runs' training steps")
    ap.add_argument("--out", type=Path, default=OUT / "dii_replay.jsonl")
    ap.add_argument(
        "--rule",
        nargs="*",
        default=None,
        metavar="QUANTILE:MARGIN[:OWN]",
        help="replay the package's calibration with these constants instead of the borrowing variants",
    )
    ap.add_argument(
        "--box-evidence",
        action="store_true",
        help="replay ways of reading a box's evidence off its claimed pixels (dumps of runs by the mean, "
        "made at c35b6f5 or later) instead of the borrowing variants",
    )
    ap.add_argument(
        "--margins",
        type=float,
        nargs="+",
        default=[1.0, 1.5],
        help="with --box-evidence, also every quantile at each of these margins",
    )
    args = ap.parse_args()
    variants = {"package": calibration.calibrated}
    if args.rule is not None:
        for rule in args.rule:
            q, m, *own = (float(v) for v in rule.split(":"))
            o = own[0] if own else None
            variants[f"quantile={q},margin={m},own={o}"] = functools.partial(
                calibration.calibrated, quantile=q, margin=m, own=o
            )
    else:
        for mode in ("pooled", "relative", "one-pool"):
            variants[mode] = borrowing(mode)
            variants[f"{mode}-always"] = borrowing(mode, always=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path in args.dumps:
        run = dict(np.load(path))
        controls = {int(g): int((run["ctrl_groups"] == g).sum()) for g in np.unique(run["ctrl_groups"])}
        box_margin = float(run.get("box_margin", np.nan))  # boxes' own margin in the run, if any
        variants["package"] = functools.partial(
            calibration.calibrated, box_margin=None if np.isnan(box_margin) else box_margin
        )
        runs_variants = {n: with_calibration(run, c) for n, c in variants.items()}
        if str(run.get("box_evidence")) == "both":  # the run's own rule: the lower of the mean's and the quantile's
            runs_variants["package"] = lower_of_both(run, box_margin)
        if args.box_evidence:
            runs_variants = {"package": runs_variants["package"]} | box_evidence_variants(run, args.margins)
        for name, calibrated_at in runs_variants.items():
            weights = replay(run, calibrated_at, args.steps)
            record = {"dump": path.name, "variant": name, "controls_per_group": controls}
            if name == "package":
                record["replay_max_error"] = float(np.abs(weights - run["weights"]).max())
                record |= raw_separation(run)
            record |= summary(run, weights) | {"commit": git_rev()}
            print(json.dumps(record), flush=True)
            with args.out.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
