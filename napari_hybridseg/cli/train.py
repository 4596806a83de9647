"""``napari-hybridseg train``: train on a project folder.

The run folder is refused when it holds someone else's files or a finished run
(unless ``--resume`` or ``--force``), and locked while the run lasts.  Ctrl-C or
SIGTERM stop after the current step with a checkpoint; a diverged run stops
with the step and keeps its last finite checkpoint.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

from ..errors import reason
from .common import apply_max_voxels, err, say
from .train_options import config_from_args


class _Interrupts:
    """SIGINT and SIGTERM ask the loop to stop after the current step (a second Ctrl-C
    quits at once).  Under torchrun, SIGTERM is the launcher ending the ranks after one of
    them failed: the others may be waiting for it in a collective, so they quit at once.

    The handler only puts into a ``SimpleQueue`` (reentrant) and writes with ``os.write``:
    it may interrupt the loop anywhere."""

    def __init__(self, inbox: queue.SimpleQueue, several_ranks: bool, speak: bool) -> None:
        self.inbox = inbox
        self.several_ranks = several_ranks
        self.speak = speak
        self.received: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        from ..protocol import Stop

        if self.several_ranks and signum == signal.SIGTERM:
            os._exit(128 + signum)
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        self.inbox.put(Stop())
        if self.speak:
            os.write(2, b"stopping after this step and saving a checkpoint (Ctrl-C again to quit at once)\n")

    def __enter__(self) -> _Interrupts:
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def _launch(args, n: int) -> int:
    """Run this very command again in ``n`` processes under torchrun (PyTorch's launcher)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    argv, skip = [], False
    for a in args.argv:  # the command without --nproc-per-node
        if skip:
            skip = False
        elif a == "--nproc-per-node":
            skip = True
        elif not a.startswith("--nproc-per-node="):
            argv.append(a)
    from torch.distributed.elastic.multiprocessing.api import SignalException

    try:
        torchrun(["--standalone", f"--nproc-per-node={n}", "--module", "napari_hybridseg", *argv])
    except SignalException as exc:
        say(f"interrupted; the processes were stopped (continue with --resume from {args.out})")
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        codes = {int(f.exitcode) for f in exc.failures.values()}
        if codes <= {130, 143}:  # the ranks stopped on Ctrl-C or SIGTERM, with a checkpoint
            return max(codes)
        return err(f"training with {n} processes failed ({reason(exc)}); the messages above say why")
    return 0


def run_train(args) -> int:

    from ..errors import ConfigError
    from ..training.distributed import Distributed
    from ..training.run_folder import RunFolder

    apply_max_voxels(args)
    if args.resume and not (args.out / "checkpoint.pt").is_file():
        return err(f"{args.out / 'checkpoint.pt'}: nothing to resume (file not found)")
    cfg = config_from_args(args, _resumed_config(args.out) if args.resume else None)
    dist = Distributed.from_environment(cfg.device)
    world = dist.world if dist.active else args.nproc_per_node
    if world < 1 or cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} cannot be split evenly over {world} processes")
    if dist.main:
        RunFolder(args.out).check_writable(resume=args.resume, force=args.force)
    if world > 1 and not dist.active:
        return _launch(args, world)
    if not dist.main:
        args.quiet = True
    tell = say if dist.main else (lambda message: None)  # one voice: rank 0
    try:
        return _train(args, cfg, dist, tell)
    finally:
        if dist.active:
            import torch

            torch.distributed.destroy_process_group()


def _resumed_config(out):
    """The config of the run in ``out`` that ``--resume`` continues, from its checkpoint."""
    import json

    from ..config import TrainConfig
    from ..errors import ModelFileError
    from ..training.run_folder import RunFolder

    folder = RunFolder(out)
    checkpoint = folder.load_checkpoint()  # a ModelFileError names the file already
    try:
        return TrainConfig.from_dict(json.loads(checkpoint["config"]))
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:  # ConfigError is a ValueError
        raise ModelFileError(f"{folder.checkpoint}: cannot read the run's options ({reason(exc)})") from None


def _train(args, cfg, dist, tell) -> int:
    """Hold the run folder (rank 0) before anything in it changes: a second trainer is
    refused before its follower resets the live run's control file.  A folder made here
    for a run that could not start is removed again."""
    from ..training.run_folder import RunFolder

    folder = RunFolder(args.out)
    made = not folder.root.exists()
    if dist.main:
        folder.lock()
    try:
        return _train_in(folder, args, cfg, dist, tell)
    finally:
        folder.unlock()
        if made and dist.main and folder.root.is_dir() and not any(folder.root.iterdir()):
            folder.root.rmdir()


def _train_in(folder, args, cfg, dist, tell) -> int:
    from tqdm import tqdm

    from .. import protocol as ev
    from ..annotations import Project
    from ..training import TrainingLoop
    from ..training.follow import EventLog, Follower

    project = Project.load(args.project)
    loop = TrainingLoop(project, cfg, folder, resume=args.resume, init_model=args.init_model, dist=dist)
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    bar, checkpoint, started = None, None, False
    follow = args.follow_project and dist.main
    log = EventLog(args.out) if follow else None
    interrupts = _Interrupts(inbox, dist.active, dist.main)
    with interrupts, Follower(args.project, args.out, inbox, pins=loop.weights.pins) if follow else nullcontext():
        for event in loop.events(inbox):
            if log is not None:
                log.write(event)
            if isinstance(event, ev.StartedEvent):
                started = True
                tell(
                    f"training {cfg.method} on {event.device}: {event.summary['strong slices']} strong and "
                    f"{event.summary['weak slices']} weak slice(s), {event.n_instances} weighted instance(s)"
                )
                if event.dii_schedule is not None:
                    warmup, interval = event.dii_schedule
                    tell(f"weights updated every {interval} steps from step {warmup}, learning rate {event.dii_lr:.3g}")
                bar = tqdm(
                    total=event.steps,
                    initial=event.start_step,
                    unit="step",
                    disable=args.quiet or None,
                    dynamic_ncols=True,
                )
            elif isinstance(event, ev.StepEvent) and bar is not None:
                bar.update(1)
                if event.step % 10 == 0:
                    bar.set_postfix({k: f"{v:.3f}" for k, v in event.losses.items() if k != "lr"})
            elif isinstance(event, ev.NoticeEvent):
                if dist.main:
                    tqdm.write(f"napari-hybridseg: {event.message}", file=sys.stderr)
            elif isinstance(event, ev.CheckpointEvent):
                checkpoint = event
            elif isinstance(event, ev.ErrorEvent | ev.FinishedEvent) and bar is not None:
                bar.close()
            if isinstance(event, ev.ErrorEvent):
                if not started:
                    return err(f"cannot start training: {event.message}")
                kept = ""
                if checkpoint is not None:
                    kept = f" (the checkpoint of step {checkpoint.step} is kept in {args.out})"
                elif args.resume:
                    kept = f" (the checkpoint it resumed from is kept in {args.out})"
                return err(f"training failed at step {event.step}: {event.message}{kept}")
            if isinstance(event, ev.FinishedEvent):
                if event.run_dir is None and dist.main:
                    tell(f"stopped before the first step; no model or checkpoint saved in {args.out}")
                    return 0 if interrupts.received is None else 128 + int(interrupts.received)
                if interrupts.received is not None:
                    tell(
                        f"interrupted at step {event.step}; checkpoint and model saved in {args.out} "
                        "(continue with --resume)"
                    )
                    return 128 + int(interrupts.received)
                tell(f"done: {event.step} steps in {event.elapsed:.0f} s; model in {Path(args.out) / 'model.pt'}")
    return 0
