"""Which way would DII move each weak annotation? The first-step direction at a trained model.

Trains one network on a label-efficiency project with the weights held at 1 (``dii`` with
no update before the end, i.e. ``naive``), then computes the DII hypergradient
``-g_S . g_k`` of every weak instance once, for each way of scoring boxes
(``dii_box_target``) and each gradient space (``dii_space``).  Adam's first step lowers
exactly the instances with a positive hypergradient, so the share of each kind of
corruption with a positive one shows what DII can and cannot see; the ROC AUC ranks
corrupted below clean boxes by the hypergradient itself.

    python benchmarks/dii_direction.py --dataset bbbc007 --budget 10pct --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev, machine  # noqa: E402
from label_efficiency import SHARED, build_project, load_dataset, roc_auc, truth_of  # noqa: E402

from napari_hybridseg import protocol as ev  # noqa: E402
from napari_hybridseg.config import DII_BOX_TARGETS, TrainConfig  # noqa: E402
from napari_hybridseg.training import TrainingLoop  # noqa: E402
from napari_hybridseg.training.classifier import gradient_space  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["synthetic", "bbbc007"], default="bbbc007")
    ap.add_argument("--budget", choices=["10pct", "few"], default="10pct")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT / "dii_direction.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, _ = load_dataset(args.dataset, args.seed, SHARED)
    project, _, corrupted = build_project(train, args.budget, args.seed)
    base = dict(method="dii", box_target="projection", steps=args.steps, seed=args.seed, dii_warmup=10**9)
    trained = TrainingLoop(project, TrainConfig(**base))
    for event in trained.events():
        if isinstance(event, ev.ErrorEvent):
            raise RuntimeError(event.traceback)
    state = trained.state.nets[0].state_dict()
    record = {"dataset": args.dataset, "budget": args.budget, "seed": args.seed, "steps": args.steps, "rows": []}
    for box_score in DII_BOX_TARGETS:
        loop = TrainingLoop(project, TrainConfig(**base, dii_box_target=box_score))
        net = loop.state.nets[0]
        net.load_state_dict(state)
        g_s, mean_feature = loop.scorer.strong_gradient(net)
        g_k = loop.scorer.weak_gradients(net)
        table = loop.weights.table()
        for space in ("centred", "weight", "weight+bias"):
            weak = gradient_space(g_k, 2, space, mean_feature)
            hyper = -(weak @ gradient_space(g_s[None], 2, space, mean_feature)[0])
            hyper = hyper.cpu().numpy()
            lowered: dict[str, list[bool]] = {}
            bad, good = [], []
            for h, w in zip(hyper, table):
                is_bad, how, kind = truth_of(w, corrupted)
                lowered.setdefault(f"{kind}:{how}", []).append(bool(h > 0))
                if kind == "box":
                    (bad if is_bad else good).append(-float(h))
            row = {
                "dii_box_target": box_score,
                "dii_space": space,
                "share_lowered": {k: round(float(np.mean(v)), 2) for k, v in sorted(lowered.items())},
                "count": {k: len(v) for k, v in sorted(lowered.items())},
                "auc_box": round(roc_auc(bad, good), 3) if bad and good else None,
            }
            record["rows"].append(row)
            print(json.dumps(row))
    record.update(machine=machine(), commit=git_rev())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
