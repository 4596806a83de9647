"""napari-hybridseg: train segmentation networks from boxes, scribbles and a few full masks.

The compute modules (annotations, images, training, prediction) import neither
napari nor Qt; the napari integration lives in ``_reader``, ``_writer``,
``_sample_data`` and ``_qt``.
"""

__version__ = "0.1.0"
