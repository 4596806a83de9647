"""Devices and precision: bfloat16 only where the card has it, float16 with a scaler elsewhere."""

import pytest
import torch

from napari_hybridseg import devices
from napari_hybridseg.devices import precision_for, resolve_device
from napari_hybridseg.errors import ConfigError


def test_cpu_trains_in_float32():
    p = precision_for(torch.device("cpu"))
    assert p.dtype is None and p.scaler is None


@pytest.mark.filterwarnings("ignore:.*GradScaler is enabled, but CUDA is not available")
def test_cuda_without_bfloat16_uses_float16_with_a_scaler(monkeypatch):
    monkeypatch.setattr(devices, "has_native_bfloat16", lambda device: False)
    p = precision_for(torch.device("cuda"))
    assert p.dtype == torch.float16 and isinstance(p.scaler, torch.amp.GradScaler)


def test_cuda_with_bfloat16_needs_no_scaler(monkeypatch):
    monkeypatch.setattr(devices, "has_native_bfloat16", lambda device: True)
    p = precision_for(torch.device("cuda"))
    assert p.dtype == torch.bfloat16 and p.scaler is None


def test_float16_step_goes_through_the_scaler():
    calls = []

    class Scaler:
        def scale(self, loss):
            calls.append("scale")
            return loss * 2

        def step(self, opt):
            calls.append("step")

        def update(self):
            calls.append("update")

    from napari_hybridseg.devices import Precision

    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    Precision("cuda", torch.float16, Scaler()).backward_and_step((w**2).sum(), opt)
    assert calls == ["scale", "step", "update"] and torch.equal(w.grad, torch.full((2,), 4.0))


def test_emulated_bfloat16_does_not_count(monkeypatch):
    """Pre-Ampere cards report bfloat16 "supported" through emulation; only native counts."""
    asked = []

    def supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation

    class Here:
        def __init__(self, device):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    monkeypatch.setattr(torch.cuda, "device", Here)
    assert devices.has_native_bfloat16(torch.device("cuda", 0)) is False and asked == [False]


def test_unknown_or_missing_devices_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_indices_are_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    for bad in ("cuda:x", "cuda:2", "cuda:-1"):
        with pytest.raises(ConfigError, match="CUDA devices 0..1"):
            resolve_device(bad)
