"""The CUDA paths: training every method, 3D, DII's closed forms and prediction on a GPU,
checked against the CPU.  Skipped where no CUDA device is present."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_hybridseg import protocol as P
from napari_hybridseg.annotations import Box, ImageAnnotations, LabelClasses, Project
from napari_hybridseg.cli import main
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.inference import predict_image
from napari_hybridseg.modelfile import load_model
from napari_hybridseg.synthetic import synth_image
from napari_hybridseg.training import TrainingLoop

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY = dict(batch_size=2, patch_size=32, width=4, depth=2, device="cuda")


def _run(loop):
    out = list(loop.events())
    errors = [e for e in out if isinstance(e, P.ErrorEvent)]
    assert not errors, errors[0].traceback
    return out


@pytest.mark.parametrize("method", ["strong-only", "naive", "dcr", "dii+dcr"])
def test_every_method_trains_on_the_gpu_and_its_model_predicts_alike_on_the_cpu(tiny_project, tmp_path, method):
    run = tmp_path / "run"
    cfg = TrainConfig(method=method, steps=6, dii_warmup=1, dii_interval=2, log_every=2, **TINY)
    out = _run(TrainingLoop(Project.load(tiny_project), cfg, run))
    steps = [e for e in out if isinstance(e, P.StepEvent)]
    assert len(steps) == 6 and all(np.isfinite(v) for e in steps for v in e.losses.values())
    loaded = load_model(run / "model.pt")
    assert all(p.device.type == "cpu" for n in loaded.nets for p in n.parameters())
    rng = np.random.default_rng(5)
    image, _ = synth_image(rng, (80, 72))
    on_cpu = predict_image(loaded.nets, image, "yx", device="cpu")
    on_gpu = predict_image(loaded.nets, image, "yx", device="cuda")
    assert np.abs(on_cpu.probability - on_gpu.probability).max() < 0.02
    assert all(p.device.type == "cpu" for n in loaded.nets for p in n.parameters())


def test_dii_closed_form_gradients_on_the_gpu_equal_the_cpus(hand_project):
    cfg = TrainConfig(method="dii", steps=1, batch_size=2, patch_size=32, width=4, depth=2, dii_logits="trained")
    loops = {device: TrainingLoop(hand_project, replace(cfg, device=device)) for device in ("cpu", "cuda")}
    loops["cuda"].state.nets[0].load_state_dict(loops["cpu"].state.nets[0].state_dict())
    scores = {}
    for device, loop in loops.items():
        net = loop.state.nets[0].eval()
        scores[device] = loop.scorer.weak_gradients(net).float().cpu()
    cpu, gpu = scores["cpu"], scores["cuda"]
    assert cpu.norm() > 0
    assert (cpu - gpu).norm() / cpu.norm() < 1e-3


def test_a_3d_network_with_several_classes_trains_and_predicts_on_the_gpu(tmp_path):
    rng = np.random.default_rng(2)
    vol = np.zeros((16, 48, 48), np.float32)
    labels = np.zeros(vol.shape, np.uint8)
    for z in range(16):
        vol[z], lab = synth_image(rng, (48, 48), n_objects=3)
        labels[z] = np.where(lab > 0, 1 + (z >= 8), 0)
    boxes = [Box(1, 4, 4, 20, 20, z=3, cls=1), Box(2, 10, 10, 30, 30, z=12, cls=2)]
    project = Project(
        [
            ImageAnnotations("s", vol, strong=labels, strong_slices=[2, 5, 10, 13]),
            ImageAnnotations("w", vol.copy(), boxes=boxes),
        ],
        classes=LabelClasses(("a", "b")),
    )
    cfg = TrainConfig(method="dii+dcr", network="3d", steps=4, dii_warmup=1, dii_interval=2, patch_size_3d=16, **TINY)
    loop = TrainingLoop(project, cfg, tmp_path / "run")
    _run(loop)
    assert loop.task.spatial_dims == 3 and loop.device.type == "cuda"
    assert all(0.0 <= w.weight <= 1.0 for w in loop.weights.table())
    pred = predict_image(loop.state.nets, vol, "zyx", device="cuda", tile=32)
    assert pred.labels().shape == vol.shape and pred.labels().max() <= 2


def test_the_cli_trains_on_the_gpu(tiny_project, tmp_path):
    out = tmp_path / "r"
    assert main(["train", str(tiny_project), "--out", str(out), "--device", "cuda", "--steps", "4"]) == 0
    assert load_model(out / "model.pt").config.device == "cuda"
