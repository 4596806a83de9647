"""Typed events that the trainer yields; the CLI prints them, the GUI draws them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StartedEvent:
    device: str
    steps: int
    start_step: int
    n_instances: int
    summary: dict
    dii_schedule: tuple[int, int] | None = None  # (warm-up, interval) in steps
    dii_lr: float | None = None


@dataclass
class StepEvent:
    step: int
    total: int
    losses: dict
    elapsed: float
    lr: float


@dataclass
class InstanceWeight:
    image: str
    instance: str
    kind: str
    weight: float
    pinned: bool = False


@dataclass
class WeightsEvent:
    step: int
    weights: list[InstanceWeight] = field(default_factory=list)


@dataclass
class PreviewEvent:
    step: int
    image: str
    z: int | None
    probability: np.ndarray
    uncertainty: np.ndarray | None


@dataclass
class PausedEvent:
    step: int
    paused: bool


@dataclass
class AnnotationsUpdatedEvent:
    step: int
    n_instances: int


@dataclass
class CheckpointEvent:
    step: int
    path: str


@dataclass
class FinishedEvent:
    step: int
    run_dir: str | None
    stopped: bool
    elapsed: float


@dataclass
class ErrorEvent:
    step: int
    message: str
    traceback: str = ""
