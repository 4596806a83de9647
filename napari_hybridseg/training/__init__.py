"""The training engine: state, methods, one step, DII, DCR, instance weights, the run
folder and the loop that speaks :mod:`napari_hybridseg.protocol`.  No napari, no Qt."""

from .loop import TrainingLoop, TrainingSpec

__all__ = ["TrainingLoop", "TrainingSpec"]
