"""Prediction with trained networks, and writing its results."""

from .output import explain_empty, labels_from_probability, save_prediction
from .predict import Prediction, predict_array, predict_image

__all__ = [
    "Prediction",
    "explain_empty",
    "labels_from_probability",
    "predict_array",
    "predict_image",
    "save_prediction",
]
