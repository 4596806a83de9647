"""Conversion between napari layer data and the annotation model.

The one place that knows how annotations look as napari layers.  It works on
plain layer-data tuples and duck-typed layers, so it imports neither napari nor Qt.

Role tags live in ``layer.metadata["hybridseg"]``::

    {"role": "image" | "boxes" | "scribbles" | "strong" | "prediction" | ...,
     "image": NAME, "exhaustive": bool, "format": ..., "spacing": [...], "affine": [...],
     "classes": [{"name": ..., "colour": ...}, ...]}   (image layers of a project with classes)

A boxes layer's ``class`` feature holds each box's class (1 where missing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..annotations import Box, ImageAnnotations, LabelClasses, Project
from ..annotations.model import labelled_slices, read_only_copy
from .image_layers import CHANNELS_FIRST, META_KEY, layer_image, layer_meta, layer_tag, shows_channels_first

ROLE_SUFFIX = {"boxes": "boxes", "scribbles": "scribbles", "strong": "masks"}


def layer_name(image: str, role: str) -> str:
    """``"<image> boxes"``, ``"<image> scribbles"``, ``"<image> masks"``."""
    return f"{image} {ROLE_SUFFIX.get(role, role)}"


def box_to_corners(box: Box) -> np.ndarray:
    """Rectangle corners in napari world coordinates (pixel centres at integers)."""
    y0, x0, y1, x1 = box.y0 - 0.5, box.x0 - 0.5, box.y1 - 0.5, box.x1 - 0.5
    corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)
    if box.z is not None:
        corners = np.column_stack([np.full(4, float(box.z)), corners])
    return corners


def corners_to_box(corners: np.ndarray, box_id: int, cls: int = 1) -> Box:
    """Inverse of :func:`box_to_corners`; any quadrilateral becomes the box of the pixels
    whose centres its bounding rectangle encloses."""
    corners = np.asarray(corners, float)
    z = None
    if corners.shape[1] == 3:
        z = int(round(float(np.median(corners[:, 0]))))
        corners = corners[:, 1:]
    # the pixels whose centres the rectangle encloses (pixel k spans k - 0.5 to k + 0.5), alike
    # on every side; a centre missed by under 1e-6 (float noise) counts as enclosed
    lo = np.ceil(corners.min(0) - 1e-6).astype(int)
    hi = np.floor(corners.max(0) + 1e-6).astype(int) + 1
    return Box(int(box_id), int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]), z, int(cls))


def image_metadata(
    item: ImageAnnotations, role: str, root: Path | None = None, classes: LabelClasses | None = None
) -> dict:
    meta = {"role": role, "image": item.name, "exhaustive": item.exhaustive}
    meta.update(item.meta.to_layer_metadata())
    if root is not None:
        meta["project"] = str(root)
    if classes is not None and role == "image":  # the project's classes travel with its images
        meta["classes"] = classes.to_json()
    return {META_KEY: meta}


BACKGROUND_STROKE_COLOUR = "#ffffff"  # outside the class palette


def class_colormaps(classes: LabelClasses | None) -> tuple[dict, dict]:
    """Label colours ``(masks, scribbles)`` by class (napari reads a dict of id to colour):
    a mask's id is its class, a stroke's value ``1 + class`` (1 is background).  Empty
    without classes: napari's own colours, as for a project of one structure."""
    if classes is None:
        return {}, {}
    masks = {0: "transparent", None: "magenta"}
    strokes = {0: "transparent", 1: BACKGROUND_STROKE_COLOUR, None: "magenta"}
    for k, colour in enumerate(classes.colours, start=1):
        masks[k], strokes[k + 1] = colour, colour
    return {"colormap": masks}, {"colormap": strokes}


def annotation_layer_data(
    item: ImageAnnotations, root: Path | None = None, visible: bool = True, classes: LabelClasses | None = None
):
    """Layer-data tuples for one image and its annotations (image, masks, scribbles, boxes)."""
    scale = item.meta.napari_scale(len(item.spatial_shape))
    common = {"scale": scale, "visible": visible}
    mask_colours, stroke_colours = class_colormaps(classes)
    image, image_scale, metadata = item.image, scale, image_metadata(item, "image", root, classes)
    if shows_channels_first(item.axes, item.n_channels):
        image, image_scale = np.moveaxis(item.image, -1, 0), (1.0, *scale)
        metadata[META_KEY][CHANNELS_FIRST] = True
    layers = [
        (
            image,
            {
                "name": item.name,
                "rgb": item.axes == "yxc" and item.n_channels in (3, 4),
                "metadata": metadata,
                **common,
                "scale": image_scale,
            },
            "image",
        )
    ]
    if item.strong is not None:
        layers.append(
            (
                item.strong,
                {
                    "name": layer_name(item.name, "strong"),
                    "metadata": _with_slices(image_metadata(item, "strong", root), item.strong_slices),
                    "opacity": 0.5,
                    **mask_colours,
                    **common,
                },
                "labels",
            )
        )
    if item.scribbles is not None:
        layers.append(
            (
                item.scribbles,
                {
                    "name": layer_name(item.name, "scribbles"),
                    "metadata": image_metadata(item, "scribbles", root),
                    **stroke_colours,
                    **common,
                },
                "labels",
            )
        )
    if not item.is_volume:
        # the prediction layer is made with the others: made later, while training, it would
        # hold napari for a fraction of a second (a volume's, large, waits for a prediction)
        prediction = {"role": "prediction", "image": item.name}
        layers.append(
            (
                np.zeros(item.spatial_shape, np.int32),
                {
                    "name": layer_name(item.name, "prediction"),
                    "metadata": {META_KEY: prediction},
                    "opacity": 0.6,
                    **mask_colours,
                    **common,
                },
                "labels",
            )
        )
    if item.boxes:
        layers.append(
            (
                [box_to_corners(b) for b in item.boxes],
                {
                    "name": layer_name(item.name, "boxes"),
                    "shape_type": "rectangle",
                    "features": {"id": [b.id for b in item.boxes], "class": [b.cls for b in item.boxes]},
                    "edge_color": [classes.colours[b.cls - 1] for b in item.boxes] if classes else "yellow",
                    "face_color": "transparent",
                    "edge_width": 1,
                    "metadata": image_metadata(item, "boxes", root),
                    **common,
                },
                "shapes",
            )
        )
    return layers


def project_layer_data(project: Project) -> list:
    """Layer-data tuples for every image of a project; only the first is visible."""
    out = []
    for k, item in enumerate(project):
        out.extend(annotation_layer_data(item, project.root, visible=k == 0, classes=project.classes))
    return out


def role_of(layer) -> tuple[str | None, str | None]:
    """``(role, image_name)`` of a tagged layer, or ``(None, None)``."""
    tag = layer_tag(layer)
    return tag.get("role"), tag.get("image")


def shape_classes(features, n_shapes: int) -> list[int]:
    """The class of each of a boxes layer's ``n_shapes`` shapes, from its ``class`` feature;
    1 for a shape drawn without one (napari fills the column with NaN or its default)."""
    if features is None or "class" not in features or len(features["class"]) != n_shapes:
        return [1] * n_shapes
    return [int(v) if v == v and v >= 1 else 1 for v in np.asarray(features["class"], dtype=float)]


def boxes_from_shapes(data, features=None, first_free: int = 1) -> list[Box]:
    """Boxes from a Shapes layer's rectangles.

    Ids come from the layer's ``id`` feature; a shape without a valid id (missing,
    below 1, or a duplicate, as napari gives new shapes) gets the next free id, at least
    ``first_free`` (above every id the layer held, so that a deleted box's weight and
    pin never pass to a new one).
    """
    ids: list[int | None] = [None] * len(data)
    if features is not None and "id" in features and len(features["id"]) == len(data):
        seen: set[int] = set()
        for k, value in enumerate(np.asarray(features["id"], dtype=float)):
            if value == value and value >= 1 and int(value) not in seen:
                ids[k] = int(value)
                seen.add(int(value))
    next_id = max(max([i for i in ids if i is not None], default=0) + 1, first_free)
    classes = shape_classes(features, len(data))
    boxes = []
    for k, corners in enumerate(data):
        if ids[k] is None:
            ids[k], next_id = next_id, next_id + 1
        boxes.append(corners_to_box(corners, ids[k], classes[k]))
    return boxes


def annotations_from_layers(image_layer, layers, image: np.ndarray | None = None, copy=True) -> ImageAnnotations:
    """One image and its role-tagged layers, as :class:`ImageAnnotations`.

    With ``copy``, every array is a read-only copy, so the user may keep painting while
    another thread trains on the snapshot.  ``image``: the image array to use (an
    already frozen copy, say: images are not painted, masks and scribbles are).
    """
    take = read_only_copy if copy else np.asarray
    tag = (image_layer.metadata or {}).get(META_KEY, {})
    name = tag.get("image") or image_layer.name
    item = ImageAnnotations(
        name=name,
        image=layer_image(image_layer, image if image is not None else take(image_layer.data)),
        meta=layer_meta(image_layer),
        exhaustive=tag.get("exhaustive", True),
    )
    for layer in layers:
        role, owner = role_of(layer)
        if owner != name:
            continue
        if role == "strong":
            item.strong = take(layer.data)
            item.strong_slices = annotated_slices(layer)
        elif role == "scribbles":
            item.scribbles = take(layer.data)
        elif role == "boxes":
            first_free = int((layer.metadata.get(META_KEY) or {}).get("next_box_id", 1))
            item.boxes = boxes_from_shapes(layer.data, getattr(layer, "features", None), first_free)
    return item


def _with_slices(metadata: dict, slices: list[int] | None) -> dict:
    if slices is not None:
        metadata[META_KEY]["annotated_slices"] = list(slices)
    return metadata


def annotated_slices(masks_layer) -> list[int] | None:
    """The slices a volume's masks layer covers: those recorded as painted on (see
    :func:`record_painted_slices`) and those holding any label; ``None`` (every slice)
    for a layer that records none, such as a whole mask read from a file."""
    tag = (getattr(masks_layer, "metadata", {}) or {}).get(META_KEY) or {}
    recorded = tag.get("annotated_slices")
    data = masks_layer.data
    if recorded is None or np.ndim(data) != 3:
        return None
    return sorted(set(recorded) | set(labelled_slices(data)))


def painted_slices(atoms, depth: int) -> set[int]:
    """The slices napari's undo atoms of one edit touch (a bounding box of slices, or index arrays)."""
    zs: set[int] = set()
    for atom in atoms or ():
        key = getattr(atom, "slice_key", None)
        if key is not None:
            zs.update(range(*key[0].indices(depth)))
        else:
            zs.update(int(z) for z in np.unique(np.asarray(atom[0][0])))
    return zs


def record_painted_slices(masks_layer, atoms) -> None:
    """Remember the slices a paint event of a volume's masks layer touched (napari's undo
    atoms: a bounding box of slices, or index arrays), so that a slice painted and then
    erased to background still counts as annotated."""
    tag = dict((getattr(masks_layer, "metadata", {}) or {}).get(META_KEY) or {})
    if "annotated_slices" not in tag or np.ndim(masks_layer.data) != 3:
        return
    tag["annotated_slices"] = sorted(set(tag["annotated_slices"]) | painted_slices(atoms, masks_layer.data.shape[0]))
    masks_layer.metadata = {**masks_layer.metadata, META_KEY: tag}


def classes_of_layers(layers) -> LabelClasses | None:
    """The classes recorded on the tagged image layers (the first that has them), or
    ``None`` for a project of one structure."""
    for layer in layers:
        role, _ = role_of(layer)
        value = ((getattr(layer, "metadata", {}) or {}).get(META_KEY) or {}).get("classes")
        if role == "image" and value is not None:
            return LabelClasses.from_json(value, f"layer {layer.name!r}")
    return None
