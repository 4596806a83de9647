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
from .common import Given, add_max_voxels, apply_max_voxels, err, say


def add_train(sub) -> None:
    from ..config import BOX_TARGETS, DII_BOX_TARGETS, GRANULARITIES, INTENSITIES, NETWORKS, PRESETS, TrainConfig
    from ..methods import METHODS

    d = TrainConfig.__dataclass_fields__
    p = sub.add_parser("train", help="train on a project folder", description="Train on a project folder.")
    p.add_argument("project", type=Path, help="project folder (images/, strong/, boxes/, scribbles/)")
    p.add_argument(
        "--out", type=Path, required=True, help="run folder for model, config.json, metrics.jsonl, weights.csv"
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="paper: the paper's settings (dii+dcr, one weight per weak image, filled boxes judged by their own "
        "loss, classifier weights only, weights' learning rate 0.1, prediction from the first network); options "
        "given beside it win",
    )
    p.add_argument(
        "--method",
        action=Given,
        choices=list(METHODS),
        default=d["method"].default,
        help="dii: learned weight per weak annotation; dcr: two networks teaching each other (default: %(default)s)",
    )
    p.add_argument(
        "--box-target",
        action=Given,
        choices=BOX_TARGETS,
        default=d["box_target"].default,
        help="projection: the object touches every row and column of its box; filled: the box is the mask "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--granularity",
        action=Given,
        choices=GRANULARITIES,
        default=d["granularity"].default,
        help="one weight per annotation (object) or per weak image (default: %(default)s)",
    )
    p.add_argument("--steps", type=int, default=d["steps"].default, help="total training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default, help="(default: %(default)s)")
    p.add_argument("--patch-size", type=int, default=d["patch_size"].default, help="pixels (default: %(default)s)")
    p.add_argument(
        "--network",
        choices=NETWORKS,
        default=d["network"].default,
        help="2d: images and the slices of volumes; 3d: whole volumes, pooled in-plane while slices are thick; "
        "auto: 2d (default: %(default)s)",
    )
    p.add_argument(
        "--intensity",
        choices=INTENSITIES,
        default=d["intensity"].default,
        help="percentile: each image by its percentiles (microscopy); zscore: each image to mean 0, sd 1 (MR); "
        "ct: clipped and scaled by the full masks' foreground (Hounsfield units); auto: project.json's "
        "'intensity', else ct for scans in HU, zscore for other NIfTI, percentile otherwise (default: %(default)s)",
    )
    p.add_argument(
        "--patch-size-3d",
        type=int,
        default=d["patch_size_3d"].default,
        help="voxels a side of a 3D network's training patch (default: %(default)s)",
    )
    p.add_argument("--width", type=int, default=d["width"].default, help="U-Net base channels (default: %(default)s)")
    p.add_argument("--depth", type=int, default=d["depth"].default, help="U-Net poolings (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d["lr"].default, help="AdamW learning rate (default: %(default)s)")
    p.add_argument(
        "--dii-box-target",
        action=Given,
        choices=DII_BOX_TARGETS,
        default=d["dii_box_target"].default,
        help="how DII judges a box: by the claim that its pixels are object (filled), that the ellipse "
        "inscribed in it is (ellipse), that the object reaches each of its rows and columns (extent), or by "
        "the training loss (same) (default: %(default)s)",
    )
    p.add_argument(
        "--dii-warmup",
        type=int,
        default=None,
        help="steps before the first weight update (default: two epochs, at least a sixth of the run)",
    )
    p.add_argument(
        "--dii-interval",
        type=int,
        default=None,
        help="steps between weight updates (default: an epoch, longer if updates would take over ~10%% of the time)",
    )
    p.add_argument(
        "--dii-lr",
        action=Given,
        type=float,
        default=None,
        help="base learning rate of the weights (default: 0.1, raised in short runs so that a weight can "
        "fall from 1 to 0 over the scheduled updates)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--force",
        action="store_true",
        help="write into OUT even if it holds other files or a finished run (they are replaced or kept, never read)",
    )
    p.add_argument("--init-model", type=Path, default=None, help="start from a saved model.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--follow-project",
        action="store_true",
        help="let napari follow this run (Attach to run...): events go to OUT/events.jsonl, annotations saved "
        "into PROJECT reach the run, and OUT/control.json pauses, stops or pins",
    )
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        metavar="N",
        help="train with N processes (one per GPU; gloo on the CPU) through torchrun; the batch is split "
        "between them (default: %(default)s)",
    )
    add_max_voxels(p)


def _config(args):
    from ..config import TrainConfig

    cfg = TrainConfig(
        method=args.method,
        box_target=args.box_target,
        granularity=args.granularity,
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        patch_size_3d=args.patch_size_3d,
        network=args.network,
        intensity=args.intensity,
        width=args.width,
        depth=args.depth,
        lr=args.lr,
        dii_warmup=args.dii_warmup,
        dii_interval=args.dii_interval,
        dii_lr=args.dii_lr,
        dii_box_target=args.dii_box_target,
        device=args.device,
        seed=args.seed,
    )
    return cfg if args.preset is None else cfg.with_preset(args.preset, keep=getattr(args, "given", set()))


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
    cfg = _config(args)
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


def _train(args, cfg, dist, tell) -> int:
    from tqdm import tqdm

    from .. import protocol as ev
    from ..annotations import Project
    from ..training import TrainingLoop
    from ..training.follow import EventLog, Follower

    project = Project.load(args.project)
    loop = TrainingLoop(project, cfg, args.out, resume=args.resume, init_model=args.init_model, dist=dist)
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    bar, checkpoint, started = None, None, False
    follow = args.follow_project and dist.main
    log = EventLog(args.out) if follow else None
    interrupts = _Interrupts(inbox, dist.active, dist.main)
    with interrupts, Follower(args.project, args.out, inbox) if follow else nullcontext():
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
                if interrupts.received is not None:
                    tell(
                        f"interrupted at step {event.step}; checkpoint and model saved in {args.out} "
                        "(continue with --resume)"
                    )
                    return 128 + int(interrupts.received)
                tell(f"done: {event.step} steps in {event.elapsed:.0f} s; model in {Path(args.out) / 'model.pt'}")
    return 0
