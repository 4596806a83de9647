"""A 3D network on volumes: samples whole, boxes and strokes on their slices, sparse
masks, anisotropic pooling from the voxel spacing, and the same closed-form DII."""

import numpy as np
import pytest
import torch

from napari_hybridseg.annotations import Box, ImageAnnotations, Project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.data.targets import build_training_set
from napari_hybridseg.data.tiling import Tiling
from napari_hybridseg.errors import AnnotationError
from napari_hybridseg.images import ImageMeta
from napari_hybridseg.losses import affinity_edges, box_losses, pixel_ce
from napari_hybridseg.synthetic import synth_volume
from napari_hybridseg.training import TrainingLoop

SMALL = dict(batch_size=2, patch_size_3d=16, width=4, depth=2, network="3d")


def _volumes(spacing=(3.0, 1.0, 1.0)):
    rng = np.random.default_rng(0)
    strong_vol, strong_lab = synth_volume(rng, (8, 32, 32))
    weak_vol, weak_lab = synth_volume(rng, (8, 32, 32))
    meta = ImageMeta(spacing=spacing, format="nii.gz")
    z = 4
    ys, xs = np.nonzero(weak_lab[z])
    strokes = np.zeros(weak_lab.shape, np.uint8)
    strokes[2, 1, 2:20] = 1
    strong = ImageAnnotations("s", strong_vol, meta, strong=strong_lab, strong_slices=[1, 4, 6])
    weak = ImageAnnotations(
        "w", weak_vol, meta, boxes=[Box(1, ys.min(), xs.min(), ys.max() + 1, xs.max() + 1, z=z)], scribbles=strokes
    )
    return Project([strong, weak])


def test_a_3d_network_sees_each_volume_whole_with_its_annotated_slices():
    tset = build_training_set(_volumes(), TrainConfig(**SMALL))
    assert tset.task.spatial_dims == 3 and tset.task.pools == ((1, 2, 2), (2, 2, 2))
    strong, weak = tset.strong[0], tset.weak[0]
    assert strong.image.shape == (1, 8, 32, 32) and strong.target.shape == (8, 32, 32)
    taught = [z for z in range(8) if (strong.target[z] >= 0).any()]
    assert taught == [1, 4, 6]  # the sparse mask: other slices unsupervised
    assert weak.image is not strong.image and weak.boxmap.shape == (8, 32, 32)
    assert sorted({int(z) for z in np.nonzero(weak.boxmap >= 0)[0]}) == [4]  # the box on its slice
    assert (weak.target[2, 1, 2:20] == 0).all() and (weak.target[0] == -1).all()


def test_a_3d_network_refuses_2d_images():
    project = _volumes()
    project.add(ImageAnnotations("flat", np.zeros((32, 32), np.float32), strong=np.ones((32, 32), np.uint8)))
    with pytest.raises(AnnotationError, match="flat: a 3D network trains on volumes"):
        build_training_set(project, TrainConfig(**SMALL))


def test_3d_weak_gradients_match_autograd():
    cfg = TrainConfig(
        method="dii", box_target="projection", dii_box_target="same", dii_logits="trained", steps=1, **SMALL
    )
    loop = TrainingLoop(_volumes(), cfg)
    net = loop.state.nets[0].double().eval()
    for s in loop.tset.samples:
        s.image = s.image.astype(np.float64)
    got = loop.scorer.weak_gradients(net)
    s = loop.tset.weak[0]
    # 8 slices, fewer than the patch's 16: the scorer pads them as the sampler does
    tiling = Tiling(s.spatial_shape, 128, 0, net.size_multiple, cfg.patch_size_3d)
    assert tiling.offsets == (4, 0, 0)
    x = torch.from_numpy(tiling.pad(s.image)[None])
    t, inst, br = (torch.from_numpy(tiling.pad(a, -1)[None]).long() for a in (s.target, s.instance, s.boxmap))
    edges = affinity_edges(x, cfg.affinity_threshold)
    rows = []
    for k in range(len(loop.weights)):
        net.zero_grad()
        z = net(x)
        loss = (pixel_ce(z, t) * (inst == k)).sum()
        per_box = box_losses(z, br, 1, edges, cfg.pairwise_weight, torch.as_tensor([1]))
        loss = loss + per_box[torch.from_numpy(loop.tset.box_instance) == k].sum()
        loss.backward()
        rows.append(torch.cat([net.classifier.weight.grad.flatten(1), net.classifier.bias.grad[:, None]], 1).flatten())
    expected = torch.stack(rows)
    assert expected.norm() > 0 and (got - expected).norm() / expected.norm() < 1e-6


def test_a_3d_run_trains_predicts_volumes_and_keeps_its_pooling(tmp_path):
    from napari_hybridseg.inference import predict_image
    from napari_hybridseg.modelfile import load_model

    cfg = TrainConfig(method="dii+dcr", steps=4, dii_warmup=1, dii_interval=2, **SMALL)
    loop = TrainingLoop(_volumes(), cfg, run_dir=tmp_path / "run")
    events = list(loop.events())
    assert type(events[-1]).__name__ == "FinishedEvent", events[-1]
    model = load_model(tmp_path / "run" / "model.pt")
    assert model.task.spatial_dims == 3 and model.task.pools == ((1, 2, 2), (2, 2, 2))
    vol = _volumes()["w"].image
    pred = predict_image(model.nets, vol, "zyx", tile=16)
    assert pred.probability.shape == vol.shape and np.isfinite(pred.probability).all()


@pytest.mark.parametrize("network, weight", [("3d", 0.1), ("2d", 1.0)])
def test_co_regularisation_weighs_by_the_network_unless_set(monkeypatch, network, weight):
    """``lambda_cr=None`` gives a 3D network a tenth of the paper's weight and a 2D one the
    paper's; a weight that is set is kept for either."""
    from napari_hybridseg.training import step

    seen = []
    original = step.cr_weight
    monkeypatch.setattr(step, "cr_weight", lambda *a: seen.append(original(*a)) or seen[-1])
    for lambda_cr, expected in ((None, weight), (0.5, 0.5)):
        cfg = TrainConfig(method="dcr", steps=2, lambda_cr=lambda_cr, **(SMALL | {"network": network}))
        TrainingLoop(_volumes(), cfg).train_step()
        assert seen[-1] == expected
