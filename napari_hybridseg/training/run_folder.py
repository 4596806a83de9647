"""The run folder: ``config.json``, ``metrics.jsonl``, ``weights.csv``, ``checkpoint.pt``
and ``model.pt``, each written atomically, and the lock that keeps two runs apart.

A folder holding anything else is not a run: training refuses to write there unless
told to (``--force``), so a mistyped ``--out`` never replaces someone's files.
"""

from __future__ import annotations

import json
import math
import os
import socket
import warnings
from pathlib import Path

from ..atomic import atomic_write_text
from ..config import TrainConfig
from ..errors import OutputError
from ..modelfile import CHECKPOINT_FORMAT, VERSION, load_file, model_payload, save_file
from ..task import Task

RUN_FILES = {
    "config.json",
    "metrics.jsonl",
    "weights.csv",
    "checkpoint.pt",
    "model.pt",
    "events.jsonl",  # a followed run's events, previews and controls (see follow.py)
    "preview.npz",
    "control.json",
}
LOCK = ".lock"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _link(source: Path, target: Path) -> bool:
    """Create ``target`` as ``source``'s content, atomically; False if it exists."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create (a brief empty file)
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(source.read_text())
        return True


def read_lock(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` of a lock file, ``None`` if there is none; a damaged one reads as an
    ended process of this host."""
    try:
        data = json.loads(path.read_text())
        return int(data["pid"]), str(data["host"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return -1, socket.gethostname()


def lock_holder_alive(run_dir: str | Path) -> bool:
    """Whether a run still holds its folder (for another host: whether its lock is there)."""
    holder = read_lock(Path(run_dir) / LOCK)
    if holder is None:
        return False
    pid, host = holder
    return host != socket.gethostname() or _alive(pid)


def _own_aside(name: str) -> bool:
    """Files a run writes aside for a moment: atomic writes and locks being taken."""
    return name.startswith(LOCK + ".") or (name.startswith(".") and ".tmp" in name)


def _finite(value):
    """JSON has no NaN: a non-finite number is written as null."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


def fresh_run_folder(parent: str | Path, name: str) -> Path:
    """A folder ``parent/name`` that does not exist yet (``name-2``, ``name-3``, ... when it does)."""
    parent = Path(parent)
    for k in range(1, 10_000):
        candidate = parent / (name if k == 1 else f"{name}-{k}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return candidate
    raise OutputError(f"{parent}: no free run folder name for {name}")


class RunFolder:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._locked = False

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    def check_writable(self, resume: bool = False, force: bool = False) -> None:
        """Refuse a folder of other files, or a finished run that a new run would replace,
        unless ``force`` (or ``resume``, for a run of ours)."""
        if force or not self.root.exists():
            return
        if not self.root.is_dir():
            raise OutputError(f"{self.root}: is a file, not a run folder")
        names = {p.name for p in self.root.iterdir() if not _own_aside(p.name)}
        foreign = sorted(names - RUN_FILES - {LOCK})
        if foreign:
            raise OutputError(
                f"{self.root}: holds files that are not a napari-hybridseg run ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); choose another --out, or --force to write into it"
            )
        if not resume and names & {"model.pt", "checkpoint.pt"}:
            raise OutputError(
                f"{self.root}: already holds a run; continue it with --resume, or replace it with --force"
            )

    def lock(self) -> None:
        """Hold the folder for this run (already held by this object: nothing to do); a
        lock left by an ended process is taken over.

        The lock file appears complete or not at all (written aside, then hard-linked into
        place), and only one of two processes taking over a stale lock gets it."""
        if self._locked:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        mine = self.root / f"{LOCK}.{me['pid']}.{os.urandom(4).hex()}"
        try:
            mine.write_text(json.dumps(me))  # a full disk: the half-written file goes too
            for _ in range(5):
                if _link(mine, path):
                    self._locked = True
                    return
                other = read_lock(path)
                if other is None:
                    continue  # gone meanwhile: try again
                pid, host = other
                if host != me["host"] or _alive(pid):
                    raise OutputError(
                        f"{self.root}: in use by another training (process {pid} on {host}); "
                        f"wait for it, or remove {path} if it is not running"
                    )
                aside = self.root / f".lock.stale.{pid}.{me['pid']}"
                try:
                    os.rename(path, aside)  # atomic: of two takers, one moves it
                except FileNotFoundError:
                    continue
                if read_lock(aside) != other:  # moved someone's fresh lock: put it back
                    _link(aside, path)
                else:
                    warnings.warn(f"{path}: taking over the stale lock of process {pid}, which has ended", stacklevel=2)
                aside.unlink(missing_ok=True)
            raise OutputError(f"{self.root}: cannot take the run folder's lock {path}; try again")
        finally:
            mine.unlink(missing_ok=True)

    def unlock(self) -> None:
        if self._locked:
            (self.root / LOCK).unlink(missing_ok=True)
            self._locked = False

    def prepare(self, config: TrainConfig, step: int, fresh: bool = False) -> None:
        """Lock the folder, write ``config.json`` and drop metrics past ``step``.

        A ``fresh`` run (not resumed) first removes the files of the run it replaces: its
        checkpoint would be resumed, and its model taken for this run's.  ``control.json``
        stays: a followed run's follower has just written it."""
        self.lock()
        if fresh:
            for name in sorted(RUN_FILES - {"config.json", "metrics.jsonl", "control.json"}):
                (self.root / name).unlink(missing_ok=True)
        config.save(self.root / "config.json")
        if not self.metrics.exists():
            return
        keep = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
        atomic_write_text(self.metrics, "".join(k + "\n" for k in keep) if step else "")

    def log(self, record: dict) -> None:
        with open(self.metrics, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: _finite(v) for k, v in record.items()}, allow_nan=False) + "\n")

    def write_weights(self, csv_text: str) -> None:
        atomic_write_text(self.root / "weights.csv", csv_text)

    def save_checkpoint(self, config: TrainConfig, task: Task, *parts: dict) -> Path:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": VERSION,
            "config": json.dumps(config.to_dict()),
            "task": json.dumps(task.to_dict()),
        }
        for part in parts:
            payload.update(part)
        return save_file(self.checkpoint, payload)

    def load_checkpoint(self) -> dict:
        return load_file(self.checkpoint, CHECKPOINT_FORMAT)

    def save_model(self, states: list[dict], config: TrainConfig, task: Task) -> Path:
        return save_file(self.model, model_payload(states, config, task))
