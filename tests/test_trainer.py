"""Trainer: targets, DCR pieces, events, pause/stop/resume, checkpoints, model files."""

import json
import os
import pickle
import threading

import numpy as np
import pytest
import torch

from napari_hybridseg import events as ev
from napari_hybridseg.annotations import Box, ImageAnnotations, Project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.dcr import cross_pseudo_loss, cutmix_masks, mix
from napari_hybridseg.errors import ConfigError, ModelFileError
from napari_hybridseg.modelfile import load_model
from napari_hybridseg.preprocess import normalize
from napari_hybridseg.targets import build_training_set

TINY = dict(batch_size=2, patch_size=32, width=4, depth=2)


def _cfg(**kw):
    return TrainConfig(**{**TINY, **kw})


def _run(trainer):
    out = list(trainer.run())
    errors = [e for e in out if isinstance(e, ev.ErrorEvent)]
    assert not errors, errors[0].traceback
    return out


# -- targets ---------------------------------------------------------------------------
def test_box_targets_filled_and_projection(hand_project):
    filled = build_training_set(hand_project, _cfg(box_target="filled"))
    w = filled.weak[0]
    keys = [i.key for i in filled.instances]
    k1 = keys.index(("w", "1", "box"))
    kb = keys.index(("w", "background", "background"))
    assert (w.target[4:20, 4:20] == 1).all() and (w.instance[4:20, 4:20] == k1).all()
    assert w.target[0, 0] == 0 and w.instance[0, 0] == kb
    proj = build_training_set(hand_project, _cfg(box_target="projection")).weak[0]
    assert (proj.target[3:21, 3:21] == -1).all()  # box and its ring: no cross-entropy
    assert (proj.instance[3:21, 3:21] == k1).all()
    assert (proj.boxrect[4:20, 4:20] >= 0).all() and proj.boxrect[3, 3] == -1
    assert proj.target[0, 0] == 0


def test_not_exhaustive_leaves_outside_ignored(hand_project):
    hand_project["w"].exhaustive = False
    w = build_training_set(hand_project, _cfg(box_target="filled")).weak[0]
    assert w.target[0, 0] == -1 and w.instance[0, 0] == -1
    assert all(i.kind == "box" for i in build_training_set(hand_project, _cfg()).instances)


def test_overlapping_boxes_smaller_owns_overlap():
    img = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    p = Project(
        [
            ImageAnnotations("s", img, strong=np.zeros((40, 40), np.uint8)),
            ImageAnnotations("w", img, boxes=[Box(1, 0, 0, 30, 30), Box(2, 10, 10, 20, 20)]),
        ]
    )
    ts = build_training_set(p, _cfg(box_target="filled"))
    keys = [i.key for i in ts.instances]
    assert ts.weak[0].instance[15, 15] == keys.index(("w", "2", "box"))
    assert ts.weak[0].instance[5, 5] == keys.index(("w", "1", "box"))


def test_scribble_targets():
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    scr = np.zeros((32, 32), np.int32)
    scr[2, 2:10] = 1
    scr[20, 5:15] = 3
    p = Project(
        [ImageAnnotations("s", img, strong=np.ones((32, 32), np.uint8)), ImageAnnotations("w", img, scribbles=scr)]
    )
    w = build_training_set(p, _cfg()).weak[0]
    assert (w.target[2, 2:10] == 0).all() and (w.target[20, 5:15] == 1).all()
    assert (w.target[scr == 0] == -1).all()


def test_volume_trains_on_annotated_slices():
    rng = np.random.default_rng(0)
    vol = rng.random((6, 32, 32)).astype(np.float32)
    mask = np.zeros((6, 32, 32), np.uint8)
    mask[:, 10:20, 10:20] = 1
    p = Project(
        [
            ImageAnnotations("s", vol, strong=mask),
            ImageAnnotations("w", vol, boxes=[Box(1, 5, 5, 15, 15, z=2), Box(2, 5, 5, 15, 15, z=4)]),
        ]
    )
    ts = build_training_set(p, _cfg())
    assert len(ts.strong) == 6 and sorted(s.z for s in ts.weak) == [2, 4]


def test_no_strong_data_is_an_error():
    img = np.zeros((32, 32), np.float32)
    with pytest.raises(ValueError, match="full mask"):
        build_training_set(Project([ImageAnnotations("w", img, boxes=[Box(1, 0, 0, 5, 5)])]), _cfg())


@pytest.mark.parametrize("dtype, offset", [(np.uint8, 0), (np.uint16, 1000), (np.float32, -5.0)])
def test_normalisation_is_dtype_independent(dtype, offset):
    base = np.random.default_rng(0).random((64, 64)) * 200
    img = (base + offset).astype(dtype)
    out = normalize(img, "yx")
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    assert -0.1 < np.percentile(out, 1) < 0.1 and 0.9 < np.percentile(out, 99.8) < 1.1


# -- DCR -------------------------------------------------------------------------------
def test_cutmix_mask_and_mixing():
    m = cutmix_masks(np.random.default_rng(0), 3, 16, 16)
    assert m.shape == (3, 1, 16, 16) and set(np.unique(m)) <= {0.0, 1.0} and m.sum() > 0
    a, b = torch.zeros(3, 1, 16, 16), torch.ones(3, 1, 16, 16)
    mt = torch.from_numpy(m)
    assert torch.equal(mix(a, b, mt), mt)
    labels = mix(torch.zeros(3, 16, 16), torch.full((3, 16, 16), 7.0), mt)
    assert torch.equal(labels, mt[:, 0] * 7)


def test_cross_pseudo_loss_uses_the_other_networks_labels():
    z1 = torch.tensor([[[[5.0]], [[-5.0]]]])  # predicts class 0
    z2 = torch.tensor([[[[-5.0]], [[5.0]]]])  # predicts class 1
    y1, y2 = z1.argmax(1), z2.argmax(1)
    w = torch.ones(1, 1, 1)
    # each network is told the other's (opposite) label: both terms are large
    assert cross_pseudo_loss(z1, z2, y1, y2, w) > 9
    # agreeing labels give a small loss; zero weight gives none
    assert cross_pseudo_loss(z1, z2, y2, y1, w) < 1e-3
    assert cross_pseudo_loss(z1, z2, y1, y2, torch.zeros(1, 1, 1)) == 0


# -- the loop --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["strong-only", "naive", "dii", "dcr", "dii+dcr"])
def test_every_method_runs_and_writes_the_run_folder(tiny_project, tmp_path, method):
    from napari_hybridseg.trainer import Trainer

    run = tmp_path / "run"
    cfg = _cfg(method=method, steps=4, dii_warmup=1, dii_interval=2, log_every=2)
    out = _run(Trainer(Project.load(tiny_project), cfg, run))
    assert isinstance(out[0], ev.StartedEvent) and isinstance(out[-1], ev.FinishedEvent)
    steps = [e for e in out if isinstance(e, ev.StepEvent)]
    assert [e.step for e in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(v) for e in steps for v in e.losses.values())
    assert ("cr" in steps[0].losses) == (method in ("dcr", "dii+dcr"))
    for name in ("model.pt", "config.json", "metrics.jsonl", "weights.csv", "checkpoint.pt"):
        assert (run / name).is_file(), name
    rows = (run / "weights.csv").read_text().splitlines()
    assert rows[0] == "image,instance,kind,weight"
    weights = [float(r.split(",")[3]) for r in rows[1:]]
    assert all(0.0 <= w <= 1.0 for w in weights)
    if method in ("naive", "dcr"):
        assert weights and all(w == 1.0 for w in weights)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4] and "elapsed" in metrics[0]
    assert TrainConfig.load(run / "config.json") == cfg
    assert len(load_model(run / "model.pt").nets) == (2 if "dcr" in method else 1)


def test_seeded_run_is_reproducible_and_resume_matches(tiny_project, tmp_path):
    from napari_hybridseg.trainer import Trainer

    project = Project.load(tiny_project)
    cfg = _cfg(method="dii+dcr", steps=6, dii_warmup=2, dii_interval=2, checkpoint_every=3)
    a = Trainer(project, cfg, tmp_path / "a")
    _run(a)
    b = Trainer(project, cfg, tmp_path / "b")
    _run(b)
    # interrupted after 3 steps, then resumed from the checkpoint in a new trainer
    c = Trainer(project, cfg, tmp_path / "c")
    for e in c.run():
        if isinstance(e, ev.CheckpointEvent):
            break
    assert c.step == 3
    d = Trainer(project, cfg, tmp_path / "c", resume=True)
    assert d.step == 3
    _run(d)
    for x, y, z in zip(
        a.nets[0].state_dict().values(), b.nets[0].state_dict().values(), d.nets[0].state_dict().values()
    ):
        assert torch.equal(x, y)
        assert torch.allclose(x.float(), z.float(), atol=1e-6)
    assert torch.allclose(a.weights.values(), d.weights.values(), atol=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_pause_resume_and_stop_from_another_thread(tiny_project):
    from napari_hybridseg.trainer import Trainer

    tr = Trainer(Project.load(tiny_project), _cfg(method="dii", steps=200))
    seen = []
    for e in tr.run():
        seen.append(e)
        if isinstance(e, ev.StepEvent) and e.step == 2:
            tr.pause()
            threading.Timer(0.2, tr.resume).start()
        if isinstance(e, ev.PausedEvent) and not e.paused:
            tr.stop()
    kinds = [type(e).__name__ for e in seen]
    assert "PausedEvent" in kinds
    assert [e.paused for e in seen if isinstance(e, ev.PausedEvent)] == [True, False]
    assert isinstance(seen[-1], ev.FinishedEvent) and seen[-1].stopped and seen[-1].step < 200


def test_update_annotations_mid_run_and_pins(hand_project):
    from napari_hybridseg.trainer import Trainer

    cfg = _cfg(method="dii", steps=30, dii_warmup=1, dii_interval=1)
    tr = Trainer(hand_project, cfg)
    gen = tr.run()
    for e in gen:
        if isinstance(e, ev.StepEvent) and e.step == 3:
            break
    before = {w.instance: w.weight for w in tr.weights_table()}
    assert before["2"] < 1.0 or before["1"] < 1.0 or before["background"] < 1.0
    tr.pin(("w", "1", "box"), 0.0)
    edited = Project(
        [
            hand_project["s"],
            ImageAnnotations(
                "w",
                hand_project["w"].image,
                boxes=[Box(1, 4, 4, 20, 20), Box(3, 40, 2, 60, 20)],  # box 2 removed, box 3 new
            ),
        ]
    )
    tr.update_project(edited)
    updates = []
    for e in gen:
        if isinstance(e, ev.AnnotationsUpdatedEvent | ev.WeightsEvent):
            updates.append(e)
        if isinstance(e, ev.StepEvent):
            break
    assert any(isinstance(e, ev.AnnotationsUpdatedEvent) for e in updates)
    after = {w.instance: w for w in tr.weights_table()}
    assert set(after) == {"1", "3", "background"}
    assert after["1"].weight == 0.0 and after["1"].pinned
    assert after["background"].weight == pytest.approx(before["background"], abs=0.2)
    for e in gen:
        if isinstance(e, ev.WeightsEvent) and e.step > 6:
            break
    assert {w.instance: w.weight for w in tr.weights_table()}["1"] == 0.0
    tr.stop()
    list(gen)


def test_preview_event(hand_project):
    from napari_hybridseg.trainer import Trainer

    tr = Trainer(hand_project, _cfg(method="dcr", steps=4))
    tr.request_preview("w", every=2)
    previews = [e for e in _run(tr) if isinstance(e, ev.PreviewEvent)]
    assert [p.step for p in previews] == [1, 2, 4]
    assert previews[0].probability.shape == (64, 64) and previews[0].uncertainty.shape == (64, 64)


def test_error_becomes_event_and_keeps_checkpoint(tiny_project, tmp_path, monkeypatch):
    from napari_hybridseg.trainer import Trainer

    tr = Trainer(Project.load(tiny_project), _cfg(method="dii", steps=10, checkpoint_every=2), tmp_path / "r")
    calls = {"n": 0}
    original = tr.train_step

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("boom")
        return original(batch)

    monkeypatch.setattr(tr, "train_step", flaky)
    out = list(tr.run())
    assert isinstance(out[-1], ev.ErrorEvent) and "boom" in out[-1].message
    assert (tmp_path / "r" / "checkpoint.pt").is_file()


# -- model files -----------------------------------------------------------------------
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


def test_config_validation():
    with pytest.raises(ConfigError, match="method"):
        TrainConfig(method="magic")
    with pytest.raises(ConfigError, match="multiple of"):
        TrainConfig(patch_size=100, depth=3)
    with pytest.raises(ConfigError, match="device"):
        TrainConfig(device="tpu")


# -- prediction ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [37, 64, 300, 1000])
def test_tile_layout_covers_with_little_redundancy(size):
    from napari_hybridseg.predict import _layout

    tile, starts = _layout(size, 256, 32, 8)
    assert tile % 8 == 0 and starts[0] == 0
    covered = np.zeros(max(size, tile), bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered[:size].all()
    if len(starts) > 1:
        assert min(b - a for a, b in zip(starts, starts[1:])) <= tile - 32  # overlap at least 32
        assert len(starts) * tile / size < 1.25


def test_sliding_window_matches_whole_image_forward():
    from napari_hybridseg.networks import create_model
    from napari_hybridseg.predict import predict_slice

    net = create_model(1, depth=2, width=4, seed=0).eval()
    img = np.random.default_rng(0).random((1, 200, 136)).astype(np.float32)
    tiled = predict_slice([net], img, tile=64, overlap=16).probability
    with torch.no_grad():
        padded = np.pad(img, ((0, 0), (0, 0), (0, 0)))
        whole = torch.softmax(net(torch.from_numpy(padded[None])), 1)[0, 1].numpy()
    assert tiled.shape == (200, 136)
    # tiles see less context at their borders; blending keeps the difference small
    assert np.abs(tiled - whole).mean() < 0.02
