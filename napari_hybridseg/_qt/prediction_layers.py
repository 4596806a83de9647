"""The prediction layers of an image: created with a project's layers (a 2D image's
prediction) or on the first preview, then updated in place (whole, a slice, or the part
on screen); a hidden layer is redrawn only when shown."""

from __future__ import annotations

import numpy as np

from ..bridge import class_colormaps, classes_of_layers, spatial_shape
from .layers import find_layer, geometry, layer_name, tag


def show_prediction(
    viewer, image: str, z, probability, uncertainty, threshold: float = 0.5, all_layers=False, origin=None, classes=None
) -> None:
    """Create or update ``<image> prediction``/``probability``/``disagreement`` for one slice,
    or for the part of it that starts at ``origin`` (y, x) when the maps cover only that.
    The prediction shows ``classes`` (class ids) where given, else the objects numbered.

    While training, only the prediction layer is added where it is missing (adding a
    layer holds napari for 0.1-0.3 s at 700 x 1100); maps whose layers exist are updated.
    ``all_layers`` adds every missing layer, for one-off predictions and the end of a run.
    New layers never take the selection from the layer the user works on.
    """
    from ..inference import labels_from_probability

    src = find_layer(viewer, image, "image")
    if src is None:
        return
    spatial = spatial_shape(src)
    common = {"scale": src.scale[-len(spatial) :], "translate": src.translate[-len(spatial) :]}
    maps = [
        ("prediction", classes if classes is not None else labels_from_probability(probability, threshold), "labels"),
        ("probability", probability.astype(np.float32), "image"),
    ]
    if uncertainty is not None:
        maps.append(("disagreement", uncertainty.astype(np.float32), "image"))
    where = _map_index(z, origin, probability.shape)
    for role, data, kind in maps:
        layer = find_layer(viewer, image, role)
        if layer is None and kind == "image" and not all_layers:
            continue
        if layer is None:
            full = np.zeros(spatial, data.dtype if kind == "image" else np.int32)
            full[where] = data
            if kind == "labels":
                # class ids in the colours of their classes; objects numbered in napari's colours
                colours = class_colormaps(classes_of_layers(viewer.layers))[0] if classes is not None else {}
                name = layer_name(image, role)
                layer = add_inactive(viewer, viewer.add_labels, full, name=name, opacity=0.6, **colours, **common)
            else:
                layer = add_inactive(
                    viewer,
                    viewer.add_image,
                    full,
                    name=layer_name(image, role),
                    colormap="magma" if role == "disagreement" else "viridis",
                    contrast_limits=(0, 1 if role == "probability" else 0.5),
                    blending="additive",
                    visible=False,
                    opacity=0.7,
                    **common,
                )
            tag(layer, role, image, **geometry(src))
        else:
            _set_map(layer, where, data)


def add_inactive(viewer, add, data, **kwargs):
    """``add(data, **kwargs)`` without making the new layer the active one: a preview that
    arrives while the user paints must not move their brush to another layer (and switching
    the layer controls costs napari as much again)."""
    layers = viewer.layers
    before = (layers.selection.active, set(layers.selection))
    flag = getattr(layers, "_activate_on_insert", None)  # napari's own switch, where it has one
    if flag is not None:
        layers._activate_on_insert = False
    try:
        layer = add(data, **kwargs)
    finally:
        if flag is not None:
            layers._activate_on_insert = flag
    if layers.selection.active is not before[0]:
        layers.selection.active = before[0]
        layers.selection.update(before[1])
    return layer


def _map_index(z, origin, shape) -> tuple:
    """Where a map of ``shape`` goes in its layer's data: slice ``z`` (of a volume), the
    part from ``origin``; ``()`` for the whole 2D data."""
    index = () if z is None else (z,)
    if origin is not None:
        index += tuple(slice(o, o + n) for o, n in zip(origin, shape))
    return index


def _set_map(layer, where: tuple, data) -> None:
    """Write ``data`` into the layer's array in place, and redraw the layer if it is
    visible: a hidden layer costs napari nothing until it is shown (napari redraws a layer
    whenever it becomes visible)."""
    layer.data[where] = data
    if layer.visible:
        layer.refresh(extent=False)
