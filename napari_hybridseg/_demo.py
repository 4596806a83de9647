"""``napari-hybridseg demo``: napari with the sample project (GUI layer)."""

from __future__ import annotations

from pathlib import Path


def run_demo(
    steps: int | None = None, screenshot: Path | None = None, quit_after: bool = False, project: Path | None = None
) -> int:
    import napari
    from qtpy.QtCore import QTimer

    from ._sample_data import sample_project_path

    root = Path(project) if project is not None else sample_project_path()
    viewer = napari.Viewer(title="napari-hybridseg demo")
    viewer.open(str(root), plugin="napari-hybridseg")
    widget = None
    try:
        from ._qt.widget import HybridSegWidget
    except ImportError:  # the dock widget is optional for the demo
        HybridSegWidget = None
    if HybridSegWidget is not None:
        widget = HybridSegWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Hybrid segmentation", area="right")
        widget.open_project(root)

    def finish() -> None:
        if screenshot is not None:
            viewer.screenshot(str(screenshot), canvas_only=False)
        if quit_after:
            viewer.close()

    if steps and widget is not None:
        widget.finished.connect(lambda *_: QTimer.singleShot(500, finish))
        widget.start_training(steps=steps)
    elif screenshot is not None or quit_after:
        QTimer.singleShot(1500, finish)
    napari.run()
    return 0
