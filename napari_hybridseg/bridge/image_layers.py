"""How an image is shown as a napari layer, and read back in the engine's order.

The engine keeps a 2D image's channels last, ``(Y, X, C)``.  napari shows three or four
channels as colour (``rgb``), but any other number as one more axis; since it lines up
layers by their last axes, ``(Y, X, 2)`` would put the masks ``(Y, X)`` across X and the
channels.  Such an image is therefore shown channels first, ``(C, Y, X)``, one channel at
a time on a slider, with ``channels_first`` in its role tag; everything that takes an image
layer's data, shape or scale goes through this module.
"""

from __future__ import annotations

import numpy as np

from ..images import ImageMeta

META_KEY = "hybridseg"
CHANNELS_FIRST = "channels_first"


def shows_channels_first(axes: str, n_channels: int) -> bool:
    """Whether an image of ``axes`` is shown channels first (channels napari cannot show as colour)."""
    return axes == "yxc" and n_channels not in (3, 4)


def layer_tag(layer) -> dict:
    """A layer's role tag (empty when it has none)."""
    return (getattr(layer, "metadata", None) or {}).get(META_KEY) or {}


def is_channels_first(layer) -> bool:
    return bool(layer_tag(layer).get(CHANNELS_FIRST))


def spatial_shape(layer) -> tuple[int, ...]:
    """The image's ``(Y, X)`` or ``(Z, Y, X)``: without colour or channel axes."""
    shape = tuple(np.shape(layer.data))
    if getattr(layer, "rgb", False):
        return shape[:-1]
    return shape[1:] if is_channels_first(layer) else shape


def spatial_scale(layer) -> tuple[float, ...] | None:
    """The layer's scale along the axes of :func:`spatial_shape` (``None`` without one)."""
    scale = getattr(layer, "scale", None)
    return None if scale is None else tuple(scale[-len(spatial_shape(layer)) :])


def layer_image(layer, data=None) -> np.ndarray:
    """The layer's image (or ``data``, a copy of it) in the engine's order, channels last."""
    data = np.asarray(layer.data) if data is None else data
    return np.moveaxis(data, 0, -1) if is_channels_first(layer) else data


def layer_meta(layer) -> ImageMeta:
    """The image's spacing, affine and format, from its tag and its spatial scale."""
    return ImageMeta.from_layer_metadata(layer_tag(layer), spatial_scale(layer))
