"""Test Dice along one run: where, in the steps of a run, the held-out score rises or falls.

Builds the same projects as ``label_efficiency.py`` (same data sets, budgets, corruption and
seeds) and evaluates the held-out images every ``--every`` steps while the run trains; the
predicting networks are copied for each evaluation, so the run itself is not touched.  With
learned weights, each evaluation also records the box and scribble AUC and the clean and
corrupted mean weights.  One JSON line per run goes to ``--out``.

    python benchmarks/curve.py --dataset dsb2018 --method dii+dcr --steps 600 --every 50
    python benchmarks/curve.py --plot curves.png --out benchmarks/results/curve_dsb2018_37e74a0.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev, machine  # noqa: E402
from label_efficiency import (  # noqa: E402
    ROLE,
    SHARED,
    build_project,
    config_options,
    kind_scores,
    load_dataset,
    truth_of,
)

from napari_hybridseg import protocol as ev  # noqa: E402
from napari_hybridseg.config import TrainConfig  # noqa: E402
from napari_hybridseg.evaluate import dice_iou  # noqa: E402
from napari_hybridseg.inference import predict_image  # noqa: E402
from napari_hybridseg.training import TrainingLoop  # noqa: E402


def judge(loop, corrupted) -> dict:
    """AUC and mean weights of clean and corrupted weak annotations, by kind."""
    judged = [(w, *truth_of(w, corrupted)) for w in loop.weights.table()]
    out = {}
    for kind in ("box", "scribble"):
        auc, out[f"clean_{kind}"], out[f"corrupted_{kind}"] = kind_scores(judged, kind)
        out[f"auc_{kind}"] = None if auc is None else round(auc, 3)
    backgrounds = [w.weight for w, _, _, k in judged if k not in ("box", "scribble", "background stroke")]
    out["background"] = round(float(np.mean(backgrounds)), 3) if backgrounds else None
    return out


def held_out_scores(nets, held_out) -> dict:
    """Mean Dice over the held-out images, and the predicted foreground area over the true
    one (above 1: the prediction spills over; below: it misses object pixels)."""
    dice, predicted, true = [], 0, 0
    for image, axes, truth in held_out:
        mask = predict_image(nets, image, axes).probability > 0.5
        dice.append(dice_iou(mask, truth)[0])
        predicted, true = predicted + int(mask.sum()), true + int((truth > 0).sum())
    return {"dice": round(float(np.mean(dice)), 4), "area_ratio": round(predicted / max(true, 1), 3)}


def label(record: dict) -> str:
    """A run's name in a plot's legend: its method and what it changed."""
    parts = [record["method"]] + [f"{k}={v}" for k, v in record["options"].items()]
    if not record["options"]:
        parts.append(f"defaults of {record['commit']}")
    if record["corrupt"] != 0.3:
        parts.append(f"{record['corrupt']:.0%} corrupted")
    return ", ".join(parts)


def plot(records: list[dict], path: Path) -> None:
    """Held-out Dice and predicted-over-true foreground area against the step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for r in records:
        steps = [p["step"] for p in r["curve"]]
        top.plot(steps, [p["dice"] for p in r["curve"]], marker=".", label=label(r))
        if all("area_ratio" in p for p in r["curve"]):
            bottom.plot(steps, [p["area_ratio"] for p in r["curve"]], marker=".")
    first = records[0]
    top.set_title(f"{first['dataset']}, {first['budget']}, seed {first['seed']}: held-out images along the run")
    top.set_ylabel("Dice")
    handles, labels = top.get_legend_handles_labels()
    bottom.legend(handles, labels, fontsize=8, loc="upper right")  # the upper panel's lows stay visible
    bottom.axhline(1.0, color="grey", lw=0.8)
    bottom.set_ylabel("predicted / true foreground")
    bottom.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=list(ROLE), default="dsb2018")
    ap.add_argument("--budget", choices=["10pct", "few"], default="10pct")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="dii+dcr", help="dii+dcr, dii, dcr, naive, strong-only or full")
    ap.add_argument("--box-target", default="projection")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--corrupt", type=float, default=0.3)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra TrainConfig options")
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=OUT / "curve.jsonl")
    ap.add_argument("--plot", type=Path, default=None, help="draw the runs recorded in --out to this PNG, and stop")
    args = ap.parse_args()
    if args.plot is not None:
        plot([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()], args.plot)
        return
    torch.set_num_threads(args.threads)
    train, test = load_dataset(args.dataset, args.seed, args.data)
    hybrid, full, corrupted = build_project(train, args.budget, args.seed, args.corrupt)
    extra = config_options(args.set)
    method = "strong-only" if args.method == "full" else args.method
    cfg = TrainConfig(method=method, box_target=args.box_target, steps=args.steps, seed=args.seed, **extra)
    loop = TrainingLoop(full if args.method == "full" else hybrid, cfg)
    held_out = [(img, "yx", lab) for _, img, lab in test]
    curve, losses, t0 = [], {}, time.perf_counter()
    for event in loop.events():
        if isinstance(event, ev.ErrorEvent):
            raise RuntimeError(event.traceback)
        if isinstance(event, ev.StepEvent):
            for k, v in event.losses.items():
                losses.setdefault(k, []).append(v)
            if event.step % args.every == 0 or event.step == args.steps:
                point = {"step": event.step, **held_out_scores(cfg.predictors(loop.state.nets), held_out)}
                point.update({k: round(float(np.mean(v)), 5) for k, v in losses.items()})
                losses = {}
                if loop.learns_weights and loop.state.step >= loop.schedule.warmup:
                    point.update(judge(loop, corrupted))
                curve.append(point)
                print(json.dumps(point), flush=True)
    record = {
        "dataset": args.dataset,
        "role": ROLE[args.dataset],
        "budget": args.budget,
        "seed": args.seed,
        "method": args.method,
        "box_target": args.box_target,
        "steps": args.steps,
        "corrupt": args.corrupt,
        "options": extra,
        "curve": curve,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine(),
        "commit": git_rev(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
