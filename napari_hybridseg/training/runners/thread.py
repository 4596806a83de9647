"""Run the training loop in a background thread of this process.

Cheapest to start and to exchange events with; but a crash of a native library, or a
runaway allocation, takes the whole process (and napari) down with it.  See
:mod:`.process` for the runner that isolates training.
"""

from __future__ import annotations

import queue
import threading

from ..loop import TrainingSpec
from .base import Runner, run_loop


class ThreadRunner(Runner):
    """Builds and runs a :class:`~napari_hybridseg.training.loop.TrainingLoop` from ``spec``
    in a daemon thread.  ``threads`` sets torch's intra-op threads for the run (restored
    afterwards), so that a core can stay with the GUI."""

    def __init__(self, spec: TrainingSpec, threads: int | None = None) -> None:
        super().__init__(spec, threads)
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self._thread = threading.Thread(
            target=run_loop, args=(spec, self.inbox, self.outbox, threads), name="hybridseg-training", daemon=True
        )

    def _start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
