"""Prediction with trained networks, and writing its results."""

from .output import explain_empty, labels_from_probability, save_prediction
from .predict import Prediction, predict_array, predict_image, predict_with_model

__all__ = [
    "Prediction",
    "explain_empty",
    "labels_from_probability",
    "predict_array",
    "predict_image",
    "predict_with_model",
    "save_prediction",
]
