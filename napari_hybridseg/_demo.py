"""``napari-hybridseg demo``: napari with the sample project and the dock widget."""

from __future__ import annotations

from pathlib import Path


def run_demo(
    steps: int | None = None, screenshot: Path | None = None, quit_after: bool = False, project: Path | None = None
) -> int:
    import napari
    from qtpy.QtCore import QTimer

    from ._qt import layers as L
    from ._qt.widget import HybridSegWidget
    from ._sample_data import demo_project_path
    from .bridge import role_of

    root = Path(project) if project is not None else demo_project_path()
    viewer = napari.Viewer(title="napari-hybridseg")
    viewer.window.resize(1600, 1000)
    widget = HybridSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Hybrid segmentation", area="right")
    widget.open_project(root)
    # start on the first image with boxes: it shows the learned weights best
    names = [role_of(layer)[1] for layer in L.tagged_images(viewer)]
    boxed = [n for n in names if L.find_layer(viewer, n, "boxes") is not None]
    if boxed or names:
        first = (boxed or names)[0]
        widget.annotate.image_combo.setCurrentText(first)
        L.show_only(viewer, first)
        viewer.reset_view()
    state = {"code": 0}

    def finish(event=None) -> None:
        from . import protocol as ev

        if isinstance(event, ev.ErrorEvent):
            state["code"] = 1
        if screenshot is not None:
            # let the last overlays draw before grabbing the window
            QTimer.singleShot(700, lambda: _shoot_and_quit(viewer, screenshot, quit_after))
        elif quit_after:
            viewer.close()

    if steps:
        widget.train.every.setValue(max(1, min(20, steps // 4)))
        widget.finished.connect(finish)
        if not widget.start_training(steps=steps):
            return 1
    elif screenshot is not None or quit_after:
        QTimer.singleShot(1500, finish)
    napari.run()
    return state["code"]


def _shoot_and_quit(viewer, path: Path, quit_after: bool) -> None:
    viewer.screenshot(str(path), canvas_only=False)
    print(f"saved {path}")
    if quit_after:
        viewer.close()
