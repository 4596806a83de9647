"""Prediction: tiled equals whole, slices of volumes like their volume, model files are safe."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from napari_hybridseg.config import TrainConfig
from napari_hybridseg.data.preprocess import normalize
from napari_hybridseg.errors import ModelFileError
from napari_hybridseg.inference import predict_array, predict_image
from napari_hybridseg.modelfile import LoadedModel, load_model, save_model
from napari_hybridseg.networks import create_model
from napari_hybridseg.task import Task


def test_sliding_window_matches_whole_image_forward():
    net = create_model(Task(), depth=2, width=4, seed=0).eval()
    img = np.random.default_rng(0).random((1, 200, 136)).astype(np.float32)
    tiled = predict_array([net], img, tile=64, overlap=16).probability
    with torch.no_grad():
        whole = torch.softmax(net(torch.from_numpy(img[None])), 1)[0, 1].numpy()
    assert tiled.shape == (200, 136)
    # tiles see less context at their borders; blending keeps the difference small
    assert np.abs(tiled - whole).mean() < 0.02


def test_one_slice_of_a_volume_is_predicted_as_in_the_whole_volume():
    nets = [create_model(Task(), 2, 4, seed=s).eval() for s in (0, 1)]
    vol = np.random.default_rng(0).random((4, 24, 24)).astype(np.float32)
    vol[2] *= 20
    whole = predict_image(nets, vol, "zyx")
    one = predict_image(nets, vol, "zyx", z=2)
    np.testing.assert_allclose(one.probability, whole.probability[2], atol=1e-6)
    np.testing.assert_allclose(one.uncertainty, whole.uncertainty[2], atol=1e-6)


def test_3d_networks_predict_volumes_in_3d_tiles():
    net = create_model(Task(1, 1, 3), 2, 4, seed=0).eval()
    vol = np.random.default_rng(0).random((10, 20, 12)).astype(np.float32)
    pred = predict_image([net], vol, "zyx")
    with torch.no_grad():
        x = torch.from_numpy(np.pad(normalize(vol, "zyx")[:, 0], ((0, 2), (0, 0), (0, 0)), mode="symmetric"))
        whole = 1 - torch.softmax(net(x[None, None]), 1)[0, 0, :10].numpy()
    assert pred.probability.shape == (10, 20, 12) and pred.uncertainty is None
    np.testing.assert_allclose(pred.probability, whole, atol=1e-5)
    np.testing.assert_allclose(predict_image([net], vol, "zyx", z=4).probability, whole[4], atol=1e-5)


def test_model_file_round_trip_keeps_task_and_weights(tmp_path):
    task = Task(2, 1, 2)
    nets = [create_model(task, 2, 4, seed=3)]
    path = save_model(tmp_path / "m.pt", LoadedModel(nets, TrainConfig(depth=2, width=4), task))
    back = load_model(path)
    assert back.task == task and back.in_channels == 2
    for x, y in zip(nets[0].state_dict().values(), back.nets[0].state_dict().values()):
        assert torch.equal(x, y)


def test_model_files_without_a_task_read_as_one_class_2d(tmp_path):
    net = create_model(Task(3), 2, 4, seed=0)
    payload = {
        "format": "napari-hybridseg-model",
        "version": 1,
        "config": json.dumps(TrainConfig(depth=2, width=4).to_dict()),
        "in_channels": 3,
        "nets": [net.state_dict()],
    }
    torch.save(payload, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").task == Task(3, 1, 2)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickled_payload_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"format": "napari-hybridseg-model", "x": _Payload()}, fh)
    with pytest.raises(ModelFileError, match="evil.pt"):
        load_model(bad)
    torch.save({"format": "napari-hybridseg-model", "x": _Payload()}, tmp_path / "evil2.pt")
    with pytest.raises(ModelFileError, match="evil2.pt"):
        load_model(tmp_path / "evil2.pt")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_foreign_files_are_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not a napari-hybridseg model"):
        load_model(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"hello")
    with pytest.raises(ModelFileError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")


def _model_payload(**changes):
    net = create_model(Task(), 2, 4, seed=0)
    payload = {
        "format": "napari-hybridseg-model",
        "version": 1,
        "config": json.dumps(TrainConfig(depth=2, width=4).to_dict()),
        "in_channels": 1,
        "task": json.dumps(Task().to_dict()),
        "nets": [net.state_dict()],
    }
    payload.update(changes)
    return payload


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"nets": []}, "holds no networks"),
        ({"config": json.dumps({**TrainConfig(depth=2, width=4).to_dict(), "width": 3000})}, "width must be"),
        ({"config": json.dumps({**TrainConfig(depth=2, width=4).to_dict(), "width": 64})}, "do not match"),
        ({"task": json.dumps({"in_channels": 1, "n_classes": 10**6, "spatial_dims": 2})}, "n_classes"),
    ],
)
def test_a_model_file_is_checked_before_anything_is_built(tmp_path, monkeypatch, changes, message):
    """A tiny file declaring a huge network is refused without allocating it."""
    torch.save(_model_payload(**changes), tmp_path / "m.pt")
    built = []
    monkeypatch.setattr("napari_hybridseg.modelfile.model_for", lambda *a, **k: built.append(a) or pytest.fail())
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(tmp_path / "m.pt")
    assert "m.pt" in str(info.value) and not built


def test_a_memory_mapped_image_is_predicted_like_one_in_memory(tmp_path):
    import tifffile

    from napari_hybridseg.images import read_image

    img = (np.random.default_rng(0).random((300, 700)) * 4000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", img)
    mapped, _ = read_image(tmp_path / "big.tif", mmap=True)
    assert isinstance(mapped, np.memmap)
    nets = [create_model(Task(), 2, 4, seed=s).eval() for s in (0, 1)]
    a = predict_image(nets, mapped, "yx", tile=128)
    b = predict_image(nets, img, "yx", tile=128)
    np.testing.assert_array_equal(a.probability, b.probability)
    np.testing.assert_array_equal(a.uncertainty, b.uncertainty)
    assert a.labels().dtype == np.uint16


def test_blending_divides_by_the_total_window_weight():
    """A constant network output stays that constant after overlapping tiles are blended."""
    from napari_hybridseg.data.tiling import Tiling
    from napari_hybridseg.inference.predict import _blend

    tiling = Tiling((300, 260), 64, 16, 8)
    win = tiling.blend_weights()
    acc = np.zeros((2, 1, *tiling.padded_shape), np.float32)  # (networks, classes, *S)
    for t in tiling.tiles:
        acc[(0, 0, *t.window)] += 0.25 * win
        acc[(1, 0, *t.window)] += 0.75 * win
    pred = _blend(acc, tiling)
    np.testing.assert_allclose(pred.probability, 0.5, atol=1e-5)
    np.testing.assert_allclose(pred.uncertainty, 0.5, atol=1e-5)
    assert pred.class_probability is None
    # two classes: each class's mean over the networks, disagreement on any structure
    acc = np.zeros((2, 2, *tiling.padded_shape), np.float32)
    for t in tiling.tiles:
        acc[(0, slice(None), *t.window)] += np.multiply.outer([0.1, 0.6], win)
        acc[(1, slice(None), *t.window)] += np.multiply.outer([0.3, 0.3], win)
    pred = _blend(acc, tiling)
    np.testing.assert_allclose(pred.class_probability[:, 5, 7], [0.2, 0.45], atol=1e-5)
    np.testing.assert_allclose(pred.probability, 0.65, atol=1e-5)
    np.testing.assert_allclose(pred.uncertainty, 0.1, atol=1e-5)
    assert (pred.labels() == 2).all() and pred.labels().dtype == np.uint8


def test_a_pixel_of_several_classes_is_its_most_probable_class_background_included():
    """Background 0.4 against classes 0.35 and 0.25: background, though the classes
    together (0.6) outweigh it."""
    from napari_hybridseg.inference.predict import Prediction

    classes = np.array([[[0.35, 0.5]], [[0.25, 0.1]]], np.float32)  # (K=2, 1, 2)
    pred = Prediction(classes.sum(0), None, classes)
    np.testing.assert_array_equal(pred.labels(), [[0, 1]])


@pytest.mark.parametrize("spatial", [(40, 20), (12, 40, 36)])
def test_an_image_narrower_than_the_training_patch_is_seen_as_in_training(spatial):
    """An axis shorter than the training patch is padded to it, centred and mirrored, as the
    patch sampler does: a network that learned from that layout predicts from the same one
    (a hemisphere 31 px wide, padded at its end only, lost most of its Dice)."""
    from napari_hybridseg.data.sampler import _Padded
    from napari_hybridseg.data.targets import TrainingSample
    from napari_hybridseg.networks import create_model
    from napari_hybridseg.task import Task

    side = 32 if len(spatial) == 2 else 16
    net = create_model(Task(spatial_dims=len(spatial)), depth=2, width=4, seed=0, patch_side=side).eval()
    seen = []
    net.register_forward_pre_hook(lambda _m, args: seen.append(args[0][0].numpy().copy()))
    image = np.random.default_rng(0).normal(size=(1, *spatial)).astype(np.float32)
    pred = predict_array([net], image, tile=64)
    sample = TrainingSample("a", None, image, np.zeros(spatial, np.int64), np.full(spatial, -1, np.int64), strong=True)
    trained_on = _Padded(sample, side).image
    assert len(seen) == 1 and seen[0].shape == trained_on.shape
    np.testing.assert_array_equal(seen[0], trained_on)
    assert pred.probability.shape == spatial


def test_a_saved_model_pads_small_images_as_its_training_patches(tmp_path):
    """The patch side travels with the model file, so predictions after loading pad alike."""
    from napari_hybridseg.modelfile import LoadedModel, load_model, save_model
    from napari_hybridseg.networks import create_model
    from napari_hybridseg.task import Task

    cfg = TrainConfig(depth=2, width=4, patch_size=48)
    nets = [create_model(Task(), 2, 4, seed=0, patch_side=cfg.patch_side(2)).eval()]
    save_model(tmp_path / "m.pt", LoadedModel(nets, cfg, Task()))
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.nets[0].patch_side == 48
    image = np.random.default_rng(0).normal(size=(1, 20, 60)).astype(np.float32)
    np.testing.assert_allclose(
        predict_array(loaded.nets, image).probability, predict_array(nets, image).probability, atol=1e-6
    )


def test_predicting_leaves_the_callers_networks_as_they_were():
    nets = [create_model(Task(), 2, 4, seed=s) for s in (0, 1)]  # in training mode, as a live run's
    before = [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]
    img = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    pred = predict_image(nets, img, "yx")
    assert all(n.training for n in nets)
    assert all(torch.equal(v, b[k]) for n, b in zip(nets, before) for k, v in n.state_dict().items())
    # the same result as with the networks in eval mode
    evals = [create_model(Task(), 2, 4, seed=s).eval() for s in (0, 1)]
    np.testing.assert_array_equal(pred.probability, predict_image(evals, img, "yx").probability)


def test_a_volume_is_predicted_in_tiles_of_bounded_size(monkeypatch):
    """A 3D tile's voxels grow with the cube of its side: a CT 512 voxels across is
    predicted in tiles of at most 128 per axis, not in one pass over the whole scan."""
    from napari_hybridseg.inference import predict as P

    sides, real = [], P.Tiling
    monkeypatch.setattr(P, "Tiling", lambda shape, tile, *a: sides.append((len(shape), tile)) or real(shape, tile, *a))
    net3, net2 = create_model(Task(1, 1, 3), 2, 4, seed=0).eval(), create_model(Task(), 2, 4, seed=0).eval()
    vol = np.random.default_rng(0).random((4, 140, 8)).astype(np.float32)
    pred = predict_image([net3], vol, "zyx")
    predict_image([net2], vol[0], "yx")
    assert sides == [(3, 128), (2, 512)] and pred.probability.shape == vol.shape
