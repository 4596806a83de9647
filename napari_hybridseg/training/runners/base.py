"""What every runner shares: the worker's body, and polling that never leaves a GUI
waiting for an event that cannot come."""

from __future__ import annotations

import queue
import traceback

from ...errors import HybridSegError
from ...protocol import FINAL_EVENTS, ErrorEvent, StepEvent
from ..loop import TrainingLoop, TrainingSpec


def run_loop(spec: TrainingSpec, inbox, outbox, threads: int | None) -> None:
    """Build the loop from ``spec`` and put each of its events into ``outbox``; commands
    come from ``inbox``.  Runs in the worker: a thread or a child process."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        try:
            loop = TrainingLoop.from_spec(spec)
        except (HybridSegError, ValueError, OSError) as exc:
            outbox.put(ErrorEvent(0, f"cannot start training: {exc}"))
            return
        for event in loop.events(inbox):
            outbox.put(event)
    except Exception as exc:  # never leave the GUI waiting for an event that cannot come
        outbox.put(ErrorEvent(0, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        torch.set_num_threads(before)


class Runner:
    """A training loop running elsewhere: :meth:`send` commands, :meth:`poll` events.

    Subclasses provide the worker (``_start``, ``alive``, ``join``) and the two queues.
    """

    def __init__(self, spec: TrainingSpec | None, threads: int | None = None) -> None:
        self.spec = spec
        self.threads = threads
        self.step = 0
        self._final = None
        self._ended = False

    def start(self) -> None:
        self._start()

    def send(self, command) -> None:
        self.inbox.put(command)

    @property
    def done(self) -> bool:
        """The worker has ended and every event it sent has been polled."""
        return self._ended

    def poll(self) -> list:
        """Every event that arrived since the last call (never blocks).  Once the worker
        has ended without a final event (it crashed or was killed), the last call adds an
        :class:`ErrorEvent` that says so."""
        was_alive = self.alive
        events = self._receive()
        for e in events:
            if isinstance(e, StepEvent):
                self.step = e.step
            if isinstance(e, FINAL_EVENTS):
                self._final = e
        if not was_alive and not self._ended:
            self._ended = True
            if self._final is None:
                events.append(ErrorEvent(self.step, self.death_message()))
        return events

    def _receive(self) -> list:
        """Every event waiting in the outbox."""
        out = []
        while True:
            try:
                out.append(self.outbox.get_nowait())
            except (queue.Empty, EOFError, OSError):
                return out

    def death_message(self) -> str:
        return "training ended without a result"

    # -- provided by the subclasses
    inbox: object
    outbox: object

    def _start(self) -> None:
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        raise NotImplementedError

    def join(self, timeout: float | None = None) -> None:
        raise NotImplementedError
