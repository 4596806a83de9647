"""The weights of background regions on the canvas: ``<image> background regions``, a
shapes layer of the regions' rectangles coloured like boxes (red: ignored, green:
trusted) with each weight written inside.  Created at the end of a run or when an image is
shown after one (adding a layer holds napari for a moment, so never while training), then
updated in place."""

from __future__ import annotations

import numpy as np

from ..annotations.regions import region_rects
from ..bridge import spatial_shape, weight_colors
from .box_texts import weight_text
from .layers import find_layer, layer_name, tag
from .prediction_layers import add_inactive

ROLE = "regions"


def _spatial(viewer, image: str):
    layer = find_layer(viewer, image, "image")
    if layer is None:
        return None, None
    return layer, spatial_shape(layer)


def show_regions(viewer, weights, images, create: bool) -> None:
    """Draw the background regions' weights of ``images``; a missing layer is added only
    where ``create``."""
    for image in images:
        values = {w.instance: w.weight for w in weights if w.image == image and w.kind == "background"}
        src, shape = _spatial(viewer, image)
        if src is None or not values:
            continue
        rects = region_rects(values, shape)
        if not rects:
            continue
        names = sorted(rects)
        shapes = [_corners(rects[n], len(shape)) for n in names]
        shown = np.array([values[n] for n in names])
        layer = find_layer(viewer, image, ROLE)
        if layer is None and not create:
            continue
        if layer is None:
            layer = add_inactive(
                viewer,
                viewer.add_shapes,
                shapes,
                shape_type="rectangle",
                name=layer_name(image, "background regions"),
                scale=src.scale[-len(shape) :],
                translate=src.translate[-len(shape) :],
                face_color="transparent",
                edge_width=1,  # thinner than boxes: at 48 px a side, regions tile the whole image
                opacity=0.6,
                visible=src.visible,
            )
            tag(layer, ROLE, image)
        elif len(layer.data) != len(shapes) or any(not np.allclose(a, b) for a, b in zip(layer.data, shapes)):
            layer.data = []
            layer.add(shapes, shape_type="rectangle")
        layer.features = {"region": names, "weight": shown}
        layer.edge_color = weight_colors(shown)
        layer.face_color = "transparent"
        layer.text = weight_text(layer, float(viewer.camera.zoom))


def region_centre(viewer, image: str, name: str):
    """World coordinates of a region's centre, or ``None``."""
    src, shape = _spatial(viewer, image)
    if src is None:
        return None
    rect = region_rects([name], shape).get(name)
    if rect is None:
        return None
    z, y0, x0, y1, x1 = rect
    if z is None and len(shape) == 3:  # one region for a whole volume (earlier versions)
        z = shape[0] // 2
    centre = [(y0 + y1) / 2, (x0 + x1) / 2]
    return src.data_to_world(np.array(([z] if len(shape) == 3 else []) + centre, float))


def _corners(rect, ndim: int) -> np.ndarray:
    """The four corners of a region (pixel edges), with its slice in a volume."""
    z, y0, x0, y1, x1 = rect
    corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float) - 0.5
    return np.column_stack([np.full(4, z, float), corners]) if ndim == 3 else corners
