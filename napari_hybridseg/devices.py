"""Devices and numeric precision: CUDA, then MPS, then the CPU.

Mixed precision follows the card: bfloat16 autocast where the GPU supports it
(Ampere and newer), float16 with a gradient scaler on older CUDA cards, full
float32 elsewhere.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """A ``torch.device`` for ``name``: ``auto`` tries CUDA, then MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device {name!r}; use one of {', '.join(DEVICES)} or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    if name.startswith("cuda:"):
        index = name.partition(":")[2]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has CUDA devices 0..{torch.cuda.device_count() - 1}")
    if name == "mps" and not _mps_available():
        raise ConfigError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    return torch.device(name)


@dataclass
class Precision:
    """Autocast dtype (``None``: float32) and, for float16, the gradient scaler."""

    device_type: str
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def has_native_bfloat16(device: torch.device) -> bool:
    """Whether the CUDA card computes in bfloat16 itself (Ampere and newer), rather than
    emulating it."""
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def precision_for(device: torch.device) -> Precision:
    """bfloat16 on CUDA cards that support it natively, float16 with a scaler on older
    ones, float32 on the CPU and MPS."""
    if device.type != "cuda":
        return Precision(device.type)
    if has_native_bfloat16(device):
        return Precision("cuda", torch.bfloat16)
    return Precision("cuda", torch.float16, torch.amp.GradScaler("cuda"))
