"""ONNX export: the wider world's format, run by onnxruntime and most inference engines."""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import ConfigError
from ..modelfile import LoadedModel
from .network import example_input, exported_network, least_side

OPSET = 17


def export_onnx(model: LoadedModel, path: str | Path) -> Path:
    """Write ``model`` as ONNX: input ``image`` ``(B, C, *S)`` normalised, output
    ``probabilities`` ``(B, K + 1, *S)``; batch and spatial sizes are dynamic (multiples of
    ``2**depth``); metadata ``least_side``: the side to which a smaller image is padded,
    centred and mirrored, as in training (:func:`.network.least_side`)."""
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'napari-hybridseg[onnx]'") from None
    axes = {0: "batch", **{2 + i: name for i, name in enumerate("zyx"[-model.task.spatial_dims :])}}
    path = Path(path)
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            exported_network(model),
            (example_input(model),),
            str(tmp),
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_axes={"image": axes, "probabilities": axes},
            opset_version=OPSET,
            dynamo=False,
        )
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, {"least_side": str(least_side(model))})
        onnx.save(proto, str(tmp))
    return path
