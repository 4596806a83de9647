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


def _valid_control(data) -> dict:
    if not isinstance(data, dict):
        raise ValueError("not an object")
    control = {**default_control(), **data}
    if not isinstance(control["stop"], bool) or not isinstance(control["pause"], bool):
        raise ValueError("stop and pause must be true or false")
    pins = control["pins"]
    if not isinstance(pins, list) or not all(
        isinstance(p, list) and len(p) == 4 and all(isinstance(v, str) for v in p[:3]) and _number(p[3]) for p in pins
    ):
        raise ValueError("pins must be [image, instance, kind, weight] lists")
    preview = control["preview"]
    if preview is not None and not (
        isinstance(preview, list)
        and len(preview) == 3
        and isinstance(preview[0], str)
        and (preview[1] is None or isinstance(preview[1], int))
        and isinstance(preview[2], int)
    ):
        raise ValueError("preview must be [image, slice or null, every]")
    return control


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def read_control(run_dir: str | Path) -> dict | None:
    """The requested state, or ``None`` (no file, or a malformed one: warned about)."""
    path = Path(run_dir) / CONTROL_FILE
    if not path.is_file():
        return None
    try:
        return _valid_control(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError) as exc:
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

    def __init__(self, project_root: str | Path, run_dir: str | Path, inbox, interval: float = 1.0, pins=None) -> None:
        self.root = Path(project_root)
        self.run_dir = Path(run_dir)
        self.inbox = inbox
        self.interval = interval
        # a new (or resumed) run starts from the default state: a stop or pause left in the
        # file by an earlier run must not stop this one, nor make the next Stop a no-op.  The
        # pins the run holds (``{InstanceKey: weight}``, a resumed run's) are written in, so
        # that napari shows them and can release them.
        self._control = {**default_control(), "pins": [[*key, float(v)] for key, v in (pins or {}).items()]}
        write_control(self.run_dir, self._control)
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
            try:
                self.check()
            except Exception as exc:  # the thread must outlive any one bad look at the files
                warnings.warn(f"{self.run_dir}: following skipped a check ({type(exc).__name__}: {exc})", stacklevel=2)

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
            except (AnnotationError, ImageReadError, OSError) as exc:  # mid-copy, or a mistake: wait for the next edit
                warnings.warn(f"edits not used yet: {exc}", stacklevel=2)
                return
            self._signature = signature
            self.inbox.put(P.UpdateProject(project))


class EventLog:
    """The trainer's events as JSON lines (previews: the latest maps in an ``.npz``).

    Writing starts with the run's :class:`StartedEvent` (a trainer refused at start writes
    nothing into a live run's log), and a failed write is warned about once, never the
    end of training."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / EVENTS_FILE
        self._started = False
        self._failed = False

    def write(self, event) -> None:
        if isinstance(event, P.StartedEvent):
            self._started = True
            if self.path.exists() and self.path.stat().st_size:
                with open(self.path, "rb") as fh:  # a line cut short by a killed trainer stays apart
                    fh.seek(-1, 2)
                    if fh.read(1) != b"\n":
                        self._append("\n")
        if not self._started:
            return
        try:
            self._write(event)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                warnings.warn(f"{self.path}: events not written ({exc}); training goes on", stacklevel=2)

    def _append(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)

    def _write(self, event) -> None:
        if isinstance(event, P.PreviewEvent):
            maps = {"probability": event.probability}
            if event.uncertainty is not None:
                maps["uncertainty"] = event.uncertainty
            if event.classes is not None:
                maps["classes"] = event.classes
            with atomic_path(self.run_dir / PREVIEW_FILE) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, step=np.array(event.step), **maps)
        self._append(json.dumps(P.event_to_record(event)) + "\n")


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
                arrays = (
                    self._preview(record) if isinstance(record, dict) and record.get("type") == "PreviewEvent" else None
                )
                if arrays is not None or record.get("type") != "PreviewEvent":
                    events.append(P.event_from_record(record, arrays))
            except Exception as exc:  # a damaged line or preview file is skipped, whatever the damage
                warnings.warn(f"{path}: a line was skipped ({exc})", stacklevel=2)
        return events

    def _preview(self, record: dict) -> dict | None:
        """The maps of the latest preview, if it is the one this record announces."""
        with np.load(self.run_dir / PREVIEW_FILE) as data:
            if int(data["step"]) != int(record.get("step", -1)):
                return None  # already replaced by a newer preview: that one comes with its own record
            return {k: data[k] for k in data.files if k != "step"}
