"""Run the training loop in a child process.

The child gets the run's plain-data spec and speaks the protocol over two queues
(pipes).  If it dies (killed, out of memory, a crash in a native library) the
parent only loses the run, never its own state: the runner reports how the child
ended, and the run folder keeps the last checkpoint.
"""

from __future__ import annotations

import multiprocessing as mp
import signal

from ..loop import TrainingSpec
from .base import Runner, run_loop

SIGNAL_HINTS = {
    signal.SIGKILL: "was killed (by the user, or by the system when memory ran out)",
    signal.SIGSEGV: "crashed (segmentation fault in a native library)",
    signal.SIGABRT: "aborted",
    signal.SIGTERM: "was terminated",
}


class ProcessRunner(Runner):
    """Builds and runs a :class:`~napari_hybridseg.training.loop.TrainingLoop` from ``spec``
    in a child process (started with ``spawn``: safe beside Qt and other threads)."""

    def __init__(self, spec: TrainingSpec, threads: int | None = None, context: str = "spawn") -> None:
        super().__init__(spec, threads)
        ctx = mp.get_context(context)
        self.inbox = ctx.Queue()
        self.outbox = ctx.Queue()
        self._process = ctx.Process(
            target=run_loop, args=(spec, self.inbox, self.outbox, threads), name="hybridseg-training", daemon=True
        )

    def _start(self) -> None:
        self._process.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._process.join(timeout)

    def death_message(self) -> str:
        code = self._process.exitcode
        if code is not None and code < 0:
            how = SIGNAL_HINTS.get(-code, f"was stopped by signal {-code}")
        else:
            how = f"exited with status {code}"
        run = f"; the last checkpoint is in {self.spec.run_dir}" if self.spec.run_dir else ""
        return f"the training process {how} at step {self.step}{run}; your annotations are kept"
