"""Command line: ``napari-hybridseg train | predict | evaluate | sample | demo``.

Every error is one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from . import __version__
from .errors import HybridSegError

EXIT_ERROR = 2


def _err(message: str) -> int:
    print(f"napari-hybridseg: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _add_train(sub) -> None:
    from .config import BOX_TARGETS, DII_BOX_TARGETS, GRANULARITIES, TrainConfig
    from .methods import METHODS

    d = TrainConfig.__dataclass_fields__
    p = sub.add_parser("train", help="train on a project folder", description="Train on a project folder.")
    p.add_argument("project", type=Path, help="project folder (images/, strong/, boxes/, scribbles/)")
    p.add_argument(
        "--out", type=Path, required=True, help="run folder for model, config.json, metrics.jsonl, weights.csv"
    )
    p.add_argument(
        "--method",
        choices=list(METHODS),
        default=d["method"].default,
        help="dii: learned weight per weak annotation; dcr: two networks teaching each other (default: %(default)s)",
    )
    p.add_argument(
        "--box-target",
        choices=BOX_TARGETS,
        default=d["box_target"].default,
        help="projection: the object touches every row and column of its box; filled: the box is the mask "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        default=d["granularity"].default,
        help="one weight per annotation (object) or per weak image (default: %(default)s)",
    )
    p.add_argument("--steps", type=int, default=d["steps"].default, help="total training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default, help="(default: %(default)s)")
    p.add_argument("--patch-size", type=int, default=d["patch_size"].default, help="pixels (default: %(default)s)")
    p.add_argument("--width", type=int, default=d["width"].default, help="U-Net base channels (default: %(default)s)")
    p.add_argument("--depth", type=int, default=d["depth"].default, help="U-Net poolings (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d["lr"].default, help="AdamW learning rate (default: %(default)s)")
    p.add_argument(
        "--dii-box-target",
        choices=DII_BOX_TARGETS,
        default=d["dii_box_target"].default,
        help="how DII judges a box: by the claim that its pixels are object (filled), that the ellipse "
        "inscribed in it is (ellipse), that the object reaches each of its rows and columns (extent), or by "
        "the training loss (same) (default: %(default)s)",
    )
    p.add_argument(
        "--dii-warmup",
        type=int,
        default=None,
        help="steps before the first weight update (default: two epochs, at least a sixth of the run)",
    )
    p.add_argument(
        "--dii-interval",
        type=int,
        default=None,
        help="steps between weight updates (default: an epoch, longer if updates would take over ~10%% of the time)",
    )
    p.add_argument(
        "--dii-lr",
        type=float,
        default=None,
        help="base learning rate of the weights (default: 0.1, raised in short runs so that a weight can "
        "fall from 1 to 0 over the scheduled updates)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init-model", type=Path, default=None, help="start from a saved model.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _train(args) -> int:
    from tqdm import tqdm

    from . import protocol as ev
    from .annotations import Project
    from .config import TrainConfig
    from .training import TrainingLoop

    if args.resume and not (args.out / "checkpoint.pt").is_file():
        return _err(f"{args.out / 'checkpoint.pt'}: nothing to resume (file not found)")
    cfg = TrainConfig(
        method=args.method,
        box_target=args.box_target,
        granularity=args.granularity,
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        width=args.width,
        depth=args.depth,
        lr=args.lr,
        dii_warmup=args.dii_warmup,
        dii_interval=args.dii_interval,
        dii_lr=args.dii_lr,
        dii_box_target=args.dii_box_target,
        device=args.device,
        seed=args.seed,
    )
    project = Project.load(args.project)
    loop = TrainingLoop(project, cfg, args.out, resume=args.resume, init_model=args.init_model)
    bar = None
    for event in loop.events():
        if isinstance(event, ev.StartedEvent):
            print(
                f"training {cfg.method} on {event.device}: {event.summary['strong slices']} strong and "
                f"{event.summary['weak slices']} weak slice(s), {event.n_instances} weighted instance(s)",
                file=sys.stderr,
            )
            if event.dii_schedule is not None:
                warmup, interval = event.dii_schedule
                print(
                    f"weights updated every {interval} steps from step {warmup}, learning rate {event.dii_lr:.3g}",
                    file=sys.stderr,
                )
            bar = tqdm(
                total=event.steps,
                initial=event.start_step,
                unit="step",
                disable=args.quiet or None,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        elif isinstance(event, ev.StepEvent) and bar is not None:
            bar.update(1)
            if event.step % 10 == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in event.losses.items() if k != "lr"})
        elif isinstance(event, ev.ErrorEvent):
            if bar is not None:
                bar.close()
            return _err(f"training failed at step {event.step}: {event.message} (last checkpoint kept in {args.out})")
        elif isinstance(event, ev.FinishedEvent):
            if bar is not None:
                bar.close()
            print(
                f"done: {event.step} steps in {event.elapsed:.0f} s; model in {args.out / 'model.pt'}", file=sys.stderr
            )
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment images with a trained model")
    p.add_argument("run", type=Path, help="run folder or model.pt")
    p.add_argument("inputs", type=Path, nargs="+", help="image files or folders of images")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--format", choices=["tif", "nii.gz"], default=None, help="default: that of each input")
    p.add_argument("--prob", action="store_true", help="also write NAME_prob (foreground probability)")
    p.add_argument("--uncertainty", action="store_true", help="also write NAME_uncertainty (two-network disagreement)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--device", default="auto")


def _inputs(paths: list[Path]) -> list[Path]:
    from .atomic import compound_suffix
    from .errors import ImageReadError
    from .images import IMAGE_SUFFIXES

    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = [f for f in sorted(p.iterdir()) if f.is_file() and compound_suffix(f) in IMAGE_SUFFIXES]
            if not found:
                raise ImageReadError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in folder")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise ImageReadError(f"{p}: file not found")
    return files


def _predict(args) -> int:
    from tqdm import tqdm

    from .devices import resolve_device
    from .images import read_image, spatial_axes, strip_suffix
    from .inference import explain_empty, predict_image, save_prediction
    from .modelfile import load_model

    device = resolve_device(args.device)
    model = load_model(args.run).to(device)
    files = _inputs(args.inputs)
    if args.uncertainty and len(model.nets) < 2:
        print(f"{args.run}: the model has one network; no uncertainty maps", file=sys.stderr)
    for path in tqdm(files, unit="image", disable=len(files) < 2 or None, file=sys.stderr):
        image, meta = read_image(path)
        axes = spatial_axes(image)
        channels = image.shape[-1] if axes == "yxc" else 1
        if channels != model.in_channels:
            return _err(f"{path}: image has {channels} channel(s), the model expects {model.in_channels}")
        pred = predict_image(model.nets, image, axes, device=device)
        save_prediction(
            pred, args.out, strip_suffix(path), meta, args.format, args.threshold, args.prob, args.uncertainty
        )
        why = explain_empty(pred.probability, args.threshold)
        if why:
            print(f"{path}: empty prediction: {why}", file=sys.stderr)
    print(f"wrote {len(files)} mask(s) to {args.out}", file=sys.stderr)
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate_folders

    print(json.dumps(evaluate_folders(args.pred_dir, args.gt_dir), indent=2))
    return 0


def _sample(args) -> int:
    from .synthetic import make_project

    if args.out.exists() and any(args.out.iterdir()):
        return _err(f"{args.out}: folder exists and is not empty")
    project = make_project(
        args.out,
        n_images=args.n_images,
        strong_fraction=args.strong_fraction,
        weak=args.weak,
        corrupt_fraction=args.corrupt,
        shape=(args.size, args.size),
        kind=args.kind,
        seed=args.seed,
        truth_dir=args.truth,
    )
    print(f"wrote {args.out}: {project.summary()}", file=sys.stderr)
    return 0


def _demo(args) -> int:
    from ._demo import run_demo

    return run_demo(steps=args.steps, screenshot=args.screenshot, quit_after=args.quit, project=args.project)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-hybridseg",
        description="Train segmentation networks from boxes, scribbles and a few full masks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_predict(sub)
    p = sub.add_parser("evaluate", help="Dice and IoU of predicted masks against ground truth, as JSON")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("gt_dir", type=Path)
    p = sub.add_parser("sample", help="write a synthetic project (with optional ground truth)")
    p.add_argument("out", type=Path)
    p.add_argument("--n-images", type=int, default=10)
    p.add_argument("--strong-fraction", type=float, default=0.1)
    p.add_argument("--weak", choices=["boxes", "scribbles", "both"], default="both")
    p.add_argument("--corrupt", type=float, default=0.3, help="share of weak annotations corrupted")
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--kind", choices=["microscopy", "medical"], default="microscopy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truth", type=Path, default=None, help="folder for ground truth and corruptions.csv")
    p = sub.add_parser("demo", help="open napari with the sample project and the training widget")
    p.add_argument("--project", type=Path, default=None, help="project folder (default: the sample project)")
    p.add_argument("--steps", type=int, default=None, help="train this many steps live on start")
    p.add_argument("--screenshot", type=Path, default=None, help="save a screenshot of the window")
    p.add_argument("--quit", action="store_true", help="close napari when done (with --steps/--screenshot)")
    return parser


HANDLERS = {"train": _train, "predict": _predict, "evaluate": _evaluate, "sample": _sample, "demo": _demo}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"napari-hybridseg: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", UserWarning)
            warnings.showwarning = _show_warning
            return HANDLERS[args.command](args)
    except HybridSegError as exc:
        return _err(str(exc))
    except KeyboardInterrupt:
        return _err("interrupted")
    except (OSError, ValueError) as exc:
        return _err(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


if __name__ == "__main__":
    sys.exit(main())
