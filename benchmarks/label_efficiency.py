"""Label efficiency: Dice of every method on held-out images, and how well the learned
weights separate corrupted from clean weak annotations (ROC AUC).

Datasets: ``synthetic`` (the package's generator), ``bbbc007`` (real nuclei from
../shared/data/bbbc007, boxes and scribbles simulated from its masks) and ``dsb2018``
(the 512 x 512 fluorescence nuclei image with its mask that the ``stardist`` wheel on PyPI
ships, an image of the 2018 Data Science Bowl (Caicedo et al., Nature Methods 2019), cut
into 16 tiles of 128 x 128: 125 nuclei; fetched once with ``pip download`` into
``benchmarks/_out``) and ``scellseg`` (the five fluorescence images of macrophages, whole
cells hand-outlined, that the ``scellseg`` 0.1.8 source package on PyPI ships, each cut
into four tiles of 192 x 256: 221 cells; fetched the same way).  ``bbbc007``, ``dsb2018``
and the synthetic set are the validation sets that defaults are chosen on; ``scellseg`` is
the test set, run only with defaults already fixed (the ``role`` of every record).
Strong budgets:
``10pct`` (one image in ten has a full mask) and ``few`` (one crop holding about 1% of
all training objects).  Weak images alternate boxes and scribbles, 30% corrupted.
Each run appends one JSON line to ``--out``; ``summarize.py`` turns them into tables.

    python benchmarks/label_efficiency.py --dataset bbbc007 --budget 10pct --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev, machine, mean_dice, train  # noqa: E402

from napari_hybridseg.annotations import BACKGROUND_STROKE, ImageAnnotations, Project, parse_stroke_id  # noqa: E402
from napari_hybridseg.config import TrainConfig  # noqa: E402
from napari_hybridseg.images import read_image  # noqa: E402
from napari_hybridseg.synthetic import ANNOTATORS, simulate_weak_labels, synth_image  # noqa: E402
from napari_hybridseg.synthetic.scenes import SHAPES  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc007"
# defaults are chosen on the validation sets and only reported on the test set
ROLE = {"synthetic": "validation", "bbbc007": "validation", "dsb2018": "validation", "scellseg": "test"}
# (method, box target); "full" is strong-only trained on every training image's mask,
# "paper" dii+dcr with the paper's settings (TrainConfig.with_preset("paper"))
RUNS = [
    ("full", "projection"),
    ("strong-only", "projection"),
    ("naive", "filled"),
    ("naive", "projection"),
    ("dii", "filled"),
    ("dii", "projection"),
    ("dcr", "filled"),
    ("dcr", "projection"),
    ("dii+dcr", "filled"),
    ("dii+dcr", "projection"),
    ("paper", "filled"),  # --preset paper: the paper's settings exactly
]


def load_dataset(name: str, seed: int, data: Path, objects: str = "round"):
    """``(train, test)``: lists of (name, image, instance labels); ``objects``: the
    synthetic set's object shapes."""
    rng = np.random.default_rng(1000 + seed)
    if name == "synthetic":
        items = [(f"s{k:02d}", *synth_image(rng, (192, 192), "microscopy", objects=objects)) for k in range(14)]
    elif name == "dsb2018":
        image, labels = _stardist_nuclei(OUT / "wheels")
        items = [
            (
                f"t{y // 128}{x // 128}",
                image[y : y + 128, x : x + 128],
                labels[y : y + 128, x : x + 128].astype(np.int32),
            )
            for y in range(0, 512, 128)
            for x in range(0, 512, 128)
        ]
    elif name == "scellseg":
        items = [
            (f"{stem}_{y // 192}{x // 256}", image[y : y + 192, x : x + 256], labels[y : y + 192, x : x + 256])
            for stem, image, labels in _scellseg_macrophages(OUT / "wheels")
            for y in (0, 192)
            for x in (0, 256)
        ]
    elif name == "bbbc007":
        items = []
        for path in sorted((data / "images").glob("*.tif")):
            image, _ = read_image(path)
            labels, _ = read_image(data / "masks" / path.name)
            items.append((path.stem, image, labels.astype(np.int32)))
        if not items:
            raise SystemExit(f"no images in {data}")
    else:
        raise SystemExit(f"unknown dataset {name}")
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    return items[:10], items[10:14]


def _stardist_nuclei(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 2D nuclei image and its label mask in the ``stardist`` 0.9.2 wheel from PyPI."""
    import io
    import zipfile

    import tifffile

    with zipfile.ZipFile(_pip_download(cache, "stardist-0.9.2-*.whl", "stardist==0.9.2")) as zf:
        image, labels = (
            tifffile.imread(io.BytesIO(zf.read(f"stardist/data/images/{n}2d.tif"))) for n in ("img", "mask")
        )
    return image, labels


def _pip_download(cache: Path, pattern: str, requirement: str, *options: str) -> Path:
    """The archive of ``requirement`` from PyPI in ``cache`` (downloaded the first time)."""
    import subprocess

    found = sorted(cache.glob(pattern))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", *options, "-d", str(cache), requirement]
        subprocess.run(cmd, check=True)
        found = sorted(cache.glob(pattern))
    return found[0]


def _scellseg_macrophages(cache: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, image, instance labels)`` of the macrophage images in the ``scellseg`` 0.1.8
    source package: 384 x 512 RGB (red nuclei, green cytoplasm) with hand-drawn whole-cell
    masks; the image is the sum of the two channels."""
    import tarfile

    import imageio.v3 as iio

    archive = _pip_download(cache, "scellseg-0.1.8.tar.gz", "scellseg==0.1.8", "--no-binary", ":all:")
    folder = "scellseg-0.1.8/scellseg/assets/contrast_data/macrophagocyte/"
    out = []
    with tarfile.open(archive) as tf:
        names = sorted(n for n in tf.getnames() if n.startswith(folder) and n.endswith("_img.png"))
        for n in names:
            rgb = iio.imread(tf.extractfile(n).read())
            labels = iio.imread(tf.extractfile(n.replace("_img.png", "_masks.png")).read())
            image = rgb[..., :2].astype(np.float32).sum(-1)
            out.append((Path(n).name.split("_")[0], image, labels.astype(np.int32)))
    return out


def _crop_with_objects(labels: np.ndarray, n_objects: int, rng) -> tuple[slice, slice]:
    h, w = labels.shape
    ids = [i for i in np.unique(labels) if i > 0]
    centre = np.argwhere(labels == ids[rng.integers(len(ids))]).mean(0).astype(int)
    side = 24
    while side < min(h, w):
        y0 = int(np.clip(centre[0] - side // 2, 0, h - side))
        x0 = int(np.clip(centre[1] - side // 2, 0, w - side))
        sl = (slice(y0, y0 + side), slice(x0, x0 + side))
        inner = labels[sl]
        whole = [i for i in np.unique(inner) if i > 0 and (inner == i).sum() == (labels == i).sum()]
        if len(whole) >= n_objects:
            return sl
        side += 8
    return slice(0, h), slice(0, w)


def build_project(
    train, budget: str, seed: int, corrupt: float = 0.3, annotator: str = "development", weak: str = "alternate"
):
    """``(hybrid project, full-mask project, corruption table)``; ``annotator``: how the
    weak labels are drawn (:data:`napari_hybridseg.synthetic.ANNOTATORS`); ``weak``: which
    kind each weak image gets (``alternate``: boxes and scribbles by turns, or one kind)."""
    rng = np.random.default_rng(2000 + seed)
    weak_items, full_items, corrupted = [], [], {}
    total_objects = sum(len(np.unique(lab)) - 1 for _, _, lab in train)
    for k, (name, image, labels) in enumerate(train):
        full_items.append(ImageAnnotations(name, image, strong=labels))
        if k == 0:
            if budget == "10pct":
                weak_items.append(ImageAnnotations(name, image, strong=labels))
            else:
                sl = _crop_with_objects(labels, max(2, round(0.01 * total_objects)), rng)
                weak_items.append(ImageAnnotations(f"{name}_crop", image[sl], strong=labels[sl]))
            continue
        boxes = k % 2 == 0 if weak == "alternate" else weak == "boxes"
        wl = simulate_weak_labels(labels, rng, corrupt, boxes=boxes, scribbles=not boxes, style=ANNOTATORS[annotator])
        weak_items.append(ImageAnnotations(name, image, boxes=wl.boxes, scribbles=wl.scribbles))
        for (kind, iid), bad in wl.corrupted.items():
            corrupted[(name, str(iid), kind)] = (bad, wl.corruption.get((kind, iid), "none"))
    return Project(weak_items), Project(full_items), corrupted


def roc_auc(scores_bad: list[float], scores_good: list[float]) -> float | None:
    """Probability that a corrupted instance has a lower weight than a clean one (ties 1/2)."""
    if not scores_bad or not scores_good:
        return None
    bad, good = np.asarray(scores_bad)[:, None], np.asarray(scores_good)[None, :]
    return float(((bad < good).sum() + 0.5 * (bad == good).sum()) / (bad.size * good.size))


def truth_of(w, corrupted) -> tuple[bool, str, str]:
    """``(corrupted, how, kind)`` of a learned weight; a scribble stroke is judged by its
    label's simulated stroke, and background strokes (never corrupted) form their own kind."""
    if w.kind != "scribble":
        bad, how = corrupted.get((w.image, w.instance, w.kind), (False, "none"))
        return bad, how, w.kind
    label, _ = parse_stroke_id(w.instance)
    if label == BACKGROUND_STROKE:
        return False, "none", "background stroke"
    bad, how = corrupted.get((w.image, str(label), "scribble"), (False, "none"))
    return bad, how, "scribble"


def kind_scores(judged, kind: str) -> tuple[float | None, float | None, float | None]:
    """``(AUC, clean mean, corrupted mean)`` of the weights of one kind; ``judged``: rows
    ``(weight, corrupted, how, kind)`` (:func:`truth_of`); means rounded to 3 places,
    ``None`` where a side is empty."""
    bad = [w.weight for w, is_bad, _, k in judged if k == kind and is_bad]
    good = [w.weight for w, is_bad, _, k in judged if k == kind and not is_bad]
    return (
        roc_auc(bad, good),
        round(float(np.mean(good)), 3) if good else None,
        round(float(np.mean(bad)), 3) if bad else None,
    )


def run_one(project, cfg, test):
    loop, seconds = train(project, cfg)
    dice = mean_dice(cfg.predictors(loop.state.nets), [(img, "yx", lab) for _, img, lab in test])
    return loop, dice, seconds


def config_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs of ``--set`` as TrainConfig options, each value of its field's type."""
    out = {}
    for kv in pairs:
        key, value = kv.split("=", 1)
        default = getattr(TrainConfig, key)
        if isinstance(default, bool):  # bool("false") would be True
            out[key] = value.lower() in ("1", "true", "on", "yes")
        else:
            out[key] = type(default)(value) if default is not None else (float(value) if "." in value else int(value))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=list(ROLE), default="synthetic")
    ap.add_argument("--budget", choices=["10pct", "few"], default="10pct")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--runs", nargs="*", default=None, help="subset, e.g. dii+dcr:projection strong-only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--corrupt", type=float, default=0.3, help="share of weak annotations corrupted")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra TrainConfig options for every run, e.g. dii_space=weight",
    )
    ap.add_argument(
        "--annotator",
        choices=list(ANNOTATORS),
        default="development",
        help="how weak labels are drawn: stroke widths and lengths, box margins (see synthetic/weak.py)",
    )
    ap.add_argument(
        "--weak",
        choices=["alternate", "boxes", "scribbles"],
        default="alternate",
        help="weak images get boxes and scribbles by turns, or all one kind (the same images either way)",
    )
    ap.add_argument("--objects", choices=list(SHAPES), default="round", help="object shapes of the synthetic set")
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=OUT / "label_efficiency.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = RUNS
    if args.runs:
        wanted = [r.split(":") for r in args.runs]
        runs = [r for r in RUNS if [r[0]] in wanted or list(r) in wanted]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    extra = config_options(args.set)
    for seed in args.seeds:
        train, test = load_dataset(args.dataset, seed, args.data, args.objects)
        hybrid, full, corrupted = build_project(train, args.budget, seed, args.corrupt, args.annotator, args.weak)
        for method, box_target in runs:
            project = full if method == "full" else hybrid
            cfg = TrainConfig(
                method={"full": "strong-only", "paper": "dii+dcr"}.get(method, method),
                box_target=box_target,
                steps=args.steps,
                seed=seed,
                **extra,
            )
            if method == "paper":
                cfg = cfg.with_preset("paper", keep=set(extra))
            loop, dice, seconds = run_one(project, cfg, test)
            record = {
                "dataset": args.dataset,
                "role": ROLE[args.dataset],
                "budget": args.budget,
                "seed": seed,
                "method": method,
                "box_target": box_target,
                "steps": args.steps,
                "corrupt": args.corrupt,
                "annotator": args.annotator,
                "weak": args.weak,
                "objects": args.objects if args.dataset == "synthetic" else None,
                "dice": round(dice, 4),
                "seconds": round(seconds, 1),
                "options": extra,
                "config": asdict(cfg),
                "dii_box_target": cfg.dii_box_target,
                "machine": machine(),
                "commit": git_rev(),
            }
            if loop.method.learns_weights:
                record["dii_schedule"] = list(loop.schedule.as_tuple())
                record["dii_lr"] = round(loop.schedule.lr, 4)
                judged = [(w, *truth_of(w, corrupted)) for w in loop.weights.table()]
                for kind in ("box", "scribble"):
                    auc, clean, bad = kind_scores(judged, kind)
                    record[f"auc_{kind}"] = auc
                    record[f"mean_weight_{kind}_clean"] = clean
                    record[f"mean_weight_{kind}_corrupted"] = bad
                by_how: dict[str, list[float]] = {}
                for w, _, how, kind in judged:
                    by_how.setdefault(f"{kind}:{how}", []).append(w.weight)
                record["mean_weight_by_corruption"] = {k: round(float(np.mean(v)), 3) for k, v in by_how.items()}
                # the share of each kind whose weight fell below 0.5 (detected, for a corrupted kind)
                record["below_half_by_corruption"] = {
                    k: round(float(np.mean(np.asarray(v) < 0.5)), 3) for k, v in by_how.items()
                }
            print(json.dumps(record), flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
