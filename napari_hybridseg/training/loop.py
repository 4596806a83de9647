"""The training loop: takes commands, yields events, owns nothing else.

``TrainingLoop.events(inbox)`` trains and yields the events of
:mod:`napari_hybridseg.protocol`; between steps it reads the commands waiting in
``inbox`` (anything with ``get()`` and ``get_nowait()``, such as a
``queue.Queue`` or a ``multiprocessing`` queue).  The same loop therefore runs
under the command line, in a thread next to napari, or in another process.
"""

from __future__ import annotations

import queue
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import protocol as P
from ..config import TrainConfig
from ..data.sampler import PatchSampler
from ..data.targets import build_training_set
from ..devices import resolve_device
from ..errors import AnnotationError, ConfigError, DivergedError, HybridSegError, ModelFileError
from ..methods import get_method
from ..modelfile import load_model
from .dii import DiiScorer
from .distributed import ALONE, Distributed
from .preview import Previewer
from .run_folder import RunFolder
from .schedule import plan_dii, poly_lr
from .state import TrainState, checkpoint_task, trained_intensity
from .step import StepContext, all_finite, train_step
from .weights import InstanceWeights


@dataclass
class TrainingSpec:
    """Everything needed to start a run, as plain data: it can cross a process boundary."""

    project: object
    config: TrainConfig
    run_dir: str | None = None
    resume: bool = False
    init_model: str | None = None
    pins: dict = field(default_factory=dict)
    preview: P.RequestPreview | None = None


class TrainingLoop:
    """Train one or two networks on a project's strong and weak annotations.

    Parameters
    ----------
    project
        The annotations (an immutable snapshot when other threads may edit them).
    config
        Training options.
    run_dir
        Where the model, ``config.json``, ``metrics.jsonl``, ``weights.csv`` and
        checkpoints go (a folder, or a :class:`RunFolder` its caller may already hold);
        ``None`` keeps everything in memory.  A run that is not resumed replaces the
        checkpoint and model of an earlier run there.
    resume
        Continue from ``run_dir/checkpoint.pt`` (same networks, optimisers, weights
        and random state; ``config.steps`` is the new total).
    init_model
        Start the networks from a saved model ("continue from the current model").
    pins
        ``{InstanceKey: value}``: weights the user fixed.
    dist
        This process's rank among several training together (see :mod:`.distributed`):
        every rank runs the same loop; rank 0 alone writes the run folder, previews and
        takes commands other than stopping.
    """

    def __init__(
        self, project, config=None, run_dir=None, resume=False, init_model=None, pins=None, dist: Distributed = ALONE
    ) -> None:
        self.config = config or TrainConfig()
        self.method = get_method(self.config.method)
        self.dist = dist
        self.device = resolve_device(dist.device_name(self.config.device))
        self.run_folder = run_dir if isinstance(run_dir, RunFolder) or run_dir is None else RunFolder(run_dir)
        self.resume = resume
        self.project = project
        if resume and self.run_folder is None:
            raise ConfigError("resume needs a run folder")
        checkpoint = self.run_folder.load_checkpoint() if resume else None
        start = (init_model, load_model(init_model)) if init_model is not None and not resume else None
        if checkpoint is not None:
            trained = (self.run_folder.checkpoint, checkpoint_task(self.run_folder.checkpoint, checkpoint))
        else:
            trained = start and (start[0], start[1].task)
        intensity = trained_intensity(self.config, trained)
        self.tset = build_training_set(project, self.config, self.method, intensity)
        self.task = self.tset.task
        self.state = TrainState.create(self.task, self.config, self.method, self.device, start, dist)
        self.weights = InstanceWeights(self.tset.instances, self.device, pins)
        self.previewer = Previewer(project, self.task, self.config, self.device)
        self._bind_training_set()
        self._paused = self._stopped = False
        if checkpoint is not None:
            self._restore(checkpoint)

    @classmethod
    def from_spec(cls, spec: TrainingSpec) -> TrainingLoop:
        loop = cls(spec.project, spec.config, spec.run_dir, spec.resume, spec.init_model, spec.pins)
        if spec.preview is not None:
            loop.previewer.set_request(spec.preview)
        return loop

    def _bind_training_set(self) -> None:
        cfg, tset = self.config, self.tset
        side = cfg.patch_side(self.task.spatial_dims)
        self.sampler = PatchSampler(tset, side, cfg.batch_size, cfg.strong_per_batch, self.state.rng, cfg.augment)
        self.step_context = StepContext.build(cfg, self.method, tset, self.device)
        self.scorer = DiiScorer(cfg, tset, len(self.weights), self.state.nets[0].size_multiple, self.device, self.dist)
        weak_pixels = sum(s.target.size for s in tset.weak)
        patch_pixels = side ** len(tset.samples[0].spatial_shape)
        steps_per_epoch = self.sampler.steps_per_epoch()
        self.schedule = plan_dii(cfg, self.method.n_networks, steps_per_epoch, weak_pixels, patch_pixels)

    @property
    def learns_weights(self) -> bool:
        return self.method.learns_weights and len(self.weights) > 0

    # -- the parts of a step --------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One optimisation step on a freshly sampled batch."""
        return train_step(self.state, self.step_context, self.sampler.sample(), self.weights.values())

    def dii_update(self):
        """One weight update: ``grad(gamma_k) = -g_S . g_k``, averaged over the networks."""
        hyper = self.scorer.hypergradient(self.state.nets)
        self.weights.step(hyper, poly_lr(self.schedule.lr, self.state.step, self.config.steps))
        return hyper

    def weights_event(self) -> P.WeightsEvent:
        return P.WeightsEvent(self.state.step, self.weights.table())

    # -- commands -------------------------------------------------------------------------
    def _apply(self, command) -> Iterator:
        if self.dist.active and not isinstance(command, P.Stop | P.RequestPreview):
            name = type(command).__name__
            yield P.NoticeEvent(self.state.step, f"{name} is not available while several processes train")
            return
        if isinstance(command, P.Pause):
            self._paused = True
        elif isinstance(command, P.Resume):
            self._paused = False
        elif isinstance(command, P.Stop):
            self._stopped, self._paused = True, False
        elif isinstance(command, P.UpdateProject):
            yield self._update_project(command.project)
            yield self.weights_event()
        elif isinstance(command, P.Pin):
            self.weights.pin(command.key, command.value)
            yield self.weights_event()
        elif isinstance(command, P.RequestPreview):
            self.previewer.set_request(command)
        else:
            raise TypeError(f"unknown command {command!r}")

    def _update_project(self, project) -> P.AnnotationsUpdatedEvent:
        try:
            # the run keeps its normalisation: CT statistics move with every mask edit
            tset = build_training_set(project, self.config, self.method, self.task.intensity)
            if tset.task != self.task:
                raise AnnotationError(f"the annotations now describe {tset.task}, the networks learn {self.task}")
        except AnnotationError as exc:
            return P.AnnotationsUpdatedEvent(self.state.step, len(self.weights), str(exc))
        self.project = project
        self.previewer.set_project(project)  # images without annotations are previewed too
        if tset.same_as(self.tset):  # nothing to learn anew: the run goes on as it was
            return P.AnnotationsUpdatedEvent(self.state.step, len(self.weights))
        self.tset = tset
        self.weights = self.weights.carried_to(tset.instances)
        self._bind_training_set()
        return P.AnnotationsUpdatedEvent(self.state.step, len(self.weights))

    def _drain(self, inbox) -> Iterator:
        while inbox is not None:
            try:
                command = inbox.get_nowait()
            except queue.Empty:
                return
            yield from self._apply(command)

    def _wait_while_paused(self, inbox) -> Iterator:
        yield P.PausedEvent(self.state.step, True)
        while self._paused and not self._stopped:
            yield from self._apply(inbox.get())
        if not self._stopped:
            yield P.PausedEvent(self.state.step, False)

    def _preview(self) -> Iterator:
        """A preview, or a notice of why it failed: a preview never stops training."""
        try:
            event = self.previewer.event(self.state.step, self.state.nets)
        except Exception as exc:
            event = P.NoticeEvent(self.state.step, f"preview failed: {type(exc).__name__}: {exc}")
        if event is not None:
            yield event

    # -- files ----------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        return self.run_folder.save_checkpoint(
            self.config, self.task, self.state.state_dict(), self.weights.state_dict()
        )

    def _restore(self, data: dict) -> None:
        path = self.run_folder.checkpoint
        try:
            self.state.load_state_dict(data)
            self.weights.load_state_dict(data)
        except (KeyError, RuntimeError, ValueError, TypeError, OverflowError) as exc:
            raise ModelFileError(
                f"{path}: checkpoint does not match this run ({str(exc).splitlines()[0][:160]})"
            ) from None

    def _write_outputs(self) -> None:
        if not all_finite(self.state.nets):  # never replace a good model with a broken one
            raise DivergedError(f"step {self.state.step}: the weights are not finite; nothing was written")
        self.save_checkpoint()
        self.run_folder.save_model(self.state.network_states(), self.config, self.task)
        self.run_folder.write_weights(self.weights.csv())

    # -- the loop -------------------------------------------------------------------------
    def events(self, inbox=None) -> Iterator:
        """Train, yielding events; ends with :class:`FinishedEvent` or :class:`ErrorEvent`.

        A Stop before the first step saves nothing: no model or checkpoint of networks that
        never trained (``FinishedEvent.run_dir`` is ``None``, as for a run without a folder)."""
        try:
            yield from self._events(inbox)
        except Exception as exc:  # surfaced as an event; the last checkpoint stays on disk
            message = str(exc) if isinstance(exc, HybridSegError) else f"{type(exc).__name__}: {exc}"
            yield P.ErrorEvent(self.state.step, message, traceback.format_exc())
        finally:
            if self.run_folder is not None:
                self.run_folder.unlock()

    def _agree_to_stop(self) -> None:
        """Every rank stops at the same step: when any of them was asked to."""
        self._stopped = self.dist.any_(self._stopped)

    def _events(self, inbox) -> Iterator:
        cfg, st = self.config, self.state
        run = self.run_folder if self.dist.main else None  # one writer
        if run is not None:
            run.prepare(cfg, st.step, fresh=not self.resume)
        yield P.StartedEvent(
            str(self.device),
            cfg.steps,
            st.step,
            len(self.weights),
            {"strong slices": len(self.tset.strong), "weak slices": len(self.tset.weak)},
            self.schedule.as_tuple() if self.learns_weights else None,
            self.schedule.lr if self.learns_weights else None,
        )
        yield self.weights_event()
        if self.method.uses_weak and not len(self.weights):
            yield P.NoticeEvent(
                st.step,
                "no weak annotations (boxes or scribbles on images without a full mask): "
                "training on the full masks only",
            )
        t0, first = time.perf_counter() - st.elapsed, st.step
        while st.step < cfg.steps:
            yield from self._drain(inbox)
            if self._paused and not self._stopped:
                pause_start = time.perf_counter()
                yield from self._wait_while_paused(inbox)
                t0 += time.perf_counter() - pause_start
            self._agree_to_stop()
            if self._stopped:
                break
            losses = self.train_step()
            st.step += 1
            st.elapsed = time.perf_counter() - t0
            if self.learns_weights and self.schedule.due(st.step):
                self.dii_update()
                yield self.weights_event()
                if run is not None:
                    run.write_weights(self.weights.csv())
            yield P.StepEvent(st.step, cfg.steps, losses, st.elapsed, losses["lr"])
            if run is not None and (st.step % cfg.log_every == 0 or st.step == cfg.steps):
                run.log(
                    {"step": st.step, **{k: round(v, 6) for k, v in losses.items()}, "elapsed": round(st.elapsed, 3)}
                )
            if self.dist.main and self.previewer.due(st.step):
                yield from self._preview()
            if run is not None and st.step % cfg.checkpoint_every == 0:
                yield P.CheckpointEvent(st.step, str(self.save_checkpoint()))
        saved = run is not None and not (self._stopped and st.step == first)
        if saved:
            self._write_outputs()
        yield P.FinishedEvent(st.step, str(run.root) if saved else None, self._stopped, st.elapsed)
