"""Follow a run that trains elsewhere (a GPU server, a cluster job) through its folder.

Events are read from ``RUN/events.jsonl`` as the trainer appends them; commands
become the state written to ``RUN/control.json`` (see :mod:`..follow`).  Edits of
the annotations reach the trainer through the project folder it watches (napari's
autosave), not through this runner.
"""

from __future__ import annotations

import time
from pathlib import Path

from ... import protocol as P
from ..follow import EventReader, default_control, read_control, write_control
from ..run_folder import lock_holder_alive
from .base import Runner

SILENCE_S = 600  # a run that has said nothing for this long gets a notice (it may have died elsewhere)


class FollowRunner(Runner):
    def __init__(self, run_dir: str | Path) -> None:
        super().__init__(spec=None)
        self.run_dir = Path(run_dir)
        self.reader = EventReader(self.run_dir)
        self.control = read_control(self.run_dir) or default_control()
        self._quiet_polls = 0
        self._last_news = time.monotonic()
        self._warned = False

    def _start(self) -> None:
        """Nothing to start: the run is already going (or over: its events are replayed)."""

    def send(self, command) -> None:
        c = dict(read_control(self.run_dir) or self.control)  # the trainer may have reset it
        before = dict(c)
        if isinstance(command, P.Pause | P.Resume):
            c["pause"] = isinstance(command, P.Pause)
        elif isinstance(command, P.Stop):
            c["stop"] = True
        elif isinstance(command, P.Pin):
            pins = [p for p in c["pins"] if tuple(p[:3]) != tuple(command.key)]
            c["pins"] = pins + ([[*command.key, command.value]] if command.value is not None else [])
        elif isinstance(command, P.RequestPreview):
            c["preview"] = [command.image, command.z, command.every] if command.image is not None else None
        else:
            return  # a project update reaches the run through the project folder it watches
        self.control = c
        if c != before:  # the view moves often; the file changes only when the request does
            write_control(self.run_dir, c)

    @property
    def alive(self) -> bool:
        return self._final is None and lock_holder_alive(self.run_dir)

    def join(self, timeout: float | None = None) -> None:
        """Nothing to wait for here: the run belongs to another process."""

    def poll(self) -> list:
        was_alive = self.alive
        events = self.reader.read()
        for e in events:
            if isinstance(e, P.StartedEvent):  # a resumed run: the last run's end is not this one's
                self._final, self._ended = None, False
            if isinstance(e, P.StepEvent):
                self.step = e.step
            if isinstance(e, P.FINAL_EVENTS):
                self._final = e
        now = time.monotonic()
        if events:
            self._last_news = now
        elif self._final is None and now - self._last_news > SILENCE_S and not self._warned:
            self._warned = True
            minutes = SILENCE_S // 60
            events.append(P.NoticeEvent(self.step, f"no news from the run for {minutes} minutes: is it still running?"))
        if self._final is not None and not lock_holder_alive(self.run_dir):
            self._ended = True  # (a trainer holding the lock after an end in the log is resuming the run)
        elif not was_alive and not events:
            # no lock and nothing new, twice in a row: the trainer is gone without a word
            self._quiet_polls += 1
            if self._quiet_polls >= 2 and not self._ended:
                self._ended = True
                events.append(P.ErrorEvent(self.step, self.death_message()))
        return events

    def death_message(self) -> str:
        return (
            f"the run in {self.run_dir} ended without finishing (its lock is gone and it wrote no result); "
            "its last checkpoint is kept there"
        )
