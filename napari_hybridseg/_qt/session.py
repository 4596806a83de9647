"""The GUI's training session: it owns the runner, the current model and the training state.

Widgets never touch the engine: they call the session, and show what its
signals carry.  Events are read from the runner on the GUI thread by a timer, so
only the GUI thread ever touches layers.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path

from qtpy.QtCore import QCoreApplication, QObject, QTimer, Signal

from ..devices import resolve_device
from ..errors import HybridSegError
from ..modelfile import LoadedModel, load_model, save_model
from ..protocol import (
    FINAL_EVENTS,
    ErrorEvent,
    FinishedEvent,
    InstanceKey,
    Pause,
    PausedEvent,
    Pin,
    RequestPreview,
    Resume,
    StartedEvent,
    Stop,
    UpdateProject,
)
from ..training import TrainingSpec
from ..training.runners import FollowRunner, ProcessRunner, close_spare, start_spare

POLL_MS = 30


class TrainingState(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"


class Session(QObject):
    """Signals: ``event_received`` (every engine event), ``state_changed`` (a :class:`TrainingState`),
    ``finished`` (the run's last event, once the runner has ended and the model is loaded)."""

    event_received = Signal(object)
    state_changed = Signal(object)
    finished = Signal(object)

    def __init__(self, parent=None, runner_factory=ProcessRunner) -> None:
        super().__init__(parent)
        self.runner_factory = runner_factory
        # torch threads for training: one core is left to napari's event loop
        self.threads = max(1, (os.cpu_count() or 2) - 1)
        self.runner = None
        self.state = TrainingState.IDLE
        self.model: LoadedModel | None = None
        self.model_path: Path | None = None
        self.run_dir: Path | None = None
        self.pins: dict[InstanceKey, float] = {}
        self._final = None
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    @property
    def busy(self) -> bool:
        return self.state is not TrainingState.IDLE

    def _set_state(self, state: TrainingState) -> None:
        if state is not self.state:
            self.state = state
            self.state_changed.emit(state)

    # -- commands -------------------------------------------------------------------------
    def start(self, project, config, run_dir: Path, init_model=None, preview: RequestPreview | None = None) -> None:
        """Start training ``project`` (an immutable snapshot) in the background."""
        if self.busy:
            raise RuntimeError("a training run is already active")
        resolve_device(config.device)  # an unusable device is refused here, in one line
        self.run_dir = Path(run_dir)
        spec = TrainingSpec(
            project, config, str(run_dir), False, init_model and str(init_model), dict(self.pins), preview
        )
        self.runner = self.runner_factory(spec, threads=self.threads)
        self._final = None
        self._set_state(TrainingState.STARTING)
        self.runner.start()
        self._timer.start()

    def prepare(self) -> None:
        """Start the training process of the next run now, while the user annotates: it
        loads torch ahead, so that Start shows a first prediction sooner."""
        if self.runner_factory is ProcessRunner and not self.busy:
            start_spare(self.threads)

    def attach(self, run_dir) -> None:
        """Follow a run that trains elsewhere (started with ``train --follow-project``)."""
        if self.busy:
            raise RuntimeError("a training run is already active")
        run_dir = Path(run_dir)
        if not (run_dir / "events.jsonl").is_file():
            raise HybridSegError(
                f"{run_dir}: not a run that can be followed (no events.jsonl); start it with --follow-project"
            )
        self.run_dir = run_dir
        self.runner = FollowRunner(run_dir)
        self._final = None
        self._set_state(TrainingState.RUNNING)
        self._timer.start()

    def send(self, command) -> None:
        if self.runner is not None and self.busy:
            self.runner.send(command)

    def stop(self) -> None:
        if self.busy:
            self._set_state(TrainingState.STOPPING)
            self.send(Stop())

    def pause(self, paused: bool) -> None:
        self.send(Pause() if paused else Resume())

    def pin(self, key, value: float | None) -> None:
        """Remember the user's pin for every later run, and tell the running one."""
        key = InstanceKey(*key)
        if value is None:
            self.pins.pop(key, None)
        else:
            self.pins[key] = float(value)
        self.send(Pin(key, value))

    def update_project(self, project) -> None:
        self.send(UpdateProject(project))

    def request_preview(self, request: RequestPreview | None) -> None:
        self.send(request if request is not None else RequestPreview(None))

    # -- the current model ----------------------------------------------------------------
    def load_model(self, path) -> LoadedModel:
        self.model = load_model(path)
        self.model_path = Path(path)
        return self.model

    def save_model(self, path) -> Path:
        if self.model is None:
            raise ValueError("no model yet: train or load one first")
        return save_model(path, self.model)

    # -- events ---------------------------------------------------------------------------
    def _poll(self) -> None:
        runner = self.runner
        if runner is None:
            return
        events = [self._track(event) for event in runner.poll()]
        for event in events:
            self.event_received.emit(event)
        if runner.done:
            self._finish()

    def _track(self, event):
        """Follow the run's state; returns the event to show (the run's error if its model
        cannot be read back)."""
        if isinstance(event, StartedEvent) and self.state is TrainingState.STARTING:
            self._set_state(TrainingState.RUNNING)
        elif isinstance(event, PausedEvent) and self.state is not TrainingState.STOPPING:
            self._set_state(TrainingState.PAUSED if event.paused else TrainingState.RUNNING)
        elif isinstance(event, FINAL_EVENTS):
            if isinstance(event, FinishedEvent) and event.run_dir:
                try:  # this side's path to the run: a followed run's own path may be another machine's
                    self.load_model(self.run_dir / "model.pt")
                except (HybridSegError, OSError) as exc:
                    event = ErrorEvent(event.step, f"the trained model cannot be read back: {exc}")
            elif isinstance(event, ErrorEvent) and self.run_dir is not None:
                self._keep_checkpoint()
            self._final = event
        return event

    def _keep_checkpoint(self) -> None:
        """After a failed run, its last checkpoint becomes the current model, so that
        "continue from the current model" picks up where it stopped."""
        checkpoint = self.run_dir / "checkpoint.pt"
        if checkpoint.is_file():
            try:
                self.load_model(checkpoint)
            except (HybridSegError, OSError):
                pass  # a damaged checkpoint: the previous model stays current

    def _finish(self) -> None:
        runner = self.runner
        self._timer.stop()
        self.runner = None
        final = self._final or ErrorEvent(0, "training ended without a result")
        self._set_state(TrainingState.IDLE)
        self.finished.emit(final)
        if isinstance(runner, ProcessRunner):
            self.prepare()  # for the next run: users train, correct and train again

    def shutdown(self, timeout: float = 120.0) -> None:
        """Stop a running training and wait until it has written its checkpoint and model
        (when napari quits)."""
        close_spare()
        runner = self.runner
        if runner is not None and not isinstance(runner, FollowRunner):  # a followed run goes on without us
            runner.send(Stop())
            runner.join(timeout)
