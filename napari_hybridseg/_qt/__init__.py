"""Qt widgets of the napari plugin (the only package that imports Qt or napari)."""
