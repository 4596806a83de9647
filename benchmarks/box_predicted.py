"""Do the networks' own predictions tell a loose box from a tight one?  (MR volume)

DII judges a box by the gradient its claim sends; ``box_claims.py`` shows that the truth
of that claim would separate the medical benchmark's boxes perfectly.  This script asks
the same of a trained network's *prediction*: it trains one run of ``medical.py``'s
project (2D, any method), predicts the training half, and scores every simulated box by
what the prediction says inside it:

- ``extent``: the share of the box's rows and columns that the predicted class reaches
  (a tight box: every one);
- ``ellipse``: the share of the box's inscribed ellipse predicted as its class;
- ``object``: the IoU of the box with the bounding box of the predicted components of its
  class that it meets.

Reported per run: the AUC of each score (corrupted vs clean, as elsewhere), its mean per
kind of corruption, and how often a loose box scores below a clean box of its own class.

    python benchmarks/box_predicted.py --methods strong-only naive --seeds 0 [--budget few]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev, machine, train  # noqa: E402
from box_claims import oracle_scores  # noqa: E402
from label_efficiency import roc_auc  # noqa: E402
from medical import load_halves, missing, project_for, simulate  # noqa: E402

from napari_hybridseg.config import TrainConfig  # noqa: E402
from napari_hybridseg.inference import predict_image  # noqa: E402

SCORES = ("extent", "ellipse", "object")


def box_scores(labels: np.ndarray, box) -> dict[str, float]:
    """The three scores of one box against a predicted class map ``labels`` (zyx): those of
    ``box_claims.oracle_scores`` with the prediction as the truth and, as the object, every
    predicted component of the box's class that the box meets."""
    plane = labels[box.z]
    components, _ = ndi.label(plane == box.cls)
    met = components[box.y0 : box.y1, box.x0 : box.x1]
    scores = oracle_scores(plane, np.isin(components, met[met > 0]).astype(np.int32), box)
    return {s: scores[s] for s in SCORES}


def summary(rows: list[dict]) -> dict:
    out = {}
    kinds = sorted({r["how"] for r in rows})
    for s in SCORES:
        auc = roc_auc([r[s] for r in rows if r["bad"]], [r[s] for r in rows if not r["bad"]])
        out[f"auc_{s}"] = round(auc, 3) if auc is not None else None
        out[f"{s}_by_kind"] = {k: round(float(np.mean([r[s] for r in rows if r["how"] == k])), 3) for k in kinds}
        pairs = [
            float(lo[s] < c[s]) + 0.5 * float(lo[s] == c[s])
            for lo in rows
            if lo["how"] == "loose"
            for c in rows
            if c["how"] == "none" and c["cls"] == lo["cls"]
        ]
        out[f"{s}_loose_below_clean_of_class"] = round(float(np.mean(pairs)), 3) if pairs else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["strong-only", "naive"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--budget", default="few", choices=["few", "10pct"])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT / "box_predicted.jsonl")
    args = ap.parse_args()
    if why := missing():
        print(why, file=sys.stderr)
        raise SystemExit(0)
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    (image, classes), _ = load_halves()
    for seed in args.seeds:
        strong, boxes, strokes, truth = simulate(classes, args.budget, seed)
        project = project_for(image, classes, strong, boxes, strokes, False)
        for method in args.methods:
            cfg = TrainConfig(method=method, network="2d", steps=args.steps, seed=seed, patch_size=64, batch_size=8)
            loop, seconds = train(project, cfg)
            tile = cfg.patch_side(loop.task.spatial_dims) * 2
            pred = predict_image(loop.state.nets, image, "zyx", loop.device, tile=tile, intensity=loop.task.intensity)
            labels = pred.labels()
            rows = []
            for box in boxes:
                bad, how = truth[("train", str(box.id), "box")]
                rows.append({"cls": int(box.cls), "bad": bool(bad), "how": how} | box_scores(labels, box))
            record = {"seed": seed, "budget": args.budget, "method": method, "steps": args.steps}
            record |= summary(rows) | {"seconds": round(seconds, 1), "machine": machine(), "commit": git_rev()}
            print(json.dumps(record), flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
