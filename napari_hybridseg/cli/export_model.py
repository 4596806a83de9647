"""``napari-hybridseg export-model``: share a trained model as a bioimage.io package or ONNX."""

from __future__ import annotations

import getpass
from pathlib import Path

from .common import add_max_voxels, apply_max_voxels, say


def add_export_model(sub) -> None:
    p = sub.add_parser(
        "export-model",
        help="write a trained model as a bioimage.io package (.zip) or ONNX (.onnx)",
        description="Share a trained model: a bioimage.io model package (read by ilastik, deepImageJ, QuPath, "
        "bioimageio.core and napari-hybridseg) or an ONNX file (onnxruntime and other engines).",
    )
    p.add_argument("run", type=Path, help="run folder or model.pt")
    p.add_argument("--format", choices=["bioimageio", "onnx"], default=None, help="default: from --out's extension")
    p.add_argument("--out", type=Path, required=True, help="FILE.zip (bioimage.io) or FILE.onnx")
    p.add_argument("--sample", type=Path, default=None, help="an image to take the package's test input from")
    p.add_argument("--name", default=None, help="the model's name (default: the run folder's)")
    p.add_argument("--author", action="append", default=None, help="author name (repeat for several)")
    p.add_argument("--license", default="CC-BY-4.0", help="SPDX licence of the model (default: %(default)s)")
    add_max_voxels(p)


def run_export_model(args) -> int:
    from ..errors import ConfigError
    from ..export import export_model
    from ..modelfile import load_model

    apply_max_voxels(args)
    fmt = args.format or {".zip": "bioimageio", ".onnx": "onnx"}.get(args.out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"{args.out}: say --format bioimageio or onnx (or end the file in .zip or .onnx)")
    model = load_model(args.run)
    options = {}
    if fmt == "bioimageio":
        run_dir = args.run if args.run.is_dir() else args.run.parent
        options = {
            **(_sample(args.sample) if args.sample is not None else {}),
            "name": args.name or f"napari-hybridseg {run_dir.resolve().name}",
            "authors": args.author or [getpass.getuser()],
            "license": args.license,
            "weights_csv": run_dir / "weights.csv",
        }
    path = export_model(model, args.out, fmt, **options)
    say(f"wrote {path} ({fmt})")
    return 0


def _sample(path: Path) -> dict:
    """``--sample`` read, with its axes and its name for errors."""
    from ..images import read_image, spatial_axes

    image, meta = read_image(path)
    return {"sample": image, "sample_axes": spatial_axes(image, meta), "sample_name": str(path)}
