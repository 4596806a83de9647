"""A run that napari follows through its folder: no server, only files.

The trainer (``train --follow-project``, on a GPU server, under Slurm) appends its
events to ``RUN/events.jsonl`` (the latest preview beside it in ``RUN/preview.npz``),
reloads the project folder when annotations saved in napari change it, and obeys
``RUN/control.json``, the state napari asks for (pause, stop, pins, preview), which
napari writes atomically.  A malformed or half-written file is skipped with a
warning, never a crash.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import numpy as np

from .. import protocol as P
from ..atomic import atomic_path, atomic_write_text
from ..errors import AnnotationError, ImageReadError

EVENTS_FILE = "events.jsonl"
PREVIEW_FILE = "preview.npz"
CONTROL_FILE = "control.json"
PROJECT_FOLDERS = ("images", "strong", "scribbles", "boxes")


def default_control() -> dict:
    return {"stop": False, "pause": False, "pins": [], "preview": None}


def write_control(run_dir: str | Path, control: dict) -> None:
    """napari's side: the state the run should be in, written atomically."""
    atomic_write_text(Path(run_dir) / CONTROL_FILE, json.dumps(control) + "\n")


def read_control(run_dir: str | Path) -> dict | None:
    """The requested state, or ``None`` (no file, or a malformed one: warned about)."""
    path = Path(run_dir) / CONTROL_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        control = {**default_control(), **data}
        if not isinstance(control["pins"], list) or not isinstance(control["stop"], bool):
            raise ValueError("unexpected layout")
        return control
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path}: ignored ({exc})", stacklevel=2)
        return None


def commands_between(old: dict, new: dict) -> list:
    """The commands that take a run from control state ``old`` to ``new``."""
    out: list = []
    if new["pause"] != old["pause"]:
        out.append(P.Pause() if new["pause"] else P.Resume())
    old_pins = {tuple(p[:3]): p[3] for p in old["pins"]}
    new_pins = {tuple(p[:3]): p[3] for p in new["pins"]}
    for key in old_pins.keys() - new_pins.keys():
        out.append(P.Pin(P.InstanceKey(*key), None))
    for key, value in new_pins.items():
        if old_pins.get(key) != value:
            out.append(P.Pin(P.InstanceKey(*key), float(value)))
    if new["preview"] != old["preview"]:
        image, z, every = new["preview"] or (None, None, 0)
        out.append(P.RequestPreview(image, z, int(every)))
    if new["stop"] and not old["stop"]:
        out.append(P.Stop())
    return out


def project_signature(root: Path) -> tuple:
    """Name, size and modification time of every annotation file: changes with any edit."""
    entries = []
    for folder in PROJECT_FOLDERS:
        d = root / folder
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if not p.name.startswith("."):
                    st = p.stat()
                    entries.append((folder, p.name, st.st_size, st.st_mtime_ns))
    flags = root / "project.json"
    if flags.exists():
        entries.append(("project.json", flags.stat().st_size, flags.stat().st_mtime_ns))
    return tuple(entries)


class Follower:
    """The trainer's side: a thread that turns control-file changes and edits of the
    project folder into commands for the loop's ``inbox``."""

    def __init__(self, project_root: str | Path, run_dir: str | Path, inbox, interval: float = 1.0) -> None:
        self.root = Path(project_root)
        self.run_dir = Path(run_dir)
        self.inbox = inbox
        self.interval = interval
        self._control = read_control(self.run_dir) or default_control()
        self._signature = project_signature(self.root)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hybridseg-follow", daemon=True)

    def __enter__(self) -> Follower:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._done.wait(self.interval):
            self.check()

    def check(self) -> None:
        """One look at the control file and the project folder."""
        control = read_control(self.run_dir)
        if control is not None and control != self._control:
            for command in commands_between(self._control, control):
                self.inbox.put(command)
            self._control = control
        signature = project_signature(self.root)
        if signature != self._signature:
            from ..annotations import Project

            try:
                project = Project.load(self.root)
            except (AnnotationError, ImageReadError) as exc:  # mid-copy, or a mistake: wait for the next edit
                warnings.warn(f"edits not used yet: {exc}", stacklevel=2)
                return
            self._signature = signature
            self.inbox.put(P.UpdateProject(project))


class EventLog:
    """The trainer's events as JSON lines (previews: the latest maps in an ``.npz``)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / EVENTS_FILE

    def write(self, event) -> None:
        if isinstance(event, P.PreviewEvent):
            maps = {"probability": event.probability}
            if event.uncertainty is not None:
                maps["uncertainty"] = event.uncertainty
            with atomic_path(self.run_dir / PREVIEW_FILE) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, step=np.array(event.step), **maps)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(P.event_to_record(event)) + "\n")


class EventReader:
    """napari's side: the events appended since the last read (complete lines only)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._offset = 0

    def read(self) -> list:
        path = self.run_dir / EVENTS_FILE
        if not path.is_file():
            return []
        with open(path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self._offset += end
        events = []
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
                arrays = self._preview(record) if record.get("type") == "PreviewEvent" else None
                if arrays is not None or record.get("type") != "PreviewEvent":
                    events.append(P.event_from_record(record, arrays))
            except (ValueError, OSError, KeyError) as exc:
                warnings.warn(f"{path}: a line was skipped ({exc})", stacklevel=2)
        return events

    def _preview(self, record: dict) -> dict | None:
        """The maps of the latest preview, if it is the one this record announces."""
        with np.load(self.run_dir / PREVIEW_FILE) as data:
            if int(data["step"]) != int(record.get("step", -1)):
                return None  # already replaced by a newer preview: that one comes with its own record
            return {k: data[k] for k in data.files if k != "step"}
