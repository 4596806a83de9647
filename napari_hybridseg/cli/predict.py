"""``napari-hybridseg predict``: segment images with a trained model, never over the user's files."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import add_max_voxels, apply_max_voxels, say


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment images with a trained model")
    p.add_argument("run", type=Path, help="run folder or model.pt")
    p.add_argument("inputs", type=Path, nargs="+", help="image files or folders of images")
    p.add_argument("--out", type=Path, required=True, help="output folder (not an input, not inside a project)")
    p.add_argument("--format", choices=["tif", "nii.gz"], default=None, help="default: that of each input")
    p.add_argument(
        "--prob",
        action="store_true",
        help="also write NAME_prob (probability of the structure; with several classes, NAME_prob_<class> each)",
    )
    p.add_argument("--uncertainty", action="store_true", help="also write NAME_uncertainty (two-network disagreement)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--device", default="auto")
    add_max_voxels(p)


def _inputs(paths: list[Path]) -> list[Path]:
    from ..atomic import compound_suffix
    from ..errors import ImageReadError
    from ..images import IMAGE_SUFFIXES

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


def run_predict(args) -> int:
    from tqdm import tqdm

    from ..annotations import validate_image
    from ..devices import resolve_device
    from ..images import read_image, spatial_axes, strip_suffix
    from ..inference import check_input, explain_empty, predict_with_model, save_prediction
    from ..inference.output import check_output_folder, plan_outputs, write_label_table
    from ..modelfile import load_model

    apply_max_voxels(args)
    files = _inputs(args.inputs)
    check_output_folder(args.out, args.inputs)
    device = resolve_device(args.device)
    model = load_model(args.run).to(device)
    names = model.task.label_names
    plan_outputs(files, args.out, args.format, args.prob, args.uncertainty, names)  # collisions refused up front
    if args.uncertainty and len(model.nets) < 2:
        say(f"{args.run}: the model has one network; no uncertainty maps")
    for path in tqdm(files, unit="image", disable=len(files) < 2 or None, file=sys.stderr):
        image, meta = read_image(path, mmap=True)
        validate_image(image, str(path))
        axes = spatial_axes(image, meta)
        check_input(model, image, axes, str(path))
        pred = predict_with_model(model, image, axes, device=device)
        save_prediction(
            pred, args.out, strip_suffix(path), meta, args.format, args.threshold, args.prob, args.uncertainty, names
        )
        why = explain_empty(pred.probability, args.threshold)
        if why:
            say(f"{path}: empty prediction: {why}")
    if names:  # class ids with their names and colours, for ITK-SNAP and 3D Slicer
        write_label_table(args.out, names, model.task.label_colours)
    say(f"wrote {len(files)} {'label map' if names else 'mask'}(s) to {args.out}")
    return 0
