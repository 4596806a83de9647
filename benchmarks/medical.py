"""Several structures in a real MR volume, offline, from Debian's ``mricron-data``.

Two volumes, each with four compact structures of moderate size as classes and one
label id per structure and hemisphere:

- ``inia19`` (the default): the INIA19 macaque T1 template and its NeuroMaps labels at
  0.5 mm, reduced to 1 mm; the volume the engine's defaults were chosen on.
- ``colin27``: the human single-subject T1 (``ch2bet``, skull-stripped) and the AAL
  labels drawn on it, at 1 mm, reduced to 2 mm (caudate, putamen, thalamus,
  hippocampus); held out, to check those defaults on a brain they were not chosen on.

Each volume is split by hemisphere: the left half trains, the right half is the test
set, so no test voxel is ever seen in training (the few voxels of a left-hemisphere id that
lie in the test half count as background there: 8 of INIA19's label1, 10 of colin27's
thalamus).  On the training half, a few axial
slices (``few``: 3, or ``10pct``: a tenth of all slices) carry full masks, spread over
the slices that show a structure; the other slices that show a structure carry
boxes (even slices) or scribbles (odd slices) simulated from the labels, 30% of them
corrupted (boxes shifted, made 2-3x too large, or drawn on background; strokes drawn
on background).  Every method trains a 2D and a 3D network; reported: per-class Dice on
the test half, its mean, seconds per run, and the AUC of the learned weights
(corrupted vs clean) for boxes and for scribbles.

2000 steps by default: at 1000, even a 2D network trained on every slice's mask leaves
label45 at a Dice of 0 (BENCHMARKS.md section 6).

    python benchmarks/medical.py --seeds 0 1 2 [--steps 2000] [--networks 2d 3d] [--volume colin27]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev, machine, train  # noqa: E402
from label_efficiency import roc_auc  # noqa: E402

from napari_hybridseg.annotations import Box, ImageAnnotations, LabelClasses, Project  # noqa: E402
from napari_hybridseg.config import DII_BOX_TARGETS, INTENSITIES, TrainConfig  # noqa: E402
from napari_hybridseg.evaluate import class_dice_iou  # noqa: E402
from napari_hybridseg.images import ImageMeta  # noqa: E402
from napari_hybridseg.inference import predict_image  # noqa: E402
from napari_hybridseg.methods import METHODS as ENGINE_METHODS  # noqa: E402
from napari_hybridseg.task import spatial_dims_for  # noqa: E402
from napari_hybridseg.training.dcr import lambda_cr_for  # noqa: E402

TEMPLATES = Path("/usr/share/mricron/templates")


@dataclass(frozen=True)
class Volume:
    """A T1 volume and a label volume on its grid; ``structures``: the left hemisphere's
    label id of each class (the right one is ``id + right``), named ``names``; ``factor``:
    voxels per side averaged into one of the benchmark's grid."""

    t1: Path
    labels: Path
    structures: tuple[int, ...]
    names: tuple[str, ...]
    right: int
    factor: int


VOLUMES = {
    # single compact components of 4,000-19,000 voxels at 0.5 mm, chosen by size and
    # compactness (the NeuroMaps label volume comes without names)
    "inia19": Volume(
        TEMPLATES / "inia19-t1-brain.nii.gz",
        TEMPLATES / "inia19-NeuroMaps.nii.gz",
        (1, 196, 45, 215),
        ("label1", "label196", "label45", "label215"),
        1000,
        2,
    ),
    # AAL ids (aal.nii.txt): deep grey matter and the hippocampus, 7,000-9,000 voxels at 1 mm
    "colin27": Volume(
        TEMPLATES / "ch2bet.nii.gz",
        TEMPLATES / "aal.nii.gz",
        (71, 73, 77, 37),
        ("caudate", "putamen", "thalamus", "hippocampus"),
        1,
        2,
    ),
}
# engine options that medical.py's flags set, recorded in every run and part of its
# done-key, with what each concerns: a method that does neither runs alike whatever they are
OPTIONS = {"dii_box_target": "learns_weights", "cr_rampup": "co_regularises", "lambda_cr": "co_regularises"}
# the defaults of records written before an option was recorded
BEFORE = {"dii_box_target": "ellipse", "cr_rampup": 0.0, "lambda_cr": 1.0}
METHODS = ("strong-only", "naive", "dcr", "dii+dcr", "full")


def missing(volume: str = "inia19") -> str | None:
    """Why ``volume`` cannot be loaded here, in one line; ``None`` when it can."""
    v = VOLUMES[volume]
    for path in (v.t1, v.labels):
        if not path.is_file():
            return f"{path}: not found; install Debian's mricron-data (apt-get install mricron-data)"
    return None


@functools.lru_cache(maxsize=2)
def load_halves(volume: str = "inia19"):
    """``(train, test)``: each ``(image zyx float32, class map zyx uint8)`` on the
    benchmark's grid."""
    import nibabel as nib

    v = VOLUMES[volume]
    f = v.factor
    t1 = np.asarray(nib.load(v.t1).dataobj, np.float32)
    lab = np.asarray(nib.load(v.labels).dataobj).astype(np.int32)
    # the mean of each f x f x f block for the image, its first voxel's label
    t1 = t1[: t1.shape[0] // f * f, : t1.shape[1] // f * f, : t1.shape[2] // f * f]
    t1 = t1.reshape(t1.shape[0] // f, f, t1.shape[1] // f, f, t1.shape[2] // f, f).mean((1, 3, 5))
    lab = lab[::f, ::f, ::f][: t1.shape[0], : t1.shape[1], : t1.shape[2]]
    mid = t1.shape[0] // 2
    halves = []
    for xs, offset in ((slice(0, mid), 0), (slice(mid, None), v.right)):
        classes = np.zeros(lab[xs].shape, np.uint8)
        for c, k in enumerate(v.structures, start=1):
            classes[lab[xs] == k + offset] = c
        image = t1[xs]
        brain = np.nonzero(image > 0)
        crop = tuple(slice(int(a.min()), int(a.max()) + 1) for a in brain)
        # NIfTI (x, y, z) -> (z, y, x): axial slices first
        halves.append((np.ascontiguousarray(image[crop].transpose(2, 1, 0)), classes[crop].transpose(2, 1, 0).copy()))
    return halves


def _line(shape, p0, p1):
    from skimage.draw import line

    out = np.zeros(shape, bool)
    rr, cc = line(int(p0[0]), int(p0[1]), int(p1[0]), int(p1[1]))
    keep = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
    out[rr[keep], cc[keep]] = True
    return out


def _background_spot(fg, bh, bw, rng):
    h, w = fg.shape
    for _ in range(50):
        y0, x0 = int(rng.integers(0, max(1, h - bh))), int(rng.integers(0, max(1, w - bw)))
        if not fg[y0 : y0 + bh, x0 : x0 + bw].any():
            return y0, x0
    return None


def simulate(classes: np.ndarray, budget: str, seed: int, corrupt: float = 0.3):
    """The training half as a project: full masks on the budget's slices, boxes and
    strokes on the others; and ``{(image, instance, kind): (corrupted, how)}``."""
    rng = np.random.default_rng(seed)
    depth = classes.shape[0]
    shown = [z for z in range(depth) if classes[z].any()]
    n_strong = 3 if budget == "few" else max(4, round(0.1 * depth))  # 10pct: a tenth of all slices
    strong = sorted(int(z) for z in np.asarray(shown)[np.linspace(0, len(shown) - 1, n_strong + 2)[1:-1].astype(int)])
    boxes, strokes, truth = [], np.zeros(classes.shape, np.uint8), {}
    box_id = 1
    for z in (z for z in shown if z not in strong):
        plane, fg = classes[z], classes[z] > 0
        comps = [(c, m) for c in range(1, int(classes.max()) + 1) for m in _components(plane == c) if m.sum() >= 6]
        for c, m in comps:
            bad = rng.random() < corrupt
            if z % 2 == 0:  # a box
                ys, xs = np.nonzero(m)
                y0, x0, y1, x1 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
                how = "none"
                if bad:
                    how = ("shifted", "loose", "background")[int(rng.integers(3))]
                    bh, bw = y1 - y0, x1 - x0
                    if how == "shifted":
                        dy, dx = (int(rng.choice([-1, 1]) * rng.uniform(0.6, 1.0) * n) for n in (bh, bw))
                        y0, y1, x0, x1 = y0 + dy, y1 + dy, x0 + dx, x1 + dx
                    elif how == "loose":
                        f = rng.uniform(2.0, 3.0)
                        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
                        y0, y1, x0, x1 = (
                            int(cy - f * bh / 2),
                            int(cy + f * bh / 2),
                            int(cx - f * bw / 2),
                            int(cx + f * bw / 2),
                        )
                    else:
                        spot = _background_spot(fg, bh, bw, rng)
                        if spot is None:
                            continue
                        y0, x0, y1, x1 = spot[0], spot[1], spot[0] + bh, spot[1] + bw
                h, w = plane.shape
                y0, x0, y1, x1 = max(int(y0), 0), max(int(x0), 0), min(int(y1), h), min(int(x1), w)
                if y1 - y0 < 2 or x1 - x0 < 2:
                    continue
                boxes.append(Box(box_id, y0, x0, y1, x1, z=z, cls=c))
                truth[("train", str(box_id), "box")] = (bad, how)
                box_id += 1
            else:  # a stroke through the structure's core, or on background when corrupted
                core = ndi.binary_erosion(m, iterations=1)
                if core.sum() < 3:
                    continue
                ys, xs = np.nonzero(core)
                cy, cx, t = ys.mean(), xs.mean(), rng.uniform(0, np.pi)
                d = np.array([np.sin(t), np.cos(t)]) * max(2.0, 0.4 * np.sqrt(core.sum()))
                stroke = _line(plane.shape, (cy - d[0], cx - d[1]), (cy + d[0], cx + d[1])) & core
                if bad:
                    spot = _background_spot(fg, 6, 6, rng)
                    if spot is None:
                        continue
                    stroke = _line(plane.shape, spot, (spot[0] + 5, spot[1] + 5)) & ~fg
                stroke &= strokes[z] == 0
                if not stroke.any():
                    continue
                strokes[z][stroke] = 1 + c
                first = np.flatnonzero(stroke)[0]
                key = f"{1 + c}@{z}:{first // plane.shape[1]}:{first % plane.shape[1]}"
                truth[("train", key, "scribble")] = (bad, "background" if bad else "none")
        if z % 2 == 1:  # background strokes away from every structure
            far = ~ndi.binary_dilation(fg, iterations=3)
            for _ in range(2):
                p0 = rng.uniform([0, 0], plane.shape)
                line = _line(plane.shape, p0, p0 + rng.uniform(-0.3, 0.3, 2) * plane.shape) & far & (strokes[z] == 0)
                strokes[z][line] = 1
    return strong, boxes, strokes, truth


def _components(mask):
    lab, n = ndi.label(mask)
    return [lab == i for i in range(1, n + 1)]


def project_for(
    image, classes, strong_slices, boxes, strokes, full: bool, names: tuple[str, ...] = VOLUMES["inia19"].names
) -> Project:
    meta = ImageMeta(spacing=(1.0, 1.0, 1.0), format="nii.gz")
    names = LabelClasses(names)
    if full:
        return Project([ImageAnnotations("train", image, meta, strong=classes)], classes=names)
    item = ImageAnnotations(
        "train", image, meta, strong=classes, strong_slices=list(strong_slices), boxes=boxes, scribbles=strokes
    )
    return Project([item], classes=names)


def run(project, cfg, test, truth):
    loop, seconds = train(project, cfg)
    image, classes = test
    tile = cfg.patch_side(loop.task.spatial_dims) * 2
    pred = predict_image(loop.state.nets, image, "zyx", loop.device, tile=tile, intensity=loop.task.intensity)
    names = project.classes.names
    scores = class_dice_iou(pred.labels(), classes, len(names))
    dice = {name: round(v[0], 4) if v else None for name, v in zip(names, scores.values())}
    record = {"dice": dice, "mean_dice": round(float(np.mean([v for v in dice.values() if v is not None])), 4)}
    record["seconds"] = round(seconds, 1)
    record["intensity"] = loop.task.intensity.scheme
    if loop.method.learns_weights and truth:
        table = loop.weights.table()
        for kind in ("box", "scribble"):
            bad, good = [], []
            for w in table:
                if w.kind == kind and (w.image, w.instance, w.kind) in truth:
                    (bad if truth[(w.image, w.instance, w.kind)][0] else good).append(w.weight)
            record[f"auc_{kind}"] = roc_auc(bad, good)
            record[f"clean_{kind}_mean_weight"] = round(float(np.mean(good)), 3) if good else None
        record["weights_by_corruption"] = weights_by_corruption(table, truth)
        record["weights_by_class"] = weights_by_class(table, truth, project)
    return record


def weights_by_class(table, truth, project) -> dict:
    """``{"box:label45:clean": {"n", "mean", "below_half"}, ...}``: the same per class and
    kind of annotation, clean and corrupted apart."""
    box_class = {str(b.id): b.cls for item in project.images.values() for b in item.boxes}
    groups: dict[str, list[float]] = {}
    for w in table:
        key = (w.image, w.instance, w.kind)
        if key not in truth:
            continue
        cls = box_class[w.instance] if w.kind == "box" else int(w.instance.split("@")[0]) - 1
        state = "corrupted" if truth[key][0] else "clean"
        groups.setdefault(f"{w.kind}:{project.classes.names[cls - 1]}:{state}", []).append(w.weight)
    return _group_stats(groups)


def weights_by_corruption(table, truth) -> dict:
    """``{"box:loose": {"n", "mean", "below_half"}, ...}``: each kind of annotation and
    corruption ("none" for clean ones), its count, mean weight and the share of weights
    below 0.5 (for a corrupted kind, the share DII detected)."""
    groups: dict[str, list[float]] = {}
    for w in table:
        key = (w.image, w.instance, w.kind)
        if key in truth:
            groups.setdefault(f"{w.kind}:{truth[key][1]}", []).append(w.weight)
    return _group_stats(groups)


def _group_stats(groups: dict[str, list[float]]) -> dict:
    return {
        k: {"n": len(v), "mean": round(float(np.mean(v)), 3), "below_half": round(float(np.mean(np.less(v, 0.5))), 3)}
        for k, v in sorted(groups.items())
    }


def options_of(values: dict, method: str, network: str) -> dict:
    """The :data:`OPTIONS` of a run of ``method`` on ``network`` from ``values`` (the
    command line's, or a record's): ``lambda_cr`` as the engine resolves it, and ``None``
    for every option the method does not use."""
    engine = ENGINE_METHODS["strong-only" if method == "full" else method]
    cfg = TrainConfig(lambda_cr=values["lambda_cr"])
    resolved = values | {"lambda_cr": lambda_cr_for(cfg, spatial_dims_for(network))}
    return {o: resolved[o] if getattr(engine, use) else None for o, use in OPTIONS.items()}


def done_key(run: dict) -> tuple:
    """What tells ``run`` (a record, or a job's values) from every other run: what it
    trained on and how, and the :data:`OPTIONS` its method uses (those a record lacks
    read as their :data:`BEFORE` defaults)."""
    keys = ("volume", "intensity_asked", "seed", "budget", "network", "method", "steps")
    options = options_of(BEFORE | {o: run[o] for o in OPTIONS if o in run}, run["method"], run["network"])
    return (*(run[k] for k in keys), *options.values())


def one_run(job) -> dict | None:
    """Train and score one configuration; ``None`` when ``deadline`` (a wall-clock time)
    passed before it could start."""
    seed, budget, network, intensity, method, args = job
    if args.deadline and time.time() > args.deadline:
        return None
    torch.set_num_threads(args.threads)
    (train_image, train_classes), test = load_halves(args.volume)
    strong, boxes, strokes, truth = simulate(train_classes, budget, seed)
    names = VOLUMES[args.volume].names
    project = project_for(train_image, train_classes, strong, boxes, strokes, method == "full", names)
    cfg = TrainConfig(
        method="strong-only" if method == "full" else method,
        network=network,
        intensity=intensity,
        steps=args.steps,
        seed=seed,
        patch_size=64,
        patch_size_3d=32,
        batch_size=8 if network == "2d" else 2,
        device=args.device,
        **{o: getattr(args, o) for o in OPTIONS},
    )
    record = {"volume": args.volume, "seed": seed, "budget": budget, "network": network, "method": method}
    record["intensity_asked"] = intensity
    record |= options_of(vars(args), method, network)
    n_strokes = sum(1 for key in truth if key[2] == "scribble")
    record |= {"strong_slices": strong, "boxes": len(boxes), "strokes": n_strokes}
    record |= run(project, cfg, test, truth)
    return record | {"steps": args.steps, "jobs": args.jobs, "machine": machine(), "commit": git_rev()}


def _result(future) -> dict | None:
    """A finished run's record; a failed run is reported and the others go on."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - one broken run must not lose the others
        print(f"a run failed: {exc!r}", file=sys.stderr)
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volume", choices=list(VOLUMES), default="inia19", help="the volume and its structures")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budgets", nargs="+", default=["few", "10pct"], choices=["few", "10pct"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--networks", nargs="+", default=["2d", "3d"], choices=["2d", "3d"])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument(
        "--intensities",
        nargs="+",
        default=["auto"],
        choices=INTENSITIES,
        help="normalisations to compare, one run each (auto: z-score for this MR volume)",
    )
    ap.add_argument(
        "--dii-box-target",
        choices=list(DII_BOX_TARGETS),
        default=TrainConfig.dii_box_target,
        help="what DII takes a box to claim (dii_box_target)",
    )
    ap.add_argument(
        "--cr-rampup",
        type=float,
        default=TrainConfig.cr_rampup,
        help="share of the steps over which co-regularisation ramps up (cr_rampup)",
    )
    ap.add_argument(
        "--lambda-cr",
        type=float,
        default=TrainConfig.lambda_cr,
        help="weight of the co-regularisation term (lambda_cr; default: the network's, 1 in 2D, 0.1 in 3D)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument(
        "--jobs", type=int, default=1, help="runs at a time, each in its own process (seconds then share the machine)"
    )
    ap.add_argument("--deadline", type=float, default=0, help="start no run after this many seconds (0: no limit)")
    ap.add_argument("--out", type=Path, default=OUT / "medical.jsonl")
    args = ap.parse_args()
    if why := missing(args.volume):
        print(why, file=sys.stderr)
        raise SystemExit(0)
    args.deadline = time.time() + args.deadline if args.deadline else 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.is_file():  # runs already recorded in --out are not repeated
        for line in args.out.read_text().splitlines():
            done.add(done_key({"volume": "inia19", "intensity_asked": "auto"} | json.loads(line)))
    jobs = [
        (seed, budget, network, intensity, method, args)
        for seed, budget, network, intensity, method in itertools.product(
            args.seeds, args.budgets, args.networks, args.intensities, args.methods
        )
        if done_key(
            vars(args) | dict(intensity_asked=intensity, seed=seed, budget=budget, network=network, method=method)
        )
        not in done
    ]
    print(f"{len(jobs)} runs, {args.jobs} at a time", file=sys.stderr)
    if args.jobs == 1:
        records = map(one_run, jobs)
    else:
        pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
        records = (_result(f) for f in as_completed([pool.submit(one_run, job) for job in jobs]))
    for record in records:
        if record is None:
            continue
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
