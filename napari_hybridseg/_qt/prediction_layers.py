"""The prediction layers of an image: created on the first preview, updated in place
(whole, a slice, or the part on screen), and, while hidden, updated when shown."""

from __future__ import annotations

import weakref

import numpy as np

from .layers import find_layer, layer_name, tag


def show_prediction(
    viewer, image: str, z, probability, uncertainty, threshold: float = 0.5, all_layers=False, origin=None
) -> None:
    """Create or update ``<image> prediction``/``probability``/``disagreement`` for one slice,
    or for the part of it that starts at ``origin`` (y, x) when the maps cover only that.

    While training, one missing layer is added per call (adding a layer costs napari
    0.1-0.2 s); ``all_layers`` adds them all at once, for one-off predictions.
    """
    from ..inference import labels_from_probability

    src = find_layer(viewer, image, "image")
    if src is None:
        return
    spatial = src.data.shape[:-1] if src.rgb else src.data.shape
    common = {"scale": src.scale[-len(spatial) :], "translate": src.translate[-len(spatial) :]}
    maps = [
        ("prediction", labels_from_probability(probability, threshold), "labels"),
        ("probability", probability.astype(np.float32), "image"),
    ]
    if uncertainty is not None:
        maps.append(("disagreement", uncertainty.astype(np.float32), "image"))
    where = _map_index(z, origin, probability.shape)
    created = False
    for role, data, kind in maps:
        layer = find_layer(viewer, image, role)
        if layer is None and created and not all_layers:
            continue
        if layer is None:
            created = True
            full = np.zeros(spatial, data.dtype if kind == "image" else np.int32)
            if kind == "labels":
                layer = viewer.add_labels(full, name=layer_name(image, role), opacity=0.6, **common)
            else:
                layer = viewer.add_image(
                    full,
                    name=layer_name(image, role),
                    colormap="magma" if role == "disagreement" else "viridis",
                    contrast_limits=(0, 1 if role == "probability" else 0.5),
                    blending="additive",
                    visible=False,
                    opacity=0.7,
                    **common,
                )
            tag(layer, role, image)
            layer.events.visible.connect(lambda event, layer=layer: _apply_pending(layer))
        if not layer.visible and not all_layers:  # while training, a hidden map waits until it is shown
            _hold(layer, where, data)
            continue
        _PENDING.pop(layer, None)
        _set_map(layer, where, data)


# per hidden prediction layer, the updates to apply when it is shown: the latest whole
# map and the parts predicted since
_PENDING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
MAX_PENDING = 8


def _map_index(z, origin, shape) -> tuple:
    """Where a map of ``shape`` goes in its layer's data: slice ``z`` (of a volume), the
    part from ``origin``; ``()`` for the whole 2D data."""
    index = () if z is None else (z,)
    if origin is not None:
        index += tuple(slice(o, o + n) for o, n in zip(origin, shape))
    return index


def _hold(layer, where: tuple, data) -> None:
    updates = _PENDING.get(layer, [])
    if not any(isinstance(i, slice) for i in where):  # a whole map replaces what waited
        updates = [u for u in updates if u[0][:1] != where[:1]] if where else []
    _PENDING[layer] = [*updates, (where, data)][-MAX_PENDING:]


def _set_map(layer, where: tuple, data) -> None:
    if layer.data.ndim == data.ndim and not any(isinstance(i, slice) for i in where):
        layer.data = data.astype(layer.data.dtype)
    else:
        layer.data[where] = data
        layer.refresh()


def _apply_pending(layer) -> None:
    if layer.visible and layer in _PENDING:
        for where, data in _PENDING.pop(layer):
            _set_map(layer, where, data)
