"""Sharing a trained model: bioimage.io packages and ONNX."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..modelfile import LoadedModel

FORMATS = ("bioimageio", "onnx")


def export_model(model: LoadedModel, path: str | Path, fmt: str, **options) -> Path:
    """Write ``model`` to ``path`` as a bioimage.io package (``bioimageio``) or ONNX (``onnx``)."""
    if fmt == "bioimageio":
        from .bioimageio import export_bioimageio

        return export_bioimageio(model, path, **options)
    if fmt == "onnx":
        from .onnx import export_onnx

        return export_onnx(model, path)
    raise ConfigError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
