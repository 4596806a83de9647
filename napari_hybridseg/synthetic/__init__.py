"""Seeded synthetic data: microscopy- and scan-like images with ground truth and
simulated weak labels, a chosen share of which is corrupted.

Used by the sample data, the tests and the benchmarks.  Pure NumPy/scikit-image.
"""

from .scenes import make_project, synth_image, synth_volume
from .weak import ANNOTATORS, AnnotatorStyle, WeakLabels, simulate_weak_labels

__all__ = [
    "ANNOTATORS",
    "AnnotatorStyle",
    "WeakLabels",
    "make_project",
    "simulate_weak_labels",
    "synth_image",
    "synth_volume",
]
