"""The annotation model: images with full masks, boxes and scribbles, and the project folder.

No torch, no napari, no Qt.
"""

from .box_files import BOX_COLUMNS_2D, BOX_COLUMNS_3D, boxes_to_csv, parse_boxes_csv, read_boxes_csv
from .classes import LabelClasses, check_class_values, stroke_class
from .model import (
    BACKGROUND_STROKE,
    FIRST_OBJECT_STROKE,
    Box,
    ImageAnnotations,
    image_name_problem,
    validate_annotations,
    validate_image,
)
from .project import Project, intensity_setting, save_image_annotations
from .strokes import Stroke, parse_stroke_id, slice_strokes

__all__ = [
    "BACKGROUND_STROKE",
    "BOX_COLUMNS_2D",
    "BOX_COLUMNS_3D",
    "FIRST_OBJECT_STROKE",
    "Box",
    "ImageAnnotations",
    "LabelClasses",
    "Project",
    "intensity_setting",
    "Stroke",
    "boxes_to_csv",
    "check_class_values",
    "image_name_problem",
    "parse_boxes_csv",
    "parse_stroke_id",
    "read_boxes_csv",
    "save_image_annotations",
    "slice_strokes",
    "stroke_class",
    "validate_annotations",
    "validate_image",
]
