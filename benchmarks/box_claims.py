"""How far a judgement of boxes by the pixels they claim can go, with every pixel known.

DII scores a box by what it asserts about pixels (by default: the ellipse inscribed in
it is the box's class).  This script asks how well corrupted boxes could be told from
clean ones by a judge who knows the true class of every pixel, i.e. the ceiling of any
judgement of that kind, without training anything.  For the simulated boxes of the
label-efficiency benchmark (same data, seeds, budgets and corruptions) and of the medical
benchmark, it reports the ROC AUC (probability that a corrupted box scores lower than a
clean one) of four oracle scores:

- ``ellipse``: the share of the box's inscribed ellipse that truly is its class (the truth
  of DII's default claim);
- ``filled``: the share of the whole box that is (the truth of the paper's claim);
- ``extent``: the share of the box's rows and columns in which its class appears (the
  truth of ``dii_box_target="extent"``'s claim, the tightness a projection loss asks for);
- ``object``: the IoU of the box with the box of the object it overlaps most, which
  needs to know where one object ends and the next begins;
- ``split``: the same, with objects found without knowing them: the class mask cut into
  the basins of its distance transform, one per peak standing a tenth of the median
  object half-width above its saddles (how ``dii_box_fit``, tried at commit ``d369869``,
  cut the networks' predictions);
- ``nest``: no pixel at all, only the user's other boxes: one minus the largest share of
  another box of the same class and slice, at most half this box's area, that lies inside
  it (a box two or three times too large among touching objects encloses its
  neighbours' boxes); and ``ellipse+nest``, the lower of ``ellipse`` and ``nest``: the
  ceiling of DII's claim joined by that cue;
- ``size``: no pixel either, only the full masks: 0 for a box of more than ``SIZE_FACTOR``
  times the area of the largest bounding box of an object of its class in the full masks
  (the controls' boxes), 1 otherwise; and ``ellipse+size``, the lower of ``ellipse`` and it.

    python benchmarks/box_claims.py [--sets bbbc007 dsb2018 scellseg synthetic elongated medical]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev  # noqa: E402
from label_efficiency import ROLE, SHARED, build_project, load_dataset, roc_auc  # noqa: E402

from napari_hybridseg.data.targets import inscribed_ellipse  # noqa: E402

SETS = ("bbbc007", "dsb2018", "scellseg", "synthetic", "elongated", "medical")
JUDGES = ("ellipse", "filled", "extent", "object", "split", "nest", "ellipse+nest", "size", "ellipse+size")
PEAK_SHARE = 0.1  # of the median object half-width: how far a peak must stand above its saddles
NESTED = 0.5  # a box encloses another of at most this share of its area
SIZE_FACTOR = 3.0  # a box larger than this many times its class's largest control box is judged too large


def split_objects(mask: np.ndarray, half_width: float) -> np.ndarray:
    """Objects of a class mask found without knowing them (see ``split`` above)."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    dist = ndi.distance_transform_edt(mask)
    markers, _ = ndi.label(h_maxima(dist, max(PEAK_SHARE * half_width, 0.5)))
    return watershed(-dist, markers, mask=mask)


def half_width(objects: list[np.ndarray]) -> float:
    """The median over objects of their largest distance from their border."""
    peaks = []
    for labels in objects:
        ids = np.unique(labels[labels > 0])
        peaks += list(ndi.maximum(ndi.distance_transform_edt(labels > 0), labels, ids))
    return float(np.median(peaks))


def _object_iou(win: np.ndarray, objects: np.ndarray, box) -> float:
    """IoU of ``box`` with the box of the object holding most of its class pixels ``win``."""
    ids, counts = np.unique(objects[box.y0 : box.y1, box.x0 : box.x1][win], return_counts=True)
    if not ids.size or ids[counts.argmax()] == 0:
        return 0.0
    ys, xs = np.nonzero(objects == ids[counts.argmax()])
    oy0, ox0, oy1, ox1 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
    inter = max(0, min(oy1, box.y1) - max(oy0, box.y0)) * max(0, min(ox1, box.x1) - max(ox0, box.x0))
    return float(inter / ((oy1 - oy0) * (ox1 - ox0) + box.area - inter))


def enclosure(box, boxes) -> float:
    """The largest share of another box of ``boxes`` (same class and slice, at most
    ``NESTED`` of ``box``'s area) that lies inside ``box``."""
    best = 0.0
    for o in boxes:
        if o is box or o.cls != box.cls or o.z != box.z or not 0 < o.area <= NESTED * box.area:
            continue
        inter = max(0, min(o.y1, box.y1) - max(o.y0, box.y0)) * max(0, min(o.x1, box.x1) - max(o.x0, box.x0))
        best = max(best, inter / o.area)
    return best


def with_pixel_free_judges(scores: dict[str, float], box, boxes, largest: dict[int, int]) -> dict[str, float]:
    """``scores`` with the judges that read no pixel; ``largest``: per class, the area of
    the largest control box."""
    nest = 1.0 - enclosure(box, boxes)
    size = float(box.cls not in largest or box.area <= SIZE_FACTOR * largest[box.cls])
    return scores | {
        "nest": nest,
        "ellipse+nest": min(scores["ellipse"], nest),
        "size": size,
        "ellipse+size": min(scores["ellipse"], size),
    }


def largest_boxes(planes) -> dict[int, int]:
    """Per class, the area of the largest bounding box of one of its objects (connected
    components of an instance or class map) in ``planes``, 2D label maps of full masks."""
    largest: dict[int, int] = {}
    for labels, classes in planes:
        for sl, k in zip(ndi.find_objects(labels), range(1, int(labels.max()) + 1)):
            if sl is not None:
                c = int(np.bincount(classes[sl][labels[sl] == k]).argmax())
                area = (sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start)
                largest[c] = max(largest.get(c, 0), area)
    return largest


def oracle_scores(classes: np.ndarray, objects: np.ndarray, box, split: np.ndarray | None = None) -> dict[str, float]:
    """The oracle scores of one box on one 2D plane: ``classes`` holds each pixel's
    class, ``objects`` each pixel's object id (0 for none); ``split`` (optional) the
    objects found without knowing them."""
    win = classes[box.y0 : box.y1, box.x0 : box.x1] == box.cls
    ellipse = inscribed_ellipse(box.y1 - box.y0, box.x1 - box.x0)
    extent = (win.any(axis=1).sum() + win.any(axis=0).sum()) / (win.shape[0] + win.shape[1])
    out = {
        "ellipse": float(win[ellipse].mean()),
        "filled": float(win.mean()),
        "extent": float(extent),
        "object": _object_iou(win, objects, box),
    }
    if split is not None:
        out["split"] = _object_iou(win, split, box)
    return out


def boxes_2d(name: str, seed: int, budget: str):
    """``(scores, corrupted, how)`` of every box the label-efficiency benchmark simulates."""
    objects = "elongated" if name == "elongated" else "round"
    train, _ = load_dataset("synthetic" if name == "elongated" else name, seed, SHARED, objects)
    project, _, corrupted = build_project(train, budget, seed)
    labels = {n: lab for n, _, lab in train}
    width = half_width(list(labels.values()))
    strong = [item.strong for item in project.images.values() if item.strong is not None]
    largest = largest_boxes((lab, (lab > 0).astype(np.int32)) for lab in strong)
    out = []
    for item in project.images.values():
        if not item.boxes:
            continue
        objects = labels[item.name]
        classes = (objects > 0).astype(np.int32)
        split = split_objects(classes > 0, width)
        for box in item.boxes:
            bad, how = corrupted.get((item.name, str(box.id), "box"), (False, "none"))
            scores = oracle_scores(classes, objects, box, split)
            out.append((with_pixel_free_judges(scores, box, item.boxes, largest), bad, how))
    return out


def boxes_medical(seed: int, budget: str):
    """The same for the boxes of the medical benchmark (objects: each class's connected
    components on the box's slice)."""
    import medical

    if why := medical.missing():
        print(why)
        return []
    (_, classes), _ = medical.load_halves()
    strong, boxes, _, truth = medical.simulate(classes, budget, seed)
    planes = [(z, c) for z in strong for c in np.unique(classes[z])[1:]]
    largest = largest_boxes((ndi.label(classes[z] == c)[0], np.where(classes[z] == c, c, 0)) for z, c in planes)
    out = []
    for box in boxes:
        plane = classes[box.z]
        objects, _ = ndi.label(plane == box.cls)
        bad, how = truth[("train", str(box.id), "box")]
        out.append((with_pixel_free_judges(oracle_scores(plane, objects, box), box, boxes, largest), bad, how))
    return out


def summary(rows) -> dict:
    bad = [r for r in rows if r[1]]
    good = [r for r in rows if not r[1]]
    record = {"boxes": len(rows), "corrupted": len(bad)}
    for judge in (j for j in JUDGES if j in rows[0][0]):
        auc = roc_auc([r[0][judge] for r in bad], [r[0][judge] for r in good])
        record[f"auc_{judge}"] = round(auc, 3) if auc is not None else None
    for how in sorted({r[2] for r in rows}):
        shares = [r[0]["ellipse"] for r in rows if r[2] == how]
        record[f"ellipse_share_{how}"] = round(float(np.median(shares)), 2)
        if "split" in rows[0][0]:  # the share a judge would lower that lowers boxes fitting worse than 0.5
            below = [r[0]["split"] < 0.5 for r in rows if r[2] == how]
            record[f"split_below_half_{how}"] = round(float(np.mean(below)), 2)
        # the share of each kind that encloses most (0.8) of a smaller box
        record[f"nest_enclosing_{how}"] = round(float(np.mean([r[0]["nest"] <= 0.2 for r in rows if r[2] == how])), 2)
        # the share of each kind that the size judge lowers
        record[f"size_lowered_{how}"] = round(float(np.mean([r[0]["size"] == 0 for r in rows if r[2] == how])), 2)
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budgets", nargs="+", default=["10pct", "few"], choices=["10pct", "few"])
    ap.add_argument("--out", type=Path, default=OUT / "box_claims.jsonl")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = "set        seed budget  boxes bad  AUC ellipse filled extent object split  nest ell+nest  size ell+size  "
    print(header + "median ellipse share (clean / loose / shifted / background); lowered by size (clean / loose)")
    for name in args.sets:
        for seed in args.seeds:
            for budget in args.budgets:
                rows = boxes_medical(seed, budget) if name == "medical" else boxes_2d(name, seed, budget)
                if not rows:
                    continue
                role = "medical" if name == "medical" else ROLE["synthetic" if name == "elongated" else name]
                rec = {"set": name, "role": role, "seed": seed, "budget": budget} | summary(rows)
                shares = " / ".join(
                    str(rec.get(f"ellipse_share_{h}", "-")) for h in ("none", "loose", "shifted", "background")
                )
                print(
                    f"{name:<10} {seed:>4} {budget:<6} {rec['boxes']:>5} {rec['corrupted']:>3}  "
                    f"{rec['auc_ellipse']:>11} {rec['auc_filled']:>6} {rec['auc_extent']:>6} "
                    f"{rec['auc_object']:>6} {rec.get('auc_split', '-'):>6} {rec['auc_nest']:>6} "
                    f"{rec['auc_ellipse+nest']:>6} {rec['auc_size']:>6} {rec['auc_ellipse+size']:>6}  {shares}; "
                    f"{rec.get('size_lowered_none', '-')} / {rec.get('size_lowered_loose', '-')}",
                    flush=True,
                )
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(rec | {"commit": git_rev()}) + "\n")


if __name__ == "__main__":
    main()
