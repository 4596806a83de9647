"""napari-hybridseg: train segmentation networks from boxes, scribbles and a few full masks.

The compute core (annotations, data, networks, losses, inference, training) imports
neither napari nor Qt; the napari integration lives in ``_reader``, ``_writer``,
``_sample_data``, ``_demo`` and ``_qt`` (contracts in pyproject.toml).
"""

__version__ = "0.1.0"
