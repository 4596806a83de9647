"""Run the training loop in a background thread of this process.

Commands go in through :meth:`ThreadRunner.send`, events come out through
:meth:`ThreadRunner.poll`; both are plain data, so a GUI drives this runner the
same way it would drive one in another process.
"""

from __future__ import annotations

import queue
import threading
import traceback

import torch

from ...errors import HybridSegError
from ...protocol import ErrorEvent
from ..loop import TrainingLoop, TrainingSpec


class ThreadRunner:
    """Builds and runs a :class:`TrainingLoop` from ``spec`` in a daemon thread.

    ``threads`` sets torch's intra-op threads for the run (restored afterwards), so
    that a core can stay with the GUI.
    """

    def __init__(self, spec: TrainingSpec, threads: int | None = None) -> None:
        self.spec = spec
        self.threads = threads
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="hybridseg-training", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, command) -> None:
        self.inbox.put(command)

    def poll(self) -> list:
        """Every event that arrived since the last call (never blocks)."""
        out = []
        while True:
            try:
                out.append(self.outbox.get_nowait())
            except queue.Empty:
                return out

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            try:
                loop = TrainingLoop.from_spec(self.spec)
            except (HybridSegError, ValueError, OSError) as exc:
                self.outbox.put(ErrorEvent(0, f"cannot start training: {exc}"))
                return
            for event in loop.events(self.inbox):
                self.outbox.put(event)
        except Exception as exc:  # never leave the GUI waiting for an event that cannot come
            self.outbox.put(ErrorEvent(0, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        finally:
            torch.set_num_threads(before)
