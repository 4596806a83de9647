"""Can a network trained on the full masks' object edges tell loose boxes among touching
objects?

``box_claims.py`` found that a box drawn two or three times too large among touching cells
claims mostly cell, so no judgement by the class of its pixels can single it out; a judge
who knows where one object ends and the next begins (its ``object`` oracle) tells every
corrupted box.  This probe asks whether a network can supply that knowledge from the strong
budget alone: it trains strong-only on the benchmark's masked image with two classes,
object interiors and object edges (the pixels within ``EDGE`` px of another object or the
background, from the instance masks), predicts every weak training image, cuts the predicted
foreground into objects (a watershed of the interior probability from the connected interiors)
and judges each simulated box by the IoU of its box with the box of the predicted object
holding most of its predicted foreground (``box_claims._object_iou``).

Reported per set and seed: how well predicted objects match the true ones (F1 at IoU 0.5,
on the weak training images), the box AUC of that judgement and the share of each kind of
box it would lower (IoU below 0.5), beside the ``split`` judgement (the true class mask cut
at distance-transform saddles) and the ``object`` oracle.  No DII, no weights: a ceiling
for a judgement that this network could feed, not a run of the method.

    python benchmarks/instance_probe.py --sets scellseg dsb2018 bbbc007 --seeds 0 1 2
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
from box_claims import _object_iou, half_width, oracle_scores, split_objects  # noqa: E402
from label_efficiency import SHARED, build_project, load_dataset, roc_auc  # noqa: E402

from napari_hybridseg.annotations import ImageAnnotations, LabelClasses, Project  # noqa: E402
from napari_hybridseg.config import TrainConfig  # noqa: E402
from napari_hybridseg.inference import predict_image  # noqa: E402

EDGE = 2  # px: how far inside an object its edge reaches


def edge_classes(objects: np.ndarray) -> np.ndarray:
    """Class map of an instance mask: 1 object interior, 2 object edge (within ``EDGE`` px
    of another object or the background), 0 background."""
    from skimage.segmentation import find_boundaries

    edge = find_boundaries(objects, mode="inner")
    edge = ndi.binary_dilation(edge, iterations=EDGE - 1) if EDGE > 1 else edge
    out = (objects > 0).astype(np.int32)
    out[edge & (objects > 0)] = 2
    return out


def predicted_objects(class_probability: np.ndarray) -> np.ndarray:
    """Objects from interior and edge probabilities ``(2, H, W)``: connected interiors as
    seeds, grown over the predicted foreground."""
    from skimage.segmentation import watershed

    interior, edge = class_probability
    background = 1.0 - interior - edge
    fg = background < 0.5
    seeds, _ = ndi.label((interior > edge) & (interior > background))
    return watershed(-interior, seeds, mask=fg)


def match_f1(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> tuple[int, int, int]:
    """``(matched, predicted, true)`` objects, matched at IoU above ``iou`` (one to one)."""
    p_ids, t_ids = np.unique(pred[pred > 0]), np.unique(truth[truth > 0])
    both = (pred > 0) & (truth > 0)
    pairs, inter = np.unique(np.stack([pred[both], truth[both]]), axis=1, return_counts=True)
    p_area = dict(zip(*np.unique(pred[pred > 0], return_counts=True)))
    t_area = dict(zip(*np.unique(truth[truth > 0], return_counts=True)))
    matched = 0
    for (p, t), n in zip(pairs.T, inter):
        matched += n / (p_area[p] + t_area[t] - n) > iou
    return int(matched), len(p_ids), len(t_ids)


def probe(name: str, seed: int, steps: int, dump: Path | None = None) -> dict:
    train_set, _ = load_dataset(name, seed, SHARED, "round")
    hybrid, _, corrupted = build_project(train_set, "10pct", seed)
    strong_name, strong_image, strong_objects = train_set[0]
    project = Project(
        [ImageAnnotations(strong_name, strong_image, strong=edge_classes(strong_objects))],
        classes=LabelClasses(("interior", "edge")),
    )
    loop, seconds = train(project, TrainConfig(method="strong-only", steps=steps, seed=seed))
    labels = {n: lab for n, _, lab in train_set}
    width = half_width(list(labels.values()))
    rows, counts, kept = [], np.zeros(3, int), {}
    for (image_name, image, objects), item in zip(train_set[1:], list(hybrid.images.values())[1:]):
        pred = predict_image(loop.state.nets, image, "yx")
        kept[image_name] = pred.class_probability
        found = predicted_objects(pred.class_probability)
        counts += match_f1(found, objects)
        classes = (objects > 0).astype(np.int32)
        split = split_objects(classes > 0, width)
        for box in item.boxes:
            bad, how = corrupted.get((image_name, str(box.id), "box"), (False, "none"))
            scores = oracle_scores(classes, objects, box, split)
            win = found[box.y0 : box.y1, box.x0 : box.x1] > 0
            scores["learnt"] = _object_iou(win, found, box)
            rows.append((scores, bad, how))
    if dump is not None:  # the predictions, to try other ways of cutting them into objects
        np.savez_compressed(dump / f"instance_probe_{name}_{seed}.npz", **kept)
    matched, n_pred, n_true = counts
    record = {
        "set": name,
        "seed": seed,
        "steps": steps,
        "seconds": round(seconds, 1),
        "object_f1": round(2 * matched / max(1, n_pred + n_true), 3),
        "boxes": len(rows),
        "machine": machine(),
        "commit": git_rev(),
    }
    bad = [r for r in rows if r[1]]
    good = [r for r in rows if not r[1]]
    for judge in ("learnt", "split", "object", "ellipse"):
        auc = roc_auc([r[0][judge] for r in bad], [r[0][judge] for r in good])
        record[f"auc_{judge}"] = round(auc, 3) if auc is not None else None
    for how in sorted({r[2] for r in rows}):
        record[f"learnt_below_half_{how}"] = round(
            float(np.mean([r[0]["learnt"] < 0.5 for r in rows if r[2] == how])), 2
        )
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["scellseg"], choices=["scellseg", "dsb2018", "bbbc007"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", type=Path, default=OUT / "instance_probe.jsonl")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dump", type=Path, default=None, help="folder to keep each run's predicted probabilities in")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.sets:
        for seed in args.seeds:
            record = probe(name, seed, args.steps, args.dump)
            print(json.dumps(record), flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
