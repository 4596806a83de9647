"""One optimisation step of the networks on a batch, for any method."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import TrainConfig
from ..data.sampler import Batch
from ..data.targets import TrainingSet
from ..errors import DivergedError
from ..losses import affinity_edges, box_losses, crop_boxes, pixel_ce
from ..methods import Method
from .dcr import co_regularisation, cr_weight
from .schedule import poly_lr
from .state import TrainState


@dataclass
class StepContext:
    """What a step needs to know about the method and the training set, on the device."""

    cfg: TrainConfig
    method: Method
    box_instance: torch.Tensor  # (n_boxes,) instance of every box of the training set
    box_class: torch.Tensor  # (n_boxes,) class of every box
    image_instances: list[torch.Tensor]  # per sample: the instances of its image

    @classmethod
    def build(cls, cfg: TrainConfig, method: Method, tset: TrainingSet, device) -> StepContext:
        def to(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.long, device=device)

        return cls(
            cfg, method, to(tset.box_instance), to(tset.box_class), [to(s.image_instances) for s in tset.samples]
        )


def pixel_weights(ctx: StepContext, batch: Batch, instance: torch.Tensor, gamma: torch.Tensor):
    """Per-pixel weights ``(w_seg, w_cr)``: 1 on strong crops, the instance's weight on
    weak pixels; for co-regularisation, weak pixels in no instance take the mean weight
    of their image's instances (``w_cr`` is ``None`` without DCR)."""
    strong = torch.as_tensor(batch.strong, device=gamma.device).view(-1, *([1] * (instance.ndim - 1)))
    g_pix = torch.cat([gamma, gamma.new_ones(1)])[instance]  # -1 (no instance) reads the 1
    ones = torch.ones_like(g_pix)
    w_seg = torch.where(strong, ones, torch.where(instance >= 0, g_pix, torch.zeros_like(g_pix)))
    if not ctx.method.co_regularises:
        return w_seg, None
    means = []
    for i in batch.sample_index:
        own = ctx.image_instances[int(i)]
        means.append(gamma[own].mean() if own.numel() else gamma.new_ones(()))
    mean_g = torch.stack(means).view(-1, *([1] * (instance.ndim - 1)))
    w_cr = torch.where(strong, ones, torch.where(instance >= 0, g_pix, mean_g.expand_as(g_pix)))
    valid = torch.as_tensor(batch.valid, device=gamma.device)
    return w_seg, w_cr * valid


MAX_SKIPPED_STEPS = 20  # non-finite float16 losses in a row that the gradient scaler may skip


def all_finite(nets) -> bool:
    """Whether every weight and buffer of ``nets`` is finite (one reduction per tensor)."""
    tensors = [t for n in nets for t in (*n.parameters(), *n.buffers()) if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def train_step(state: TrainState, ctx: StepContext, batch: Batch, gamma: torch.Tensor) -> dict[str, float]:
    """One step on ``batch`` (the global batch) with instance weights ``gamma``; returns the
    loss terms of the global batch and the learning rate.  Under several ranks each trains
    on its share; the losses are normalised by the global batch's counts and the
    gradients summed, so the step equals one process's on the whole batch."""
    cfg, dev, dist = ctx.cfg, state.device, state.dist
    for n in state.nets:
        n.train()
    mine = dist.share(len(batch.strong))
    x_all = torch.from_numpy(batch.image).to(dev, non_blocking=True)
    x = x_all[mine]
    t = torch.from_numpy(batch.target[mine]).to(dev, non_blocking=True)
    instance_all = torch.from_numpy(batch.instance).to(dev, non_blocking=True)
    w_seg, w_cr = pixel_weights(ctx, batch, instance_all, gamma)
    w_seg = w_seg[mine]
    boxmap, n_boxes, box_inst, box_cls = crop_boxes(
        torch.from_numpy(batch.boxmap[mine]).to(dev), ctx.box_instance, ctx.box_class
    )
    edges = affinity_edges(x, cfg.affinity_threshold) if n_boxes else None
    n_sup = dist.sum_(((t >= 0) | (boxmap >= 0)).sum()).clamp(min=1)
    lr = poly_lr(cfg.lr, state.step, cfg.steps)
    state.set_lr(lr)
    with state.precision.autocast():
        logits = [n(x) for n in state.training_nets]
    seg = x.new_zeros(())
    for z in logits:
        z = z.float()
        seg = seg + (w_seg * pixel_ce(z, t)).sum() / n_sup
        if n_boxes:
            per_box = box_losses(z, boxmap, n_boxes, edges, cfg.pairwise_weight, box_cls)
            seg = seg + (gamma[box_inst] * per_box).sum() / n_sup
    parts = {"seg": seg}
    loss = seg
    if ctx.method.co_regularises:
        parts["cr"] = co_regularisation(state.training_nets, x_all, logits, w_cr, state.rng, state.precision, dist)
        loss = loss + cr_weight(cfg, state.step, x.ndim - 2) * parts["cr"]
    total = loss
    if dist.active:  # this rank's share of the loss; every rank reports (and checks) the global terms
        summed = dist.sum_(torch.stack([v.detach() for v in (*parts.values(), loss)]))
        parts, total = dict(zip(parts, summed[:-1])), summed[-1]
        loss = loss * dist.world  # DistributedDataParallel averages the ranks' gradients; their sum is wanted
    if not torch.isfinite(total):
        # float16 overflows now and then: its gradient scaler skips such a step and lowers its scale
        state.nonfinite_streak += 1
        if state.precision.scaler is None or state.nonfinite_streak > MAX_SKIPPED_STEPS:
            raise DivergedError(
                f"training diverged at step {state.step + 1}: the loss is {float(total)}; lower the learning "
                "rate (--lr); the last checkpoint is kept"
            )
    else:
        state.nonfinite_streak = 0
    state.opt.zero_grad(set_to_none=True)
    state.precision.backward_and_step(loss, state.opt)
    if not all_finite(state.nets):
        raise DivergedError(
            f"training diverged at step {state.step + 1}: the weights are no longer finite; lower the learning "
            "rate (--lr); the last checkpoint is kept"
        )
    parts["total"] = total
    out = {k: float(v.detach()) for k, v in parts.items()}
    out["lr"] = lr
    return out
