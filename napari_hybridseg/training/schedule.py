"""Learning-rate decay and when the weights are updated (the DII schedule)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import TrainConfig


def poly_factor(step: int, total: int, power: float = 0.9) -> float:
    """Polynomial learning-rate decay, ``(1 - step / total) ** power``, clipped at 0."""
    return max(0.0, 1.0 - step / max(total, 1)) ** power


# How far, in sum of learning rates, the default DII learning rate lets a weight travel
# over a run's scheduled updates (see dii_learning_rate).
DII_TRAVEL = 1.2
# The training does at least this many times the passes of the weight updates
# (the updates get a fifth of the passes).
DII_PASS_RATIO = 5


def poly_lr(base: float, step: int, total: int, power: float = 0.9) -> float:
    """Polynomial decay used for the networks and the weights alike."""
    return base * poly_factor(step, total, power)


@dataclass(frozen=True)
class DiiSchedule:
    """The first weight update at step ``warmup``, then one every ``interval`` steps,
    with base learning rate ``lr``."""

    warmup: int
    interval: int
    lr: float

    def due(self, step: int) -> bool:
        return step >= self.warmup and (step - self.warmup) % self.interval == 0

    def as_tuple(self) -> tuple[int, int]:
        return self.warmup, self.interval


def amortised_interval(cfg: TrainConfig, n_networks: int, weak_pixels: int, patch_pixels: int) -> int:
    """Steps between weight updates at which the training does ``DII_PASS_RATIO``
    times the passes of the updates.

    One update is one forward pass over the weak set per network; a training step is
    about three passes (forward and backward) over a batch per network.  Counted in
    seconds (benchmarks/cost.py) the updates came to 6% of the training, since a step
    also pays for sampling, augmentation, CutMix and the optimiser.
    """
    step_px = 3 * cfg.batch_size * patch_pixels * n_networks
    return max(1, -(-DII_PASS_RATIO * weak_pixels * n_networks // step_px))


def dii_schedule(cfg: TrainConfig, steps_per_epoch: int, amortised: int = 1) -> tuple[int, int]:
    """``(warmup, interval)`` in steps.

    By default the warm-up is two epochs and at least a sixth of the run; the
    interval is one epoch, but never shorter than ``amortised`` (see
    :func:`amortised_interval`), and at most 1/12 of the run unless amortisation needs
    more.
    """
    epoch = max(1, steps_per_epoch)
    warmup = cfg.dii_warmup if cfg.dii_warmup is not None else max(2 * epoch, cfg.steps // 6)
    if cfg.dii_interval is not None:
        interval = cfg.dii_interval
    else:
        interval = max(amortised, min(epoch, max(1, cfg.steps // 12)))
    return int(warmup), int(interval)


def dii_learning_rate(cfg: TrainConfig, warmup: int, interval: int) -> float:
    """Base learning rate of the weights for the schedule ``(warmup, interval)``.

    Adam moves a weight by at most about its learning rate per update, so the
    poly-decayed rates of all scheduled updates bound how far a weight can travel.
    The paper's 0.1 assumes hundreds of updates; a short run with a handful of them
    would leave a wrong annotation stuck far above 0.  The default is therefore 0.1,
    raised where needed until the updates can add up to ``DII_TRAVEL``.
    """
    if cfg.dii_lr is not None:
        return float(cfg.dii_lr)
    reach = sum(poly_factor(t, cfg.steps) for t in range(warmup, cfg.steps, max(1, interval)))
    return 0.1 if reach <= 0 else max(0.1, DII_TRAVEL / reach)


def plan_dii(cfg: TrainConfig, n_networks: int, steps_per_epoch: int, weak_pixels: int, patch_pixels: int):
    """The run's :class:`DiiSchedule`."""
    warmup, interval = dii_schedule(
        cfg, steps_per_epoch, amortised_interval(cfg, n_networks, weak_pixels, patch_pixels)
    )
    return DiiSchedule(warmup, interval, dii_learning_rate(cfg, warmup, interval))
