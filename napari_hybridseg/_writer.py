"""napari writer hook: label layers to TIFF or NIfTI (File > Save Selected Layers)."""

from __future__ import annotations

import numpy as np

from .bridge import META_KEY
from .images import ImageMeta, write_image


def write_labels(path: str, data, attributes: dict) -> list[str]:
    """Write one Labels layer; a NIfTI keeps the affine of the image it was read with."""
    tag = (attributes.get("metadata") or {}).get(META_KEY, {})
    meta = ImageMeta.from_layer_metadata(tag, attributes.get("scale"))
    labels = np.asarray(data)
    if labels.dtype.kind not in "biu":
        raise ValueError(f"layer {attributes.get('name', '')!r}: labels must be integers")
    return [str(write_image(path, labels, meta))]
