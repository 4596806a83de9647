"""Prediction with trained networks, and writing its results."""

from .output import explain_empty, labels_from_probability, save_prediction
from .predict import Prediction, check_input, predict_array, predict_image, predict_with_model

__all__ = [
    "Prediction",
    "check_input",
    "explain_empty",
    "labels_from_probability",
    "predict_array",
    "predict_image",
    "predict_with_model",
    "save_prediction",
]
