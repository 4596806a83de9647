"""Everything a training run changes as it goes, in one object with one ``state_dict``.

The networks, their optimiser, the random state, the step counter and the
clock.  The other parts of the engine are functions over it (and over the
instance weights, which :mod:`.weights` owns).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig
from ..devices import Precision, precision_for
from ..errors import ConfigError, ModelFileError, reason
from ..intensity import Intensity
from ..methods import Method
from ..modelfile import LoadedModel
from ..networks import UNet, model_for
from ..task import Task
from .distributed import ALONE, Distributed, global_batch_norm


@dataclass
class TrainState:
    """``nets`` are the networks themselves (for the weight updates, previews and files);
    ``training_nets`` what the training step calls: the same networks, or their
    DistributedDataParallel wrappers when several ranks train together."""

    nets: list[UNet]
    opt: torch.optim.Optimizer
    rng: np.random.Generator
    device: torch.device
    precision: Precision
    dist: Distributed = ALONE
    training_nets: list = field(default_factory=list)
    step: int = 0
    elapsed: float = 0.0
    nonfinite_streak: int = 0  # float16 steps skipped in a row for a non-finite loss

    def __post_init__(self) -> None:
        if not self.training_nets:
            self.training_nets = list(self.nets)

    @classmethod
    def create(
        cls,
        task: Task,
        cfg: TrainConfig,
        method: Method,
        device: torch.device,
        start: tuple[str | Path, LoadedModel] | None = None,
        dist: Distributed = ALONE,
    ) -> TrainState:
        """Fresh networks (seeded; DCR's two from two seeds), or ones started from a model
        (``start``: its file and the model read from it); every rank builds the same ones."""
        torch.manual_seed(cfg.seed)
        nets = [model_for(task, cfg, seed=cfg.seed * 1000 + k).to(device) for k in range(method.n_networks)]
        if start is not None:
            _start_from(nets, task, cfg, *start)
        training_nets = list(nets)
        if dist.active:
            from torch.nn.parallel import DistributedDataParallel

            nets = [global_batch_norm(n, device) for n in nets]
            ids = [device.index] if device.type == "cuda" else None
            training_nets = [DistributedDataParallel(n, device_ids=ids, broadcast_buffers=False) for n in nets]
        opt = torch.optim.AdamW([p for n in nets for p in n.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
        return cls(nets, opt, np.random.default_rng(cfg.seed), device, precision_for(device), dist, training_nets)

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def network_states(self) -> list[dict[str, torch.Tensor]]:
        """CPU copies of every network's weights and buffers."""
        return [{k: v.detach().cpu().clone() for k, v in n.state_dict().items()} for n in self.nets]

    def state_dict(self) -> dict:
        out = {
            "step": self.step,
            "elapsed": self.elapsed,
            "nets": self.network_states(),
            "opt": self.opt.state_dict(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
        }
        if self.precision.scaler is not None:
            out["scaler"] = self.precision.scaler.state_dict()
        return out

    def load_state_dict(self, data: dict) -> None:
        for net, state in zip(self.nets, data["nets"], strict=True):
            net.load_state_dict(state)
        self.opt.load_state_dict(data["opt"])
        self.rng.bit_generator.state = json.loads(data["numpy_rng"])
        torch.set_rng_state(data["torch_rng"])
        if self.precision.scaler is not None and "scaler" in data:
            self.precision.scaler.load_state_dict(data["scaler"])
        self.step = int(data["step"])
        self.elapsed = float(data.get("elapsed", 0.0))


def _start_from(nets: list[UNet], task: Task, cfg: TrainConfig, path: str | Path, model: LoadedModel) -> None:
    if model.task.in_channels != task.in_channels:
        raise ModelFileError(
            f"{path}: model expects {model.task.in_channels} channel(s), the images have {task.in_channels}"
        )
    if model.task != task:
        raise ModelFileError(f"{path}: model was trained for {model.task}, this project is {task}")
    if (model.config.depth, model.config.width) != (cfg.depth, cfg.width):
        raise ModelFileError(
            f"{path}: model has depth {model.config.depth}, width {model.config.width}; "
            f"the run asks for {cfg.depth}, {cfg.width}"
        )
    for k, net in enumerate(nets):
        net.load_state_dict(model.nets[k % len(model.nets)].state_dict())


def checkpoint_task(path: Path, checkpoint: dict) -> Task | None:
    """The task a checkpoint's networks learn (``None`` in checkpoints written before
    tasks were recorded)."""
    if "task" not in checkpoint:
        return None
    try:
        return Task.from_dict(json.loads(checkpoint["task"]))
    except (AttributeError, TypeError, ValueError, OverflowError, RecursionError) as exc:  # ConfigError too
        raise ModelFileError(f"{path}: damaged checkpoint ({reason(exc)})") from None


def trained_intensity(cfg: TrainConfig, trained: tuple[str | Path, Task | None] | None) -> Intensity | None:
    """The normalisation the networks were trained with, when a run resumes from a
    checkpoint or continues a model (``trained``: that file and the task its networks
    learn): the CT statistics are those it learned on, not those of the masks as they are
    now.  ``None`` for fresh networks (the annotations decide).  A run that asks for
    another scheme is refused."""
    if trained is None or trained[1] is None:
        return None
    path, intensity = trained[0], trained[1].intensity
    if cfg.intensity not in ("auto", intensity.scheme):
        raise ConfigError(
            f"{path}: its networks were trained on {intensity.scheme} intensities; the run asks for "
            f"{cfg.intensity} (leave intensity on auto to continue them)"
        )
    return intensity
