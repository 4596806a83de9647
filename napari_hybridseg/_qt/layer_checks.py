"""What a layer must be to join a project, each refusal a sentence that names the layer.

An image's name names its files in the project folder, so it must be one a file can have
and no other image may hold it; an annotation layer must lie over its image pixel for
pixel (napari draws a layer with its own scale and translate, and the engine reads its
data as the image's pixels).
"""

from __future__ import annotations

import numpy as np

from ..annotations import image_name_problem
from ..bridge import META_KEY, layer_tag, role_of, spatial_shape
from ..errors import HybridSegError


def _layers_of(viewer, role: str, image: str) -> list:
    return [layer for layer in viewer.layers if role_of(layer) == (role, image)]


def image_problem(viewer, layer) -> str | None:
    """Why ``layer`` cannot be an annotated image (``None`` when it can)."""
    role, tagged = role_of(layer)
    name = tagged if role == "image" else layer.name
    if getattr(layer, "multiscale", False):
        return f"layer {layer.name!r} is multiscale (an image pyramid); open its full-resolution level as a layer"
    ndim = len(spatial_shape(layer))
    if ndim not in (2, 3):
        return f"layer {layer.name!r} has {ndim} dimensions; images are 2D or 3D (channels last, up to 4)"
    problem = image_name_problem(name)
    if problem:
        return f"layer {layer.name!r}: the image's name names its files and cannot hold {problem}; rename the layer"
    others = [other for other in _layers_of(viewer, "image", name) if other is not layer]
    if others:
        return f"layer {layer.name!r}: image {name!r} is already annotated as {others[0].name!r}; rename this layer"
    return None


def placement_problem(image_layer, layer) -> str | None:
    """Why ``layer`` does not lie over ``image_layer`` pixel for pixel (``None`` when it does)."""
    spatial = spatial_shape(image_layer)
    n = len(spatial)
    if layer._type_string == "labels" and tuple(np.shape(layer.data)) != spatial:
        return f"layer {layer.name!r} is {np.shape(layer.data)}, its image {image_layer.name!r} {spatial}"
    if layer.ndim != n:
        return f"layer {layer.name!r} has {layer.ndim} dimensions, its image {image_layer.name!r} {n}"
    for what in ("scale", "translate"):
        if not np.allclose(getattr(layer, what)[-n:], getattr(image_layer, what)[-n:]):
            return (
                f"layer {layer.name!r} has another {what} than its image {image_layer.name!r}, so it does not lie "
                "over its pixels; use 'Create layers' instead"
            )
    return None


PROJECT_ROLES = ("image", "strong", "scribbles", "boxes")


def check_project_layers(layers) -> None:
    """Refuse two layers holding the same role of one image (a duplicated layer, say:
    training would take one and drop the other), and a boxes layer holding other shapes
    than rectangles (a line would be read as a box one pixel high)."""
    seen: dict[tuple[str, str], str] = {}
    for layer in layers:
        key = role_of(layer)
        for i, kind in enumerate(getattr(layer, "shape_type", []) if key[0] == "boxes" else []):
            if kind != "rectangle":
                raise HybridSegError(
                    f"layer {layer.name!r}: shape {i + 1} is a {kind}; boxes are rectangles: delete it or redraw it"
                )
            zs = np.asarray(layer.data[i])[:, 0] if layer.ndim == 3 else np.zeros(1)
            if np.ptp(zs) > 0.5:  # drawn in a view across slices: it would be read as a box one row high
                raise HybridSegError(
                    f"layer {layer.name!r}: box {i + 1} spans slices {zs.min():.0f}-{zs.max():.0f}; a box lies on one "
                    "slice: delete it and draw it on a slice"
                )
        if key[0] in PROJECT_ROLES:
            if key in seen:
                raise HybridSegError(
                    f"layers {seen[key]!r} and {layer.name!r} both hold the {key[0]} of image {key[1]!r}: "
                    "delete one, or assign it to another image"
                )
            seen[key] = layer.name


def untag_copy(viewer, layer) -> str | None:
    """A layer inserted with the role of another (napari's Duplicate copies metadata)
    loses the role; a sentence saying so, or ``None``."""
    key = role_of(layer)
    if key[0] not in PROJECT_ROLES or not any(o is not layer and role_of(o) == key for o in viewer.layers):
        return None
    meta = {k: v for k, v in layer_tag(layer).items() if k not in ("role", "image")}
    layer.metadata = {**layer.metadata, META_KEY: meta}
    return f"layer {layer.name!r} is a copy, not part of the project; assign it to an image to use it"
