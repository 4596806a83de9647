"""When an edit to an annotation layer counts: painting, drawing, replacing the data, and
napari's undo and redo (which announce only a refresh)."""

from __future__ import annotations

from ..bridge import META_KEY, layer_tag, new_boxes_get_new_ids, record_painted_slices, role_of
from ..bridge.layer_data import painted_slices


def watch(layer, on_edit, across=None, warn=None) -> None:
    """Call ``on_edit`` when an annotation layer is edited.  A volume's masks layer also
    records the slices painted on; its data replaced whole (by a script, say) is a mask
    of every slice again.  ``across()``: whether the view shows the slice axis, where
    painting a volume's masks or drawing its boxes makes every slice touched a masked
    slice or a box one row high: ``warn`` is told so."""
    role = role_of(layer)[0]
    if role == "strong":
        layer.events.data.connect(lambda event, layer=layer: _whole_mask(layer))
        layer.events.paint.connect(lambda event, layer=layer: record_painted_slices(layer, event.value))
    if across is not None and warn is not None and layer.ndim == 3 and role in ("strong", "boxes"):
        what = "every slice painted counts as masked" if role == "strong" else "boxes lie on one slice"

        def check_view(event) -> None:
            if across() and getattr(event, "action", None) not in ("adding", "changing", "removing", "removed"):
                warn(f"layer {layer.name!r}: edited in a view across slices, but {what}: undo, and edit slice by slice")

        (layer.events.paint if role == "strong" else layer.events.data).connect(check_view)
    if role == "boxes":
        new_boxes_get_new_ids(layer)
    layer.events.data.connect(on_edit)
    if hasattr(layer.events, "paint"):
        layer.events.paint.connect(on_edit)
    if hasattr(layer, "_undo_history"):  # undo and redo announce only a refresh: the history tells them apart
        history = lambda: (len(layer._undo_history), len(layer._redo_history))  # noqa: E731
        seen = [history()]
        before = set(layer_tag(layer).get("annotated_slices") or ())

        def on_refresh(event) -> None:
            if history() != seen[0]:
                seen[0] = history()
                if role_of(layer)[0] == "strong":
                    _recount_slices(layer, before)
                on_edit(event)

        layer.events.set_data.connect(on_refresh)


def _whole_mask(layer) -> None:
    meta = dict(layer_tag(layer))
    if meta.pop("annotated_slices", None) is not None:
        layer.metadata = {**layer.metadata, META_KEY: meta}


def _recount_slices(layer, before: set[int]) -> None:
    """After an undo or redo of a volume's masks: the slices of the edits now applied are
    masked slices, and those touched only by edits now undone are not (unless they were
    masked before the layer was watched, or hold a label)."""
    meta = dict(layer_tag(layer))
    if meta.get("annotated_slices") is None or layer.ndim != 3:
        return
    depth = layer.data.shape[0]
    applied = set().union(*(painted_slices(item, depth) for item in layer._undo_history))
    undone = set().union(*(painted_slices(item, depth) for item in layer._redo_history))
    meta["annotated_slices"] = sorted((set(meta["annotated_slices"]) | applied) - (undone - applied - before))
    layer.metadata = {**layer.metadata, META_KEY: meta}
