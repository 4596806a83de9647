"""How large an image may be before it is read.

A small file can declare an enormous image (a compressed TIFF of 40960 x 40960, a
NIfTI header with any shape); reading it would take the machine's memory, and with
it a napari session and the user's unsaved strokes.  Every reader checks the declared
size against :func:`max_voxels` first.  The limit is generous by default and can be
raised with the ``NAPARI_HYBRIDSEG_MAX_VOXELS`` environment variable or ``--max-voxels``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import ImageReadError

ENV = "NAPARI_HYBRIDSEG_MAX_VOXELS"
DEFAULT_MAX_VOXELS = 2**31


def max_voxels() -> int:
    value = os.environ.get(ENV, "")
    try:
        return int(float(value)) if value.strip() else DEFAULT_MAX_VOXELS
    except ValueError:
        return DEFAULT_MAX_VOXELS


def set_max_voxels(value: int) -> None:
    """Change the limit for this process (the ``--max-voxels`` option)."""
    os.environ[ENV] = str(int(value))


def check_declared_size(path: str | Path, shape) -> None:
    """Refuse an image whose declared ``shape`` has more voxels than the limit."""
    voxels = math.prod(int(s) for s in shape)
    limit = max_voxels()
    if voxels > limit:
        raise ImageReadError(
            f"{path}: declares {' x '.join(str(int(s)) for s in shape)} = {voxels:,} values, more than the "
            f"limit of {limit:,}; raise it with --max-voxels or {ENV} if the machine has the memory"
        )


MAX_CLASSES = 127  # structures a project may segment: class ids fit the int8 training targets

# The largest model file the options allow: two 3D networks of 64 input channels, 128
# outputs and 4096 channels at the deepest level hold about 5.4 GiB of weights each.  A
# package's attachment that declares more is refused before a byte of it is unpacked.
MAX_MODEL_BYTES = 12 * 2**30
