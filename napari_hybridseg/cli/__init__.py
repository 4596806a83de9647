"""Command line: ``napari-hybridseg train | predict | evaluate | sample | demo``.

Every error is one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .. import __version__
from ..errors import HybridSegError, reason
from .common import err
from .export_model import add_export_model, run_export_model
from .predict import add_predict, run_predict
from .train import run_train
from .train_options import add_train


def _classes_to_score(args) -> list[str] | None:
    """``--classes`` (a count or comma-separated names), else the label table that
    ``predict`` wrote beside the label maps; ``None``: score foreground vs background."""
    from ..evaluate import read_label_table

    if args.classes:
        text = args.classes.strip()
        return [f"class {k}" for k in range(1, int(text) + 1)] if text.isdigit() else text.split(",")
    table = Path(args.pred_dir) / "labels.ctbl"
    return read_label_table(table) if table.is_file() else None


def _evaluate(args) -> int:
    from ..evaluate import evaluate_folders

    print(json.dumps(evaluate_folders(args.pred_dir, args.gt_dir, _classes_to_score(args)), indent=2))
    return 0


def _sample(args) -> int:
    from ..synthetic import make_project

    for folder in (args.out, args.truth):
        if folder is not None and folder.exists() and any(folder.iterdir()):
            return err(f"{folder}: folder exists and is not empty; choose an empty or new folder")
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
        n_classes=args.classes,
    )
    print(f"wrote {args.out}: {project.summary()}", file=sys.stderr)
    return 0


def _demo(args) -> int:
    from .._demo import run_demo

    return run_demo(steps=args.steps, screenshot=args.screenshot, quit_after=args.quit, project=args.project)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-hybridseg",
        description="Train segmentation networks from boxes, scribbles and a few full masks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train(sub)
    add_predict(sub)
    add_export_model(sub)
    p = sub.add_parser("evaluate", help="Dice and IoU of predicted masks against ground truth, as JSON")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("gt_dir", type=Path)
    p.add_argument(
        "--classes",
        help="score label maps per class: a count (3) or names (liver,tumour); default: the labels.ctbl that "
        "predict wrote beside the predictions, else foreground vs background",
    )
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
    p.add_argument("--classes", type=int, default=1, help="structures to segment (objects classed by size)")
    p = sub.add_parser("demo", help="open napari with the sample project and the training widget")
    p.add_argument("--project", type=Path, default=None, help="project folder (default: the sample project)")
    p.add_argument("--steps", type=int, default=None, help="train this many steps live on start")
    p.add_argument("--screenshot", type=Path, default=None, help="save a screenshot of the window")
    p.add_argument("--quit", action="store_true", help="close napari when done (with --steps/--screenshot)")
    return parser


HANDLERS = {
    "train": run_train,
    "predict": run_predict,
    "export-model": run_export_model,
    "evaluate": _evaluate,
    "sample": _sample,
    "demo": _demo,
}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if os.environ.get("RANK", "0") == "0":  # one voice when several processes train
        print(f"napari-hybridseg: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", UserWarning)
            warnings.showwarning = _show_warning
            return HANDLERS[args.command](args)
    except HybridSegError as exc:
        return err(str(exc))
    except KeyboardInterrupt:
        return err("interrupted")
    except MemoryError:
        return err("out of memory: the image or the model is too large for this machine")
    except RuntimeError as exc:  # from torch: out of GPU memory, a failed process group, ...
        return err(reason(exc))
    except (OSError, ValueError) as exc:
        return err(reason(exc))


if __name__ == "__main__":
    sys.exit(main())
