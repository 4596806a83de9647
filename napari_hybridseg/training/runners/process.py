"""Run the training loop in a child process.

The child gets the run's plain-data spec and speaks the protocol: commands come over a
queue, events go back over a one-way pipe whose writing end only the child holds.  If
the child dies (killed, out of memory, a crash in a native library) the pipe ends, the
parent reads the end instead of waiting for the rest of a message, and reports how the
child ended; the run folder keeps the last checkpoint.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import signal
import sys
import threading

from ...protocol import Stop
from ..loop import TrainingSpec
from .base import Runner, run_loop

SIGNAL_HINTS = {
    signal.SIGKILL: "was killed (by the user, or by the system when memory ran out)",
    signal.SIGSEGV: "crashed (segmentation fault in a native library)",
    signal.SIGABRT: "aborted",
    signal.SIGTERM: "was terminated",
}


class _PipeOut:
    """The child's end of the event pipe, with a queue's ``put``."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def put(self, item) -> None:
        self.conn.send(item)


class _Inbox:
    """The child's commands; a SIGTERM reads as :class:`Stop` (a signal handler may not
    touch the queue itself)."""

    def __init__(self, commands, stop: threading.Event) -> None:
        self.commands = commands
        self.stop = stop

    def get_nowait(self):
        if self.stop.is_set():
            self.stop.clear()
            return Stop()
        return self.commands.get_nowait()

    def get(self):
        while True:
            if self.stop.is_set():
                return self.get_nowait()
            try:
                return self.commands.get(timeout=0.2)
            except queue.Empty:
                continue


def _child(commands, events: _PipeOut, threads: int | None) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is for the GUI, not for us
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the step, write a checkpoint
    try:
        inbox = _Inbox(commands, stop)
        spec = inbox.get()  # the first item; a Stop if SIGTERM came first
        if isinstance(spec, TrainingSpec):
            run_loop(spec, inbox, events, threads)
    finally:
        events.conn.close()


@contextlib.contextmanager
def _main_module_hidden():
    """Start a ``spawn`` child without importing the parent's ``__main__`` in it.

    The child needs only this package.  Left to itself, multiprocessing runs the parent's
    main script again in the child: a user's script without an ``if __name__ ==
    "__main__"`` guard would open a second napari (or fail), and napari's own entry point
    would be imported for nothing.  The main module's ``__file__`` and ``__spec__`` are
    hidden while the child's start-up data is taken (inside ``Process.start``).
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    file, spec = vars(main).pop("__file__", None), getattr(main, "__spec__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = spec
        if file is not None:
            main.__file__ = file


class ProcessRunner(Runner):
    """Builds and runs a :class:`~napari_hybridseg.training.loop.TrainingLoop` from ``spec``
    in a child process (started with ``spawn``: safe beside Qt and other threads)."""

    def __init__(self, spec: TrainingSpec, threads: int | None = None, context: str = "spawn") -> None:
        super().__init__(spec, threads)
        ctx = mp.get_context(context)
        self.inbox = ctx.Queue()
        self._reader, writer = ctx.Pipe(duplex=False)
        self._writer = writer
        self._process = ctx.Process(
            target=_child, args=(self.inbox, _PipeOut(writer), threads), name="hybridseg-training", daemon=True
        )

    def _start(self) -> None:
        with _main_module_hidden():
            self._process.start()
        self._writer.close()  # only the child writes: its death ends the pipe
        # the spec (images included) goes through the queue, whose feeder thread writes it
        # while the child starts: passed as an argument, it would hold napari until the
        # child had imported torch (1.7 s) to read it
        self.inbox.put(self.spec)

    def _receive(self) -> list:
        out = []
        try:
            while self._reader.poll(0):
                out.append(self._reader.recv())
        except (EOFError, OSError):
            pass  # the child is gone; what it sent in full has been read
        return out

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
