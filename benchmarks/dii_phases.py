"""When does DII's evidence point the right way? The hypergradient of every weight update
of one run, split into the first, middle and last third of the updates.

Trains one run that learns weights and keeps ``dL_S/dgamma_k`` of every weak annotation
at every update.  For each phase, the ROC AUC of the summed hypergradient (an
annotation whose sum is larger would be lowered more) separates corrupted from clean
boxes and scribbles; 0.5 is no information, below 0.5 the evidence is backwards.  The
final weights' AUC is reported beside it.  ``--dump`` keeps every update's scores for
``dii_replay.py``; ``--box-pixels`` says where each box's evidence comes from.
Data: a label-efficiency set (with any simulated annotator) or the medical volume
(``--dataset medical``, needs mricron-data).

    python benchmarks/dii_phases.py --dataset medical --method dii --steps 600
    python benchmarks/dii_phases.py --dataset medical --method dii+dcr --steps 2000 --box-pixels --dump few_s0.npz
    python benchmarks/dii_phases.py --dataset bbbc007 --annotator thin --steps 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev, machine  # noqa: E402
from label_efficiency import ROLE, SHARED, build_project, load_dataset, roc_auc, truth_of  # noqa: E402

from napari_hybridseg import protocol as ev  # noqa: E402
from napari_hybridseg.config import DII_BOX_EVIDENCE, DII_LOGITS, DII_REFERENCES, TrainConfig  # noqa: E402
from napari_hybridseg.synthetic import ANNOTATORS  # noqa: E402
from napari_hybridseg.training import TrainingLoop  # noqa: E402
from napari_hybridseg.training.box_evidence import at_quantile  # noqa: E402
from napari_hybridseg.training.calibration import calibrated  # noqa: E402
from napari_hybridseg.training.classifier import gradient_space  # noqa: E402
from napari_hybridseg.training.dii import DiiScorer  # noqa: E402

PHASES = ("first", "middle", "last")
PIXEL_QUANTILES = (0.3, 0.5, 0.7)  # of a box's per-pixel evidence, beside its mean (--box-pixels)
# --dump: every box's score also at these multiples of the quantile dii_box_evidence="quantile" reads
DUMP_QUANTILE_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def medical_project(seed: int, budget: str):
    """The medical benchmark's training half: ``(project, truth(weight) -> (bad, kind))``."""
    import medical

    if why := medical.missing():
        raise SystemExit(why)
    (image, classes), _ = medical.load_halves()
    strong, boxes, strokes, truth = medical.simulate(classes, budget, seed)
    project = medical.project_for(image, classes, strong, boxes, strokes, full=False)

    def judge(w):
        bad, how = truth.get((w.image, w.instance, w.kind), (None, None))
        return bad, w.kind, how

    return project, judge, dict(patch_size=64, patch_size_3d=32, batch_size=8), {}  # as medical.py trains


def label_efficiency_project(dataset: str, seed: int, budget: str, annotator: str, data: Path, objects="round"):
    train, _ = load_dataset(dataset, seed, data, objects)
    project, _, corrupted = build_project(train, budget, seed, annotator=annotator)

    def judge(w):
        bad, how, kind = truth_of(w, corrupted)
        return (bad if kind in ("box", "scribble") else None), kind, how

    return project, judge, {}, {name: lab for name, _, lab in train}


@torch.no_grad()
def box_pixels(loop, judged, weak_truths) -> dict:
    """Where the evidence on a box comes from, at the end of a run: for every box and every
    control box, the share of the pixels it claims (``dii_box_target`` ``ellipse`` or
    ``filled``) that truly are its class, and the per-pixel evidence on those pixels and on
    the others, averaged over the networks.  At zero logits a claimed pixel's evidence is
    ``(G_c - mean_k G_k) . (f - mu)`` in centred space (``G`` the strong gradient per class),
    negative where it agrees with the full masks.  Summarised by kind of box as medians;
    ``auc``: how well a box's mean evidence (DII's score) and quantiles of its pixels'
    evidence separate corrupted from clean weak boxes.  ``weak_truths``: the true class
    map of every weak sample."""
    sc = loop.scorer
    if loop.config.dii_box_target not in ("ellipse", "filled") or loop.config.dii_space != "centred":
        raise SystemExit("--box-pixels reads the ellipse or filled claim in centred space")
    if loop.config.dii_logits != "zero":
        raise SystemExit("--box-pixels reads the evidence at zero logits")
    rows: dict[tuple[str, int], list] = {}
    for scorer, truths, label in (
        (sc, weak_truths, "weak"),
        (sc.control_scorer, sc.controls.strong_targets, "control"),
    ):
        cls_of = dict(zip(scorer.box_instance.tolist(), scorer.box_class.tolist()))
        for net in loop.state.nets:
            g_s, mu = sc.strong_gradient(net)
            g = gradient_space(g_s[None], net.n_outputs, "centred", mu).view(net.n_outputs, -1)
            towards = g - g.mean(0, keepdim=True)
            for s, truth in zip(scorer.tset.weak, truths):
                if s.boxmap is None or not (s.boxmap >= 0).any():
                    continue
                for _, img, _, ins, box, core, ext in scorer._tiles(s, truth.astype(np.int64)):
                    feats = scorer._features(net, img)[0]
                    evidence = torch.einsum("kf,f...->k...", towards, feats - mu.view(-1, *[1] * (feats.ndim - 1)))
                    claim = (box >= 0) & (ins >= 0)
                    if loop.config.dii_box_target == "ellipse":
                        claim &= core
                    evidence = evidence.cpu().numpy() / len(loop.state.nets)
                    for i in np.unique(ins[claim]).tolist():
                        sel = claim & (ins == i)
                        c = cls_of[i]
                        values = evidence[c][sel]
                        row = rows.setdefault((label, i), [c, None, ext[sel] == c])
                        row[1] = values if row[1] is None else row[1] + values
    summary: dict[str, list] = {}
    judged_boxes: list[tuple[bool, np.ndarray]] = []  # (corrupted, statistics) of every weak box
    for (label, i), (_, values, on) in rows.items():
        kind = "control" if label == "control" else f"box:{judged[i][2]}"
        off = values[~on]
        stats = (values.mean(), *np.quantile(values, PIXEL_QUANTILES))
        summary.setdefault(kind, []).append(
            (
                on.mean(),
                values[on].mean() if on.any() else np.nan,
                off.mean() if off.size else np.nan,
                (off < 0).mean() if off.size else np.nan,
                *stats,
            )
        )
        if label == "weak" and judged[i][0] is not None:
            judged_boxes.append((bool(judged[i][0]), np.array(stats)))
    stat_names = ("evidence", *(f"evidence_q{round(100 * q)}" for q in PIXEL_QUANTILES))
    names = ("share_of_its_class", "evidence_on_class", "evidence_off_class", "off_class_agreeing", *stat_names)
    # how well each statistic of a box's pixels ranks corrupted boxes above clean ones (higher: worse)
    bad = [st for b, st in judged_boxes if b]
    good = [st for b, st in judged_boxes if not b]
    auc = {n: roc_auc([-x[j] for x in bad], [-x[j] for x in good]) for j, n in enumerate(stat_names)}

    def median(col):
        col = col[np.isfinite(col)]
        return round(float(np.median(col)), 3) if col.size else None

    return {
        kind: {"n": len(v)} | {n: median(col) for n, col in zip(names, np.array(v, dtype=float).T)}
        for kind, v in sorted(summary.items())
    } | {"auc": {n: round(a, 3) if a is not None else None for n, a in auc.items()}}


def aucs(score: np.ndarray, judged: list[tuple[bool | None, str, str | None]]) -> dict[str, float | None]:
    """AUC per kind where a larger ``score`` means judged worse."""
    out = {}
    for kind in ("box", "scribble"):
        bad = [-s for s, (b, k, _) in zip(score, judged) if k == kind and b is True]
        good = [-s for s, (b, k, _) in zip(score, judged) if k == kind and b is False]
        auc = roc_auc(bad, good)
        out[kind] = round(auc, 3) if auc is not None else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=[*ROLE, "medical"], default="bbbc007")
    ap.add_argument("--objects", choices=["round", "elongated", "irregular"], default="round", help="synthetic only")
    ap.add_argument("--budget", choices=["10pct", "few"], default=None, help="default: 10pct, few for medical")
    ap.add_argument("--annotator", choices=list(ANNOTATORS), default="development")
    ap.add_argument("--method", choices=["dii", "dii+dcr"], default="dii")
    ap.add_argument(
        "--reference",
        choices=list(DII_REFERENCES),
        default=TrainConfig.dii_reference,
        help="what moves the weights (dii_reference); the other evidence is recorded beside it",
    )
    ap.add_argument("--logits", choices=list(DII_LOGITS), default=TrainConfig.dii_logits, help="dii_logits")
    ap.add_argument(
        "--box-evidence", choices=list(DII_BOX_EVIDENCE), default=TrainConfig.dii_box_evidence, help="dii_box_evidence"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=OUT / "dii_phases.jsonl")
    ap.add_argument(
        "--box-pixels",
        action="store_true",
        help="at the end, where each box's evidence comes from (pixels of its class or not), and how "
        "well quantiles of its pixels' evidence would rank the boxes",
    )
    ap.add_argument(
        "--dump",
        type=Path,
        default=None,
        help="also write every update's per-pixel scores of annotations and controls, with their groups "
        "and what each annotation truly is, to this .npz (to study other calibrations offline)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.dataset == "medical":
        budget = args.budget or "few"
        project, judge, extra, labels = medical_project(args.seed, budget)
    else:
        budget = args.budget or "10pct"
        project, judge, extra, labels = label_efficiency_project(
            args.dataset, args.seed, budget, args.annotator, args.data, args.objects
        )
    cfg = TrainConfig(
        method=args.method,
        network="2d",
        steps=args.steps,
        seed=args.seed,
        dii_reference=args.reference,
        dii_logits=args.logits,
        dii_box_evidence=args.box_evidence,
        **extra,
    )
    loop = TrainingLoop(project, cfg)
    # the evidence of both references at every update, whichever moves the weights; for --dump,
    # also every box's at several quantiles of its claim (when boxes can be read so)
    scorer = loop.scorer
    if scorer.control_scorer is None or args.dump is not None:
        evidence = "quantile" if args.dump is not None else cfg.dii_box_evidence
        probe = replace(cfg, dii_reference="controls", dii_box_evidence=evidence)
        scorer = DiiScorer(probe, loop.tset, len(loop.weights), scorer.multiple, loop.device)
    at_q = args.dump is not None and scorer.box_q is not None
    if at_q:
        box_q = scorer.box_q.clone(), scorer.control_scorer.box_q.clone()
        factors = torch.tensor(DUMP_QUANTILE_FACTORS, device=scorer.device)
        scorer.box_q, scorer.control_scorer.box_q = (q[:, None] * factors for q in box_q)
    at_history: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    box_margin = loop.scorer.box_margin  # the rule that moves the weights
    history: list[np.ndarray] = []
    weak_history: list[np.ndarray] = []
    ctrl_history: list[np.ndarray] = []
    calibrated_history: list[np.ndarray] = []
    steps: list[int] = []
    update = loop.dii_update

    def recorded():
        hyper = update()
        at_one = None  # each box's score at its quantile, if read
        if args.dump is None:
            weak, ctrl, *at = scorer.per_pixel(loop.state.nets)  # per pixel, the state the update saw
            at_one = at if at[0] is not None else None
        else:
            weak, ctrl, *at = scorer._evidence(loop.state.nets)
            weak, ctrl = weak / scorer.pixels, ctrl / scorer.control_scorer.pixels
            if at_q:
                for h, a in zip(at_history, at):
                    h.append(a.cpu().numpy())
                at_one = tuple(a[:, DUMP_QUANTILE_FACTORS.index(1.0)] for a in at)
        if at_one is not None and cfg.dii_box_evidence == "quantile":  # what the update saw: the quantile itself
            weak, ctrl = (at_quantile(v, a) for v, a in zip((weak, ctrl), at_one))
        history.append((weak * scorer.pixels).cpu().numpy())  # the raw hypergradient: summed
        weak_history.append(weak.cpu().numpy())
        ctrl_history.append(ctrl.cpu().numpy())
        if at_one is not None and cfg.dii_box_evidence == "both":  # the lower of the mean's and the quantile's
            judged = loop.scorer.judged(weak, ctrl, *at_one)
        else:
            judged = calibrated(
                weak, scorer.groups, ctrl, scorer.control_scorer.groups, own=cfg.dii_own_quantile, box_margin=box_margin
            )
        calibrated_history.append(judged.cpu().numpy())
        steps.append(loop.state.step)
        return hyper

    loop.dii_update = recorded
    for event in loop.events():
        if isinstance(event, ev.ErrorEvent):
            raise RuntimeError(event.traceback)
    table = loop.weights.table()
    judged = [judge(w) for w in table]
    pixels = None
    if args.box_pixels:
        if args.dataset == "medical":
            import medical

            (_, slices), _ = medical.load_halves()
            truths = [slices[s.z] for s in loop.scorer.tset.weak]
        else:
            truths = [(labels[s.name] > 0).astype(np.int64) for s in loop.scorer.tset.weak]
        pixels = box_pixels(loop, judged, truths)
    hyper, calib = np.array(history), np.array(calibrated_history)
    thirds = np.array_split(np.arange(len(hyper)), 3)
    weights = np.array([w.weight for w in table])

    def mean_weight(bad):
        sel = [i for i, (b, k, _) in enumerate(judged) if b is bad and k in ("box", "scribble")]
        return round(float(weights[sel].mean()), 3) if sel else None

    backgrounds = [w.weight for w in table if w.kind == "background"]
    late = calib[thirds[-1]].mean(0)  # the calibrated evidence of the last third, per annotation

    def spread(bad, kind):
        sel = [i for i, (b, k, _) in enumerate(judged) if b is bad and k == kind]
        return [round(float(q), 2) for q in np.percentile(late[sel], [10, 25, 50, 75, 90])] if sel else None

    record = {
        "dataset": args.dataset,
        "objects": args.objects if args.dataset == "synthetic" else None,
        "budget": budget,
        "annotator": args.annotator if args.dataset != "medical" else None,
        "method": args.method,
        "seed": args.seed,
        "steps": args.steps,
        "updates": len(hyper),
        # the training steps where each phase begins, and the last update's
        "phase_steps": [steps[int(idx[0])] for idx in thirds if len(idx)] + steps[-1:],
        "auc_by_phase": {p: aucs(hyper[idx].sum(0), judged) for p, idx in zip(PHASES, thirds)},
        "auc_all_updates": aucs(hyper.sum(0), judged),
        # the same for the evidence measured against the controls, and its sign
        "calibrated_auc_by_phase": {p: aucs(calib[idx].sum(0), judged) for p, idx in zip(PHASES, thirds)},
        "calibrated_sign_auc_by_phase": {p: aucs(np.sign(calib[idx]).sum(0), judged) for p, idx in zip(PHASES, thirds)},
        # percentiles 10/25/50/75/90 of that evidence, clean and corrupted (>0: lowered)
        "late_calibrated_percentiles": {
            f"{kind} {'corrupted' if bad else 'clean'}": spread(bad, kind)
            for kind in ("box", "scribble")
            for bad in (False, True)
        },
        "reference": args.reference,
        "logits": args.logits,
        "box_evidence": cfg.dii_box_evidence,
        "controls": len(scorer.control_scorer.groups),
        "auc_final_weights": aucs(-weights, judged),
        "mean_weight_clean": mean_weight(False),
        "mean_weight_corrupted": mean_weight(True),
        "mean_weight_backgrounds": round(float(np.mean(backgrounds)), 3) if backgrounds else None,
        "machine": machine(),
        "commit": git_rev(),
    }
    if pixels is not None:
        record["box_pixels_at_end"] = pixels
    if args.dump is not None:
        np.savez_compressed(
            args.dump,
            weak=np.array(weak_history),  # rows: updates; columns: the weights table's rows
            ctrl=np.array(ctrl_history),
            groups=scorer.groups.numpy(),
            ctrl_groups=scorer.control_scorer.groups.numpy(),
            ctrl_pixels=scorer.control_scorer.pixels.cpu().numpy(),
            pixels=scorer.pixels.cpu().numpy(),
            bad=np.array([np.nan if b is None else float(b) for b, _, _ in judged]),
            kind=np.array([k for _, k, _ in judged]),
            how=np.array([str(h) for _, _, h in judged]),
            weights=weights,
            steps=np.array(steps),
            box_evidence=np.array(cfg.dii_box_evidence),
            box_margin=np.array(np.nan if box_margin is None else box_margin),  # NaN: the rule's margin
            # with boxes read by their claimed pixels: per update, every box's (NaN: not a box) and
            # every control box's score at each factor times its quantile, and those quantiles
            **(
                dict(
                    weak_at=np.array(at_history[0]),
                    ctrl_at=np.array(at_history[1]),
                    box_q=box_q[0].cpu().numpy(),
                    ctrl_box_q=box_q[1].cpu().numpy(),
                    quantile_factors=np.array(DUMP_QUANTILE_FACTORS),
                )
                if at_q
                else {}
            ),
        )
    print(json.dumps(record), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
