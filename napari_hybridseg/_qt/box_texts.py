"""Weights written beside boxes only where they can be read.

Seen whole, an image of a few hundred boxes shows each box a few pixels wide: the
numbers beside them overlap into a grey band, and napari lays every one of them out
again at each step of a zoom or pan (the largest cost of a pan while training,
BENCHMARKS.md, the live loop).  The numbers are shown once the boxes on screen are
large enough to carry them; the box colours say the weight at every zoom.
"""

from __future__ import annotations

import numpy as np

from ..bridge import role_of

# a box side on screen (screen pixels) from which its weight is written beside it
MIN_BOX_PX = 32.0


def box_side(layer) -> float:
    """The median short side of the boxes of a shapes layer, in world units."""
    sides = [np.ptp(np.asarray(d)[:, -2:], axis=0).min() for d in layer.data]
    scale = float(np.min(np.asarray(layer.scale)[-2:]))
    return float(np.median(sides)) * scale if sides else 0.0


def readable(layer, zoom: float) -> bool:
    """Whether the boxes of ``layer`` are large enough on screen at ``zoom`` (screen
    pixels per world unit) for their weights to be read."""
    return box_side(layer) * zoom >= MIN_BOX_PX


def weight_text(layer, zoom: float) -> dict:
    """The text of a boxes layer that shows its ``weight`` feature."""
    return {
        "string": "{weight:.2f}",
        "color": "white",
        "size": 8,
        "anchor": "upper_left",
        "visible": readable(layer, zoom),
    }


def follow_zoom(viewer) -> None:
    """Show or hide the weights beside boxes as the user zooms."""
    viewer.camera.events.zoom.connect(lambda event: update(viewer))


def update(viewer) -> None:
    """Show the weights of boxes (and of background regions) that are readable at the
    current zoom, hide the others."""
    zoom = float(viewer.camera.zoom)
    for layer in viewer.layers:
        if role_of(layer)[0] not in ("boxes", "regions") or "weight" not in layer.features or not len(layer.data):
            continue
        want = readable(layer, zoom)
        if bool(layer.text.visible) != want:
            layer.text.visible = want
