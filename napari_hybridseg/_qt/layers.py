"""Reading annotations out of a napari viewer and drawing results into it.

The GUI-side half of the bridge: it finds role-tagged layers, creates them, and
updates prediction and weight overlays.  Only the GUI thread calls it.
"""

from __future__ import annotations

import weakref

import numpy as np

from ..annotations import ImageAnnotations, Project, intensity_setting, parse_stroke_id, stroke_class
from ..annotations.model import read_only_copy
from ..bridge import (
    META_KEY,
    annotations_from_layers,
    class_colormaps,
    classes_of_layers,
    layer_meta,
    layer_name,
    layer_tag,
    note_box_ids,
    role_of,
    scribble_label_weights,
    shape_classes,
    spatial_shape,
    stroke_centre,
    weight_colors,
)
from ..errors import HybridSegError
from .box_texts import weight_text
from .layer_checks import check_project_layers, image_problem, placement_problem

# read-only copies of image layers' data, made again only when a layer gets new data
_FROZEN_IMAGES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def image_layers(viewer) -> list:
    return [layer for layer in viewer.layers if layer._type_string == "image"]


def tagged_images(viewer) -> list:
    return [layer for layer in viewer.layers if role_of(layer)[0] == "image"]


def image_visible(viewer, image: str) -> bool:
    layer = find_layer(viewer, image, "image")
    return layer is not None and layer.visible


def find_layer(viewer, image: str, role: str):
    for layer in viewer.layers:
        if role_of(layer) == (role, image):
            return layer
    return None


def tag(layer, role: str, image: str, **extra) -> None:
    meta = dict(layer.metadata.get(META_KEY) or {})
    meta.update({"role": role, "image": image, **extra})
    layer.metadata = {**layer.metadata, META_KEY: meta}


def assign_role(viewer, image_layer, layer, shown_role: str) -> str | None:
    """Make ``layer`` the masks, scribbles or boxes of ``image_layer``; a sentence saying
    why not when it is the wrong kind of layer, does not lie over the image, or the image
    cannot be annotated."""
    role = {"masks": "strong", "scribbles": "scribbles", "boxes": "boxes"}[shown_role]
    need = "shapes" if role == "boxes" else "labels"
    if layer._type_string != need:
        return f"layer {layer.name!r} is a {layer._type_string} layer; {shown_role} need a {need} layer"
    problem = image_problem(viewer, image_layer) or placement_problem(image_layer, layer)
    if problem:
        return problem
    _tag_image(viewer, image_layer)
    empty_volume_mask = role == "strong" and layer.ndim == 3 and not np.any(layer.data)
    slices = {"annotated_slices": []} if empty_volume_mask else {}  # then only slices painted are masks
    tag(layer, role, role_of(image_layer)[1], **geometry(image_layer), **slices)
    return None


def geometry(image_layer) -> dict:
    """The image's format, spacing and affine from its tag, for the layers drawn over it:
    a mask or prediction saved as NIfTI then keeps the scan's orientation and origin."""
    tagged = layer_tag(image_layer)
    return {k: tagged[k] for k in ("format", "spacing", "affine") if k in tagged}


def _tag_image(viewer, image_layer) -> None:
    if role_of(image_layer)[0] != "image":
        classes = classes_of_layers(viewer.layers)
        more = {"classes": classes.to_json()} if classes is not None else {}
        tag(
            image_layer,
            "image",
            image_layer.name,
            exhaustive=True,
            **layer_meta(image_layer).to_layer_metadata(),
            **more,
        )


def ensure_annotation_layers(viewer, image_layer) -> dict:
    """Tag ``image_layer`` and create its boxes, scribbles and masks layers if missing
    (a :class:`HybridSegError` naming the layer when it cannot be annotated)."""
    problem = image_problem(viewer, image_layer)
    if problem:
        raise HybridSegError(problem)
    _tag_image(viewer, image_layer)
    name, where = role_of(image_layer)[1], geometry(image_layer)
    mask_colours, stroke_colours = class_colormaps(classes_of_layers(viewer.layers))
    spatial = spatial_shape(image_layer)
    ndim = len(spatial)
    common = {"scale": image_layer.scale[-ndim:], "translate": image_layer.translate[-ndim:]}
    out = {}
    if find_layer(viewer, name, "strong") is None:
        layer = viewer.add_labels(
            np.zeros(spatial, np.uint16), name=layer_name(name, "strong"), opacity=0.5, **mask_colours, **common
        )
        tag(layer, "strong", name, **where, **({"annotated_slices": []} if ndim == 3 else {}))  # painted slices count
    if find_layer(viewer, name, "scribbles") is None:
        layer = viewer.add_labels(
            np.zeros(spatial, np.uint16), name=layer_name(name, "scribbles"), **stroke_colours, **common
        )
        layer.brush_size = 3
        layer.selected_label = 2
        tag(layer, "scribbles", name, **where)
    if find_layer(viewer, name, "boxes") is None:
        layer = viewer.add_shapes(
            ndim=ndim,
            name=layer_name(name, "boxes"),
            edge_color="yellow",
            face_color="transparent",
            edge_width=max(1.0, float(min(spatial[-2:])) / 256),
            features={"id": np.zeros(0, int), "class": np.zeros(0, int)},
            **common,
        )
        layer.current_edge_color = "yellow"
        layer.current_face_color = "transparent"
        tag(layer, "boxes", name, **where)
    for role in ("strong", "scribbles", "boxes"):
        out[role] = find_layer(viewer, name, role)
    viewer.layers.selection.active = out["boxes"]
    out["boxes"].mode = "add_rectangle"
    return out


def _empty_to_none(item: ImageAnnotations) -> ImageAnnotations:
    if item.strong is not None and not np.any(item.strong) and not item.strong_slices:
        item.strong, item.strong_slices = None, None  # (slices painted and erased are background)
    if item.scribbles is not None and not np.any(item.scribbles):
        item.scribbles = None
    return item


def _frozen_image(layer) -> np.ndarray:
    data = layer.data
    cached = _FROZEN_IMAGES.get(layer)
    if cached is None or cached[0] is not data:
        cached = (data, read_only_copy(data))
        _FROZEN_IMAGES[layer] = cached
    return cached[1]


def visible_slice(viewer, layer) -> int | None:
    """The slice of a volume layer in view, in the layer's own data coordinates."""
    if len(spatial_shape(layer)) != 3:
        return None
    z = int(round(float(layer.world_to_data(viewer.dims.point)[0])))
    return min(max(z, 0), layer.data.shape[0] - 1)


def visible_region(layer):
    """The part of an image layer's current plane on screen, ``((y0, y1), (x0, x1))`` in
    its pixels, or ``None`` before napari has drawn it."""
    corners = np.asarray(layer.corner_pixels)[:, -2:]
    if not corners.any():
        return None
    return tuple((int(a), int(b) + 1) for a, b in corners.T)


def collect_project(viewer, root=None, snapshot: bool = True) -> Project:
    """A :class:`Project` of every tagged image layer and its annotation layers.

    With ``snapshot`` (for training and saving) every array is a read-only copy, so the
    user may keep painting while a trainer reads it; without, the layers' own arrays
    (for a quick look, such as the status table).

    An empty masks layer does not make an image strong.  Boxes without an id get the
    next free one, written back into the layer so that weights stay attached.
    """
    layers = list(viewer.layers)
    check_project_layers(layers)
    items = []
    for image_layer in tagged_images(viewer):
        name = role_of(image_layer)[1]
        boxes_layer = find_layer(viewer, name, "boxes")
        image = _frozen_image(image_layer) if snapshot else np.asarray(image_layer.data)
        item = _empty_to_none(annotations_from_layers(image_layer, layers, image, copy=snapshot))
        if boxes_layer is not None and len(boxes_layer.data):
            ids = [b.id for b in item.boxes]
            current = boxes_layer.features.get("id")
            if current is None or list(np.asarray(current, dtype=float)) != ids:
                boxes_layer.features = {**{k: v for k, v in boxes_layer.features.items() if k != "id"}, "id": ids}
            note_box_ids(boxes_layer, ids)
        items.append(item)
    project = Project(items, root=root, classes=classes_of_layers(layers))
    project.intensity = intensity_setting(root)  # as the command line reads the folder
    return project


def show_weights(viewer, weights, images=None) -> None:
    """Colour boxes and scribbles by their weight; write the value next to each box
    where boxes are large enough on screen to carry it (:mod:`.box_texts`).  Only for
    ``images``, when given: redrawing a layer of many boxes takes napari long."""
    by_image: dict[str, dict[tuple[str, str], float]] = {}
    for w in weights:
        by_image.setdefault(w.image, {})[(w.kind, w.instance)] = w.weight
    for image, values in by_image.items():
        if images is not None and image not in images:
            continue
        boxes = find_layer(viewer, image, "boxes")
        if boxes is not None and len(boxes.data):
            ids = np.asarray(boxes.features.get("id", np.arange(1, len(boxes.data) + 1)), dtype=float)
            wts = np.array([values.get(("box", str(int(i))), np.nan) if i == i else np.nan for i in ids])
            if np.isfinite(wts).any():
                shown = np.where(np.isfinite(wts), wts, 1.0)
                boxes.features = {**{k: v for k, v in boxes.features.items() if k != "weight"}, "weight": shown}
                boxes.edge_color = weight_colors(shown)
                boxes.text = weight_text(boxes, float(viewer.camera.zoom))
        scribbles = find_layer(viewer, image, "scribbles")
        label_weights = scribble_label_weights(weights, image)
        if scribbles is not None and label_weights:
            # strokes drawn since the last weights arrive in light grey, not invisible
            colors = {None: np.array([0.8, 0.8, 0.8, 1.0]), 0: np.zeros(4)}
            for label, value in label_weights.items():
                colors[label] = weight_colors([value])[0]
            from napari.utils.colormaps import DirectLabelColormap

            scribbles.colormap = DirectLabelColormap(color_dict=colors)


def instance_classes(viewer, weights) -> list[str] | None:
    """The class name of each weak annotation (box: its ``class`` feature; stroke: its
    value; background regions: background), or ``None`` in a project of one structure."""
    classes = classes_of_layers(viewer.layers)
    if classes is None:
        return None
    box_class: dict[tuple[str, str], int] = {}
    for layer in viewer.layers:
        role, image = role_of(layer)
        if role == "boxes" and "id" in layer.features:
            for i, c in zip(layer.features["id"], shape_classes(layer.features, len(layer.data))):
                box_class[(image, str(int(i)))] = c
    out = []
    for w in weights:
        if w.kind == "box":
            cid = box_class.get((w.image, w.instance), 1)
        elif w.kind == "scribble":
            cid = stroke_class(parse_stroke_id(w.instance)[0], len(classes))
        else:
            cid = 0 if w.kind == "background" else -1
        out.append(classes.name(cid) if 0 <= cid <= len(classes) else "")
    return out


def instance_location(viewer, image: str, kind: str, instance: str):
    """World coordinates of an instance's centre, and its slice (or ``None``)."""
    if kind == "box":
        layer = find_layer(viewer, image, "boxes")
        if layer is None:
            return None
        ids = np.asarray(layer.features.get("id", []), dtype=float)
        hits = np.flatnonzero(ids == float(instance))
        if not hits.size:
            return None
        corners = np.asarray(layer.data[hits[0]])
        return layer.data_to_world(corners.mean(0))
    if kind == "scribble":
        layer = find_layer(viewer, image, "scribbles")
        centre = stroke_centre(np.asarray(layer.data), instance) if layer is not None else None
        return layer.data_to_world(centre) if centre is not None else None
    if kind == "background":
        from .region_layers import region_centre  # (it draws with this module's helpers)

        return region_centre(viewer, image, instance)
    layer = find_layer(viewer, image, "image")
    if layer is None:
        return None
    centre = np.array(layer.data.shape, float) / 2  # the image's centre, in every axis it has
    return layer.data_to_world(centre[:-1] if layer.rgb else centre)


def show_only(viewer, image: str) -> None:
    """Make ``image``'s layers visible and hide other images' layers (predictions too)."""
    for layer in viewer.layers:
        role, owner = role_of(layer)
        if owner is None:
            continue
        visible = owner == image and role not in ("probability", "disagreement")
        if layer.visible != visible:  # napari redraws a layer whenever it is set visible
            layer.visible = visible


def go_to(viewer, image: str, kind: str, instance: str) -> None:
    """Show ``image`` only and centre the view (and slice) on one of its annotations."""
    show_only(viewer, image)
    where = instance_location(viewer, image, kind, instance)
    if where is None:
        return
    where = np.asarray(where, float)
    if where.size == 3:
        step = list(viewer.dims.current_step)
        layer = find_layer(viewer, image, "image")
        step[0] = int(round(layer.world_to_data(where)[0])) if layer is not None else step[0]
        viewer.dims.current_step = tuple(step)
    viewer.camera.center = tuple(where[-2:])
