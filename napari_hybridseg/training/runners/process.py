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


def _warm_up(threads: int | None) -> None:
    """Import what training needs and take one optimiser step on a toy parameter: the
    first AdamW step imports ``torch._dynamo`` (1.3-3.7 s), paid here while the child
    waits for its spec instead of after Start."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param])
    param.sum().backward()
    optimizer.step()


def _child(commands, events: _PipeOut, threads: int | None) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is for the GUI, not for us
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the step, write a checkpoint
    try:
        _warm_up(threads)
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


class Worker:
    """A child process (started with ``spawn``: safe beside Qt and other threads) that
    prepares itself and then waits for the spec of the run it will train.

    Started ahead of a run (:func:`start_spare`), it has imported torch and taken its
    warm-up step before the user presses Start.
    """

    def __init__(self, threads: int | None = None, context: str = "spawn") -> None:
        ctx = mp.get_context(context)
        self.threads, self.context = threads, context
        self.inbox = ctx.Queue()
        # a command put after the child stopped reading (an edit sent as the run ends) is
        # never read; waiting at exit to deliver it would keep napari from quitting
        self.inbox.cancel_join_thread()
        self.reader, writer = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=_child, args=(self.inbox, _PipeOut(writer), threads), name="hybridseg-training", daemon=True
        )
        with _main_module_hidden():
            self.process.start()
        writer.close()  # only the child writes: its death ends the pipe

    def usable(self, threads: int | None, context: str) -> bool:
        return self.process.is_alive() and (self.threads, self.context) == (threads, context)

    def close(self) -> None:
        """End a worker that was never given a run (it holds nothing of the user's); does
        not wait for it."""
        self.process.terminate()  # read as Stop: it exits


_spare: Worker | None = None  # at most one worker waits at a time


def start_spare(threads: int | None = None, context: str = "spawn") -> None:
    """Start a worker now for the next :class:`ProcessRunner` with these settings, so that
    its Start does not wait for torch to load (about 3 s on a 2-core machine)."""
    global _spare
    if _spare is not None and _spare.usable(threads, context):
        return
    close_spare()
    _spare = Worker(threads, context)


def close_spare() -> None:
    global _spare
    if _spare is not None:
        _spare.close()
        _spare = None


def _take_spare(threads: int | None, context: str) -> Worker | None:
    global _spare
    worker, _spare = _spare, None
    if worker is not None and not worker.usable(threads, context):
        worker.close()
        return None
    return worker


class ProcessRunner(Runner):
    """Builds and runs a :class:`~napari_hybridseg.training.loop.TrainingLoop` from ``spec``
    in a child process: the spare one when it was started with the same settings and still
    waits (:func:`start_spare`), a new one otherwise."""

    def __init__(self, spec: TrainingSpec, threads: int | None = None, context: str = "spawn") -> None:
        super().__init__(spec, threads)
        self.context = context
        self._process = None

    def _start(self) -> None:
        worker = _take_spare(self.threads, self.context) or Worker(self.threads, self.context)
        self.inbox, self._reader, self._process = worker.inbox, worker.reader, worker.process
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
        return None if self._process is None else self._process.pid

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._process is not None:
            self._process.join(timeout)

    def death_message(self) -> str:
        code = self._process.exitcode
        if code is not None and code < 0:
            how = SIGNAL_HINTS.get(-code, f"was stopped by signal {-code}")
        else:
            how = f"exited with status {code}"
        run = f"; the last checkpoint is in {self.spec.run_dir}" if self.spec.run_dir else ""
        return f"the training process {how} at step {self.step}{run}; your annotations are kept"
