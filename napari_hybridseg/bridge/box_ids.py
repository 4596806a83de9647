"""Box ids that stay with their boxes: a weight and a pin are keyed by a box's id, so a
new box must never take the id of a box deleted before it.  Works on duck-typed napari
Shapes layers; imports neither napari nor Qt."""

from __future__ import annotations

import numpy as np

from .layer_data import META_KEY


def note_box_ids(boxes_layer, ids) -> None:
    """Record in a boxes layer that ``ids`` are taken: new boxes get ids above them, even
    after these boxes are deleted."""
    tag = boxes_layer.metadata.setdefault(META_KEY, {})
    taken = [int(i) for i in np.asarray(ids, dtype=float) if i == i]
    tag["next_box_id"] = max(int(tag.get("next_box_id", 1)), max(taken, default=0) + 1)


def new_boxes_get_new_ids(layer) -> None:
    """napari gives a new shape the features of the shape selected last, its ``id`` too,
    though that box may have been deleted since: the new box would take over its weight
    and pin.  New boxes get ids above every id the layer held instead."""
    before = [len(layer.data)]

    def on_data(event) -> None:
        action = str(getattr(event.action, "value", event.action))
        if action == "adding":
            before[0] = len(layer.data)
        elif action == "added" and "id" in layer.features and len(layer.data) > before[0]:
            ids = np.asarray(layer.features["id"], dtype=float).copy()
            kept = ids[: before[0]]
            first = max(np.nanmax(kept, initial=0) + 1, (layer.metadata.get(META_KEY) or {}).get("next_box_id", 1))
            ids[before[0] :] = np.arange(first, first + len(ids) - before[0])
            layer.features = {
                **{k: v for k, v in layer.features.items() if k != "id"},
                "id": np.nan_to_num(ids).astype(int),
            }
            note_box_ids(layer, ids)

    layer.events.data.connect(on_data)
