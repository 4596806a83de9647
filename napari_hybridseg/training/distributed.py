"""Training on several processes or GPUs with PyTorch's own distributed engine.

Every rank samples the same global batch (one random stream, one seed) and trains on
its share of it; gradients are summed with DistributedDataParallel, BatchNorm
statistics are those of the global batch (SyncBatchNorm on CUDA, the same all-reduce
of sums on the CPU), so that N ranks take exactly the step one process takes on the
whole batch.  Rank 0 alone writes the run folder and speaks to the user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    """This process's place among the ranks (rank 0 of 1 when training alone)."""

    rank: int = 0
    world: int = 1
    gpu: bool = False  # one CUDA device per rank (NCCL); else gloo on the CPU

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` (which must divide evenly)."""
        if n % self.world:
            raise ValueError(f"a batch of {n} cannot be split evenly over {self.world} processes")
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def shard(self, items: list) -> list:
        """This rank's share of ``items`` (round robin)."""
        return items[self.rank :: self.world]

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place (nothing to do alone)."""
        if self.active:
            torch.distributed.all_reduce(tensor)
        return tensor

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor``, concatenated along the first axis in rank order."""
        if not self.active:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def any_(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (every rank gets the same answer)."""
        if not self.active:
            return flag
        value = torch.tensor([int(flag)])
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    @classmethod
    def from_environment(cls, device: str = "auto") -> Distributed:
        """The ranks torchrun describes in ``RANK``/``WORLD_SIZE`` (joined here), else alone.

        NCCL with one GPU per rank (``LOCAL_RANK``) where the run uses CUDA, gloo on the CPU."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if device.startswith("cuda:"):
            raise ConfigError(f"device {device!r}: with several processes each takes its own GPU; use --device cuda")
        if device == "mps":
            raise ConfigError("device 'mps' cannot train with several processes; use --device cpu")
        gpu = device in ("auto", "cuda") and torch.cuda.is_available()
        if not torch.distributed.is_initialized():
            if gpu:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            torch.distributed.init_process_group("nccl" if gpu else "gloo")
        return cls(torch.distributed.get_rank(), torch.distributed.get_world_size(), gpu)

    def device_name(self, requested: str) -> str:
        """One GPU per rank on CUDA (``LOCAL_RANK``); the CPU is shared."""
        if self.active and self.gpu:
            return f"cuda:{torch.cuda.current_device()}"
        return "cpu" if self.active else requested


ALONE = Distributed()


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks, for the CPU (where PyTorch's
    SyncBatchNorm does not run): one all-reduce of the per-channel sums, with autograd
    through it.  Same parameters and buffers as the layer it replaces."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 3:
            raise ValueError(f"expected input with channels and spatial axes, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        import torch.distributed.nn.functional as dist_fn

        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        stats = dist_fn.all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp(min=0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def global_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``module`` by one over the global batch, in place."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement.to(child.weight.device))
        else:
            global_batch_norm(child, device)
    return module
