"""Shared helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

from napari_hybridseg.evaluate import dice_iou
from napari_hybridseg.inference import predict_image

OUT = Path(__file__).resolve().parent / "_out"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def mean_dice(nets, images: list[tuple[np.ndarray, str, np.ndarray]], device="cpu") -> float:
    scores = []
    for image, axes, truth in images:
        pred = predict_image(nets, image, axes, device=device)
        scores.append(dice_iou(pred.probability > 0.5, truth)[0])
    return float(np.mean(scores))


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        return "unknown"


def train(project, cfg):
    """Run a training loop to the end: ``(loop, seconds)``; a failed run raises with its traceback."""
    import time

    from napari_hybridseg import protocol as ev
    from napari_hybridseg.training import TrainingLoop

    loop = TrainingLoop(project, cfg)
    t0 = time.perf_counter()
    for event in loop.events():
        if isinstance(event, ev.ErrorEvent):
            raise RuntimeError(event.traceback)
    return loop, time.perf_counter() - t0
