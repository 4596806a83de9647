"""How the box fit (``dii_box_fit``) scores each kind of box along a run.

Trains one ``dii+dcr`` run of the label-efficiency benchmark with ``dii_box_fit`` on and,
at every weight update, keeps the fit of every weak box (its IoU with the predicted object
that holds most of its predicted pixels), the fits of the controls (the full masks'
objects, touching ones cut apart), and how many boxes of each kind the calibrated fit and
the whole score would lower.  Reports the first, middle and last update and the share of
each kind below weight 0.5 at the end.

    python benchmarks/box_fit_probe.py --dataset scellseg --budget 10pct --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev, machine, train  # noqa: E402
from label_efficiency import ROLE, SHARED, build_project, load_dataset, truth_of  # noqa: E402

from napari_hybridseg.config import TrainConfig  # noqa: E402
from napari_hybridseg.training import box_fit, dii  # noqa: E402
from napari_hybridseg.training.calibration import calibrated_fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=[*ROLE, "elongated"], default="scellseg")
    ap.add_argument("--budget", choices=["10pct", "few"], default="10pct")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--peak-share", type=float, default=box_fit.PEAK_SHARE, help="see training/box_fit.py")
    ap.add_argument("--out", type=Path, default=OUT / "box_fit_probe.jsonl")
    args = ap.parse_args()
    box_fit.PEAK_SHARE = args.peak_share
    torch.set_num_threads(1)
    name = "synthetic" if args.dataset == "elongated" else args.dataset
    train_set, _ = load_dataset(name, args.seed, SHARED, "elongated" if args.dataset == "elongated" else "round")
    project, _, corrupted = build_project(train_set, args.budget, args.seed)
    log = []
    scored = dii.DiiScorer.hypergradient

    def hypergradient(self, nets):
        out = scored(self, nets)
        if self.fitter is not None:
            fits, ctrl = self.instance_fits(), self.control_scorer.fitter.values(self.dist)
            log.append((fits, ctrl, calibrated_fit(fits, self.groups, ctrl, self.control_scorer.fitter.groups), out))
        return out

    dii.DiiScorer.hypergradient = hypergradient
    cfg = TrainConfig(method="dii+dcr", box_target="projection", steps=args.steps, seed=args.seed, dii_box_fit=True)
    loop, seconds = train(project, cfg)
    table = loop.weights.table()
    kinds = np.array(["{2}:{1}".format(*truth_of(w, corrupted)) for w in table])
    record = {"dataset": args.dataset, "budget": args.budget, "seed": args.seed, "peak_share": args.peak_share}
    record["updates"] = len(log)
    for u in sorted({0, len(log) // 2, len(log) - 1}):
        fits, ctrl, cal, score = (t.cpu().numpy() for t in log[u])
        row = {"controls": int((~np.isnan(ctrl)).sum()), "control_fit_q10_q25_q50_q75": []}
        row["control_fit_q10_q25_q50_q75"] = np.nanquantile(ctrl, [0.1, 0.25, 0.5, 0.75]).round(2).tolist()
        for kind in sorted({k for k in kinds if k.startswith("box")}):
            sel = kinds == kind
            row[kind] = {
                "n": int(sel.sum()),
                "fit_median": round(float(np.nanmedian(fits[sel])), 2),
                "fit_q25": round(float(np.nanquantile(fits[sel], 0.25)), 2),
                "fit_lowers": round(float(np.mean(cal[sel] > 0)), 2),
                "score_lowers": round(float(np.mean(score[sel] > 0)), 2),
            }
        record[f"update_{u}"] = row
    weights = np.array([w.weight for w in table])
    record["below_half_by_corruption"] = {k: round(float(np.mean(weights[kinds == k] < 0.5)), 2) for k in set(kinds)}
    record |= {"seconds": round(seconds, 1), "machine": machine(), "commit": git_rev()}
    print(json.dumps(record, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
