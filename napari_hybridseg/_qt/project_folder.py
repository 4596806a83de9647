"""The dock widget's project folder: open one, save into one, and the autosave's target.

Autosave writes the layers in view into the project folder, so a folder is taken only
when the images in view are its own: opening another project over them, or saving into a
folder that holds another project, is refused instead of overwriting its annotations.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog

from ..bridge import layer_tag, role_of
from ..errors import HybridSegError
from . import layers as L
from .live_view import notify_error


def _same(a, b) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


class ProjectFolderMixin:
    """Project folder actions of :class:`HybridSegWidget` (``self.viewer``, ``self.annotate``)."""

    project_root: Path | None

    def open_project(self, root) -> None:
        """Show a project folder's layers (opening them if needed) and autosave into it."""
        root = Path(root)
        shown = L.tagged_images(self.viewer)
        home = lambda layer: layer_tag(layer).get("project")  # noqa: E731
        others = [layer.name for layer in shown if not (_same(home(layer), root) or _same(self.project_root, root))]
        if others:
            raise HybridSegError(
                f"{root}: the viewer shows images of another project or of none ({', '.join(others[:3])}); "
                "remove their layers first, so that autosave does not write them into this project"
            )
        if not shown:
            self.viewer.open(str(root), plugin="napari-hybridseg")
        self._take_folder(root)
        self._prepare_training()

    def save_project(self, root) -> None:
        """Save the images in view and their annotations into ``root``, then autosave there."""
        root = Path(root)
        if not _same(self.project_root, root) and any((root / "images").glob("*")):
            raise HybridSegError(f"{root}: holds another project's images; choose an empty folder, or open it")
        L.collect_project(self.viewer, root).save(root)
        self._take_folder(root)

    def _take_folder(self, root: Path) -> None:
        self.project_root = root
        for layer in L.tagged_images(self.viewer):
            L.tag(layer, "image", role_of(layer)[1], project=str(root))
        self.annotate.project_label.setText(f"project: {root}")
        self._layers_changed()

    def _folder_dialog(self, title: str, action) -> None:
        path = QFileDialog.getExistingDirectory(self, title)
        if path:
            try:
                action(path)
            except (HybridSegError, OSError, ValueError) as exc:
                notify_error(str(exc))
