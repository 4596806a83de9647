"""bioimage.io model packages (spec format 0.5), written with our own code.

A package is a zip holding ``rdf.yaml``; TorchScript weights (and ONNX ones where the
``onnx`` package is installed) of the networks' mean class probabilities; the
preprocessing they expect, declared in the spec's terms, exactly the model's normalisation
(``scale_range`` with the 1st and 99.8th percentiles of each channel of each image;
``zero_mean_unit_variance`` per image; for CT, ``clip`` then
``fixed_zero_mean_unit_variance`` with the training foreground's statistics); a test
input with the output our own inference path computes for it; a README; and our own
model file as an attachment, which is what napari-hybridseg itself reads back (no code
from the package ever runs when we load it).
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import __version__
from ..atomic import atomic_path
from ..data.preprocess import HIGH_PERCENTILE, LOW_PERCENTILE, NormalisedView, ranges_for
from ..errors import ConfigError, reason
from ..modelfile import PACKAGE_ATTACHMENT, LoadedModel, save_model
from .network import exported_network, least_side, traced

ATTACHMENT = PACKAGE_ATTACHMENT
PAPER = {
    "text": "Pan, Bi, Yang, Zhu, Bian. Label-Efficient Hybrid-Supervised Learning for Medical Image "
    "Segmentation. AAAI 2022.",
    "doi": "10.1609/aaai.v36i2.20098",
}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _test_input(model: LoadedModel, sample: np.ndarray | None) -> np.ndarray:
    """``(1, C, *S)`` raw test input: a crop of ``sample`` (channels last for RGB) or a
    deterministic texture, its sides a multiple the networks accept."""
    m, least = model.nets[0].size_multiple, least_side(model)
    dims = model.task.spatial_dims
    side = max(least, 64)
    if sample is None:
        rng = np.random.default_rng(0)
        return (rng.random((1, model.task.in_channels, *([side] * dims))) * 1000).astype(np.float32)
    arr = np.asarray(sample, dtype=np.float32)
    arr = np.moveaxis(arr, -1, 0) if arr.ndim == dims + 1 and model.task.in_channels > 1 else arr[None]
    crop = tuple(slice(0, (min(s, side * 2) // m) * m) for s in arr.shape[1:])
    return np.ascontiguousarray(arr[(slice(None), *crop)])[None]


def fit_sample(model: LoadedModel, image: np.ndarray, axes: str, name: str) -> np.ndarray:
    """``image`` (its ``axes``) in the layout the test input is cut from: a volume's middle
    slice for a 2D model.  One that does not fit the model is an error naming ``name``."""
    from ..inference import check_input

    if model.task.spatial_dims == 2 and axes == "zyx":
        image, axes = image[image.shape[0] // 2], "yx"
    check_input(model, image, axes, name)
    m, least = model.nets[0].size_multiple, least_side(model)
    if any(side // m * m < least for side in (image.shape[:2] if axes == "yxc" else image.shape)):
        raise ConfigError(f"{name}: too small a sample for this model (at least {least} pixels per axis)")
    return image


def _expected_output(model: LoadedModel, raw: np.ndarray) -> np.ndarray:
    """Our own inference path on the test input: our normalisation, then the networks."""
    axes = "yx" if model.task.in_channels == 1 else "yxc"
    image = raw[0, 0] if axes == "yx" else np.moveaxis(raw[0], 0, -1)
    if model.task.spatial_dims == 3:
        image, axes = raw[0, 0], "zyx"
    norm = NormalisedView(image, axes, ranges=ranges_for(model.task.intensity, image, axes))[...]
    with torch.no_grad():
        return exported_network(model)(torch.from_numpy(norm[None])).numpy()


def _preprocessing(model: LoadedModel, spatial: str) -> list[dict]:
    """The model's normalisation in the spec's terms, per channel over the spatial axes."""
    intensity = model.task.intensity
    if intensity.scheme == "zscore":
        return [{"id": "zero_mean_unit_variance", "kwargs": {"axes": list(spatial), "eps": 1.0e-6}}]
    if intensity.scheme == "ct":
        if len(intensity.stats) != 1:  # the spec's clip takes one range for all channels
            raise ConfigError(f"a CT model of {len(intensity.stats)} channels cannot be declared for bioimage.io")
        ((mean, std, low, high),) = intensity.stats
        return [
            {"id": "clip", "kwargs": {"min": low, "max": high}},
            {"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": mean, "std": std}},
        ]
    kwargs = {"min_percentile": LOW_PERCENTILE, "max_percentile": HIGH_PERCENTILE, "eps": 1.0e-6, "axes": list(spatial)}
    return [{"id": "scale_range", "kwargs": kwargs}]


def _axes(model: LoadedModel, role: str) -> list[dict]:
    m = model.nets[0].size_multiple
    spatial = "zyx"[-model.task.spatial_dims :]
    if role == "input":
        names = [f"channel{c}" for c in range(model.task.in_channels)]
        space = [{"type": "space", "id": a, "size": {"min": least_side(model), "step": m}} for a in spatial]
    else:
        names = ["background", *([f"class{c}" for c in range(1, model.task.n_outputs)])]
        if model.task.n_classes == 1:
            names = ["background", "foreground"]
        space = [{"type": "space", "id": a, "size": {"tensor_id": "image", "axis_id": a}} for a in spatial]
    return [{"type": "batch"}, {"type": "channel", "channel_names": names}, *space]


def _readme(model: LoadedModel, weights_summary: str) -> str:
    cfg, task = model.config, model.task
    nets = "the mean of two co-trained networks" if len(model.predictors) == 2 else "one network"
    scaling = {
        "percentile": "scaled per image and channel from its 1st and 99.8th\n  percentiles "
        "(declared as `scale_range` preprocessing)",
        "zscore": "scaled per image and channel to mean 0 and standard\n  deviation 1 "
        "(declared as `zero_mean_unit_variance`)",
        "ct": "Hounsfield units clipped and scaled by the training\n  foreground's statistics "
        "(declared as `clip` and `fixed_zero_mean_unit_variance`)",
    }[task.intensity.scheme]
    return f"""# {cfg.method} segmentation model

Trained with napari-hybridseg {__version__} from boxes, scribbles and a few full masks
(hybrid supervision, Pan et al., AAAI 2022: method `{cfg.method}`, {cfg.steps} steps,
U-Net depth {cfg.depth}, width {cfg.width}, seed {cfg.seed}).

- Input: {task.in_channels} channel(s), {task.spatial_dims}D, each side a multiple of
  {model.nets[0].size_multiple} and at least {least_side(model)}, the side of the training patches: pad a
  smaller image to it, centred and mirrored, as training did; {scaling}.
- Output: class probabilities, background first ({task.n_outputs} channels), {nets}.
- Learned weights of the weak annotations: {weights_summary}

## Validation

The package's test input and output were computed by napari-hybridseg's own inference
path; `bioimageio.core`'s model test reproduces them. How well the model segments depends
on the images it was trained on: check it on yours before relying on it.
"""


def weights_summary(weights_csv: Path | None) -> str:
    """A sentence about a run's ``weights.csv``: how many annotations, how many distrusted.
    A file that cannot be read is said so, in the sentence and in a warning that names it;
    it does not stop the export."""
    if weights_csv is None or not Path(weights_csv).is_file():
        return "not recorded."
    import csv
    import warnings

    try:
        with open(weights_csv, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        values = [float(r["weight"]) for r in rows]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as exc:
        problem = "no 'weight' column" if isinstance(exc, KeyError) else reason(exc)
        warnings.warn(f"{weights_csv}: cannot be read ({problem}); the package's README says so", stacklevel=2)
        return f"not readable ({problem})."
    if not values:
        return "none (trained on full masks only)."
    low = sum(v < 0.5 for v in values)
    return f"{len(values)} weak annotations, mean weight {np.mean(values):.2f}, {low} of them below 0.5."


def export_bioimageio(
    model: LoadedModel,
    path: str | Path,
    sample: np.ndarray | None = None,
    name: str = "napari-hybridseg model",
    authors: list[str] | None = None,
    license: str = "CC-BY-4.0",
    weights_csv: Path | None = None,
    sample_axes: str | None = None,
    sample_name: str = "the sample image",
) -> Path:
    """Write ``model`` as a bioimage.io package (a zip) at ``path``; ``sample`` (its axes
    ``sample_axes``, guessed when ``None``; named ``sample_name`` in errors) gives the
    test input."""
    if len(name.strip()) < 5:
        raise ValueError(f"a bioimage.io model name needs at least 5 characters; got {name!r}")
    if sample is not None:
        from ..images import spatial_axes

        sample = fit_sample(model, sample, sample_axes or spatial_axes(sample), sample_name)
    files: dict[str, bytes] = {}
    buf = io.BytesIO()
    torch.jit.save(traced(model), buf)
    files["weights.pt"] = buf.getvalue()
    raw = _test_input(model, sample)
    files["test_input.npy"] = _npy(raw)
    files["test_output.npy"] = _npy(_expected_output(model, raw).astype(np.float32))
    files["README.md"] = _readme(model, weights_summary(weights_csv)).encode()
    with tempfile.TemporaryDirectory() as tmp:
        files[ATTACHMENT] = save_model(Path(tmp) / ATTACHMENT, model).read_bytes()
        onnx_bytes = _onnx(model, Path(tmp) / "weights.onnx")
    if onnx_bytes is not None:
        files["weights.onnx"] = onnx_bytes
    spatial = list("zyx"[-model.task.spatial_dims :])
    weights = {
        "torchscript": {
            "source": "weights.pt",
            "sha256": _sha256(files["weights.pt"]),
            "pytorch_version": torch.__version__.split("+")[0],
        }
    }
    if onnx_bytes is not None:
        weights["onnx"] = {
            "source": "weights.onnx",
            "sha256": _sha256(onnx_bytes),
            "opset_version": 17,
            "parent": "torchscript",
        }
    rdf = {
        "format_version": "0.5.4",
        "type": "model",
        "name": name,
        "description": f"Segmentation ({model.config.method}) trained with napari-hybridseg from weak and full labels.",
        "authors": [{"name": a} for a in (authors or ["napari-hybridseg user"])],
        "cite": [PAPER],
        "license": license,
        "documentation": {"source": "README.md"},
        "tags": ["segmentation", f"{model.task.spatial_dims}d", "napari-hybridseg", "weak-supervision"],
        "inputs": [
            {
                "id": "image",
                "axes": _axes(model, "input"),
                "test_tensor": {"source": "test_input.npy", "sha256": _sha256(files["test_input.npy"])},
                "data": {"type": "float32"},
                "preprocessing": _preprocessing(model, spatial),
            }
        ],
        "outputs": [
            {
                "id": "probabilities",
                "axes": _axes(model, "output"),
                "test_tensor": {"source": "test_output.npy", "sha256": _sha256(files["test_output.npy"])},
                "data": {"type": "float32", "range": [0.0, 1.0]},
            }
        ],
        "weights": weights,
        "attachments": [{"source": ATTACHMENT, "sha256": _sha256(files[ATTACHMENT])}],
        "config": {
            "napari-hybridseg": {
                "version": __version__,
                "task": model.task.to_dict(),
                "training": json.loads(json.dumps(model.config.to_dict())),
            }
        },
    }
    path = Path(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("rdf.yaml", yaml.safe_dump(rdf, sort_keys=False))
        for name_, data in files.items():
            zf.writestr(name_, data)
    return path


def _onnx(model: LoadedModel, path: Path) -> bytes | None:
    """ONNX weights where the onnx package is installed, else ``None``."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return None
    from .onnx import export_onnx

    return export_onnx(model, path).read_bytes()
