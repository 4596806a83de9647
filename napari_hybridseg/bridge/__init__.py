"""napari layer data <-> the annotation model, role tags, and how weights are shown.

Works on plain layer-data tuples and duck-typed layers: imports neither napari nor Qt.
"""

from .box_ids import new_boxes_get_new_ids, note_box_ids
from .image_layers import layer_image, layer_meta, layer_tag, spatial_shape
from .layer_data import (
    BACKGROUND_STROKE_COLOUR,
    META_KEY,
    ROLE_SUFFIX,
    annotated_slices,
    annotation_layer_data,
    annotations_from_layers,
    box_to_corners,
    boxes_from_shapes,
    class_colormaps,
    classes_of_layers,
    corners_to_box,
    image_metadata,
    layer_name,
    project_layer_data,
    record_painted_slices,
    role_of,
    shape_classes,
)
from .weights_view import rank_next, scribble_label_weights, stroke_centre, unboxed_objects, weight_colors

__all__ = [
    "BACKGROUND_STROKE_COLOUR",
    "META_KEY",
    "ROLE_SUFFIX",
    "annotated_slices",
    "annotation_layer_data",
    "annotations_from_layers",
    "box_to_corners",
    "boxes_from_shapes",
    "class_colormaps",
    "classes_of_layers",
    "corners_to_box",
    "image_metadata",
    "layer_image",
    "layer_meta",
    "layer_name",
    "layer_tag",
    "new_boxes_get_new_ids",
    "note_box_ids",
    "project_layer_data",
    "rank_next",
    "record_painted_slices",
    "role_of",
    "scribble_label_weights",
    "shape_classes",
    "spatial_shape",
    "stroke_centre",
    "unboxed_objects",
    "weight_colors",
]
