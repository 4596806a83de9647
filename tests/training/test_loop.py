"""The training loop: every method, the run folder, commands, resume, previews, errors."""

import json
import queue
import threading

import numpy as np
import pytest
import torch

from napari_hybridseg import protocol as P
from napari_hybridseg.annotations import Box, ImageAnnotations, Project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.errors import ConfigError
from napari_hybridseg.modelfile import load_model
from napari_hybridseg.protocol import InstanceKey
from napari_hybridseg.training import TrainingLoop

TINY = dict(batch_size=2, patch_size=32, width=4, depth=2)


def _cfg(**kw):
    return TrainConfig(**{**TINY, **kw})


def _run(loop, inbox=None):
    out = list(loop.events(inbox))
    errors = [e for e in out if isinstance(e, P.ErrorEvent)]
    assert not errors, errors[0].traceback
    return out


def _same_networks(a, b) -> bool:
    return all(
        torch.equal(x, y)
        for na, nb in zip(a.state.nets, b.state.nets)
        for x, y in zip(na.state_dict().values(), nb.state_dict().values())
    )


@pytest.mark.parametrize("method", ["strong-only", "naive", "dii", "dcr", "dii+dcr"])
def test_every_method_runs_and_writes_the_run_folder(tiny_project, tmp_path, method):
    run = tmp_path / "run"
    cfg = _cfg(method=method, steps=4, dii_warmup=1, dii_interval=2, log_every=2)
    out = _run(TrainingLoop(Project.load(tiny_project), cfg, run))
    assert isinstance(out[0], P.StartedEvent) and isinstance(out[-1], P.FinishedEvent)
    steps = [e for e in out if isinstance(e, P.StepEvent)]
    assert [e.step for e in steps] == [1, 2, 3, 4]
    assert all(np.isfinite(v) for e in steps for v in e.losses.values())
    assert ("cr" in steps[0].losses) == (method in ("dcr", "dii+dcr"))
    for name in ("model.pt", "config.json", "metrics.jsonl", "weights.csv", "checkpoint.pt"):
        assert (run / name).is_file(), name
    rows = (run / "weights.csv").read_text().splitlines()
    assert rows[0] == "image,instance,kind,weight"
    weights = [float(r.split(",")[3]) for r in rows[1:]]
    assert all(0.0 <= w <= 1.0 for w in weights)
    assert bool(weights) == (method != "strong-only")
    if method in ("naive", "dcr"):
        assert all(w == 1.0 for w in weights)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4] and "elapsed" in metrics[0]
    assert TrainConfig.load(run / "config.json") == cfg
    model = load_model(run / "model.pt")
    assert len(model.nets) == (2 if "dcr" in method else 1) and model.task.in_channels == 1


def test_seeded_run_is_reproducible_and_resume_matches(tiny_project, tmp_path):
    project = Project.load(tiny_project)
    cfg = _cfg(method="dii+dcr", steps=6, dii_warmup=2, dii_interval=2, checkpoint_every=3)
    a = TrainingLoop(project, cfg, tmp_path / "a")
    _run(a)
    b = TrainingLoop(project, cfg, tmp_path / "b")
    _run(b)
    assert _same_networks(a, b) and torch.equal(a.weights.values(), b.weights.values())
    # interrupted after 3 steps, then resumed from the checkpoint in a new loop
    c = TrainingLoop(project, cfg, tmp_path / "c")
    for e in c.events():
        if isinstance(e, P.CheckpointEvent):
            break
    assert c.state.step == 3
    d = TrainingLoop(project, cfg, tmp_path / "c", resume=True)
    assert d.state.step == 3
    _run(d)
    for x, z in zip(a.state.nets[0].state_dict().values(), d.state.nets[0].state_dict().values()):
        assert torch.allclose(x.float(), z.float(), atol=1e-6)
    assert torch.allclose(a.weights.values(), d.weights.values(), atol=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_previews_leave_the_training_bit_identical(hand_project):
    """A preview predicts in eval mode from a copy of the networks: BatchNorm statistics
    and weights end the same as in a run without previews."""
    cfg = _cfg(method="dii+dcr", steps=5, dii_warmup=2, dii_interval=2)
    plain = TrainingLoop(hand_project, cfg)
    _run(plain)
    watched = TrainingLoop(hand_project, cfg)
    inbox = queue.Queue()
    inbox.put(P.RequestPreview("w", every=1))
    previews = [e for e in _run(watched, inbox) if isinstance(e, P.PreviewEvent)]
    assert [p.step for p in previews] == [1, 2, 3, 4, 5]
    assert _same_networks(plain, watched)
    assert torch.equal(plain.weights.values(), watched.weights.values())


def test_preview_events_and_unknown_images(hand_project):
    loop = TrainingLoop(hand_project, _cfg(method="dcr", steps=4))
    inbox = queue.Queue()
    inbox.put(P.RequestPreview("w", every=2))
    previews = [e for e in _run(loop, inbox) if isinstance(e, P.PreviewEvent)]
    assert [p.step for p in previews] == [1, 2, 4]
    assert previews[0].probability.shape == (64, 64) and previews[0].uncertainty.shape == (64, 64)
    assert 0.0 <= previews[0].probability.min() and previews[0].probability.max() <= 1.0
    inbox.put(P.RequestPreview("nope", every=1))
    loop = TrainingLoop(hand_project, _cfg(method="dcr", steps=2))
    assert not [e for e in _run(loop, inbox) if isinstance(e, P.PreviewEvent)]


def test_pause_resume_and_stop_through_the_inbox(tiny_project):
    loop = TrainingLoop(Project.load(tiny_project), _cfg(method="dii", steps=200))
    inbox = queue.Queue()
    seen = []
    for e in loop.events(inbox):
        seen.append(e)
        if isinstance(e, P.StepEvent) and e.step == 2:
            inbox.put(P.Pause())
            threading.Timer(0.2, inbox.put, (P.Resume(),)).start()
        if isinstance(e, P.PausedEvent) and not e.paused:
            inbox.put(P.Stop())
    assert [e.paused for e in seen if isinstance(e, P.PausedEvent)] == [True, False]
    assert isinstance(seen[-1], P.FinishedEvent) and seen[-1].stopped and seen[-1].step < 200


def test_update_annotations_mid_run_and_pins(hand_project):
    loop = TrainingLoop(hand_project, _cfg(method="dii", steps=30, dii_warmup=1, dii_interval=1, background_tile=0))
    inbox = queue.Queue()
    gen = loop.events(inbox)
    for e in gen:
        if isinstance(e, P.StepEvent) and e.step == 3:
            break
    before = {w.instance: w.weight for w in loop.weights.table()}
    assert min(before.values()) < 1.0
    inbox.put(P.Pin(InstanceKey("w", "1", "box"), 0.0))
    edited = Project(
        [
            hand_project["s"],
            ImageAnnotations(
                "w", hand_project["w"].image, boxes=[Box(1, 4, 4, 20, 20), Box(3, 40, 2, 60, 20)]
            ),  # box 2 removed, box 3 new
        ]
    )
    inbox.put(P.UpdateProject(edited))
    updates = []
    for e in gen:
        if isinstance(e, P.AnnotationsUpdatedEvent | P.WeightsEvent):
            updates.append(e)
        if isinstance(e, P.StepEvent):
            break
    assert any(isinstance(e, P.AnnotationsUpdatedEvent) and e.problem is None for e in updates)
    at_update = updates[updates.index(next(e for e in updates if isinstance(e, P.AnnotationsUpdatedEvent))) + 1]
    assert {w.instance: w.weight for w in at_update.weights}["3"] == 1.0  # new: starts trusted
    after = {w.instance: w for w in loop.weights.table()}
    assert set(after) == {"1", "3", "background"}
    assert after["1"].weight == 0.0 and after["1"].pinned
    assert after["background"].weight == pytest.approx(before["background"], abs=0.2)
    for e in gen:
        if isinstance(e, P.WeightsEvent) and e.step > 6:
            break
    assert {w.instance: w.weight for w in loop.weights.table()}["1"] == 0.0
    inbox.put(P.Stop())
    assert isinstance(list(gen)[-1], P.FinishedEvent)


def test_unusable_update_is_refused_and_training_goes_on(hand_project):
    loop = TrainingLoop(hand_project, _cfg(method="dii", steps=4))
    inbox = queue.Queue()
    inbox.put(P.UpdateProject(Project([hand_project["w"]])))  # the only full mask is gone
    out = _run(loop, inbox)
    (update,) = [e for e in out if isinstance(e, P.AnnotationsUpdatedEvent)]
    assert "full mask" in update.problem
    assert isinstance(out[-1], P.FinishedEvent) and out[-1].step == 4


def test_error_becomes_event_and_keeps_checkpoint(tiny_project, tmp_path, monkeypatch):
    loop = TrainingLoop(Project.load(tiny_project), _cfg(method="dii", steps=10, checkpoint_every=2), tmp_path / "r")
    calls = {"n": 0}
    original = loop.train_step

    def flaky():
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("boom")
        return original()

    monkeypatch.setattr(loop, "train_step", flaky)
    out = list(loop.events())
    assert isinstance(out[-1], P.ErrorEvent) and "boom" in out[-1].message
    assert (tmp_path / "r" / "checkpoint.pt").is_file()


def test_config_validation():
    with pytest.raises(ConfigError, match="method"):
        TrainConfig(method="magic")
    with pytest.raises(ConfigError, match="multiple of"):
        TrainConfig(patch_size=100, depth=3)
    with pytest.raises(ConfigError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(ConfigError, match="resume needs a run folder"):
        TrainingLoop(
            Project([ImageAnnotations("s", np.ones((32, 32)), strong=np.ones((32, 32), int))]), _cfg(), resume=True
        )


def _holds_a_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(_holds_a_tensor(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_a_tensor(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return any(_holds_a_tensor(getattr(value, f)) for f in value.__dataclass_fields__)
    return False


def test_commands_and_events_are_plain_data_that_cross_a_process_boundary(hand_project):
    import pickle

    commands = [P.Pause(), P.Resume(), P.Stop(), P.Pin(InstanceKey("w", "1", "box"), 0.0), P.RequestPreview("w", 1, 3)]
    commands.append(P.UpdateProject(hand_project))
    inbox = queue.Queue()
    inbox.put(P.RequestPreview("w", every=1))
    events = _run(TrainingLoop(hand_project, _cfg(method="dii+dcr", steps=3, dii_warmup=1, dii_interval=1)), inbox)
    kinds = {type(e) for e in events}
    assert {P.StartedEvent, P.StepEvent, P.WeightsEvent, P.PreviewEvent, P.FinishedEvent} <= kinds
    for item in commands + events:
        assert not _holds_a_tensor(item), item
        back = pickle.loads(pickle.dumps(item))
        assert type(back) is type(item)
    weights = next(e for e in events if isinstance(e, P.WeightsEvent)).weights
    assert all(type(w.key) is InstanceKey and type(w.weight) is float for w in weights)


def test_a_preview_never_stops_training(hand_project, monkeypatch):
    from napari_hybridseg.training.preview import Previewer

    vol = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    project = Project([*hand_project, ImageAnnotations("v", vol)])
    inbox = queue.Queue()
    inbox.put(P.RequestPreview("v", z=10, every=1))  # a slice the volume does not have
    out = _run(TrainingLoop(project, _cfg(method="dii", steps=2)), inbox)
    assert not [e for e in out if isinstance(e, P.PreviewEvent)] and out[-1].step == 2

    def broken(self, step, nets):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Previewer, "event", broken)
    inbox.put(P.RequestPreview("v", z=1, every=1))
    out = _run(TrainingLoop(project, _cfg(method="dii", steps=2)), inbox)
    notices = [e for e in out if isinstance(e, P.NoticeEvent)]
    assert len(notices) == 2 and "out of memory" in notices[0].message and out[-1].step == 2


def test_volume_previews_scale_the_slice_like_the_volume(hand_project):
    from napari_hybridseg.inference import predict_image

    vol = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    vol[1] *= 30
    project = Project([*hand_project, ImageAnnotations("v", vol)])
    loop = TrainingLoop(project, _cfg(method="dcr", steps=1))
    inbox = queue.Queue()
    inbox.put(P.RequestPreview("v", z=1, every=1))
    (preview,) = [e for e in _run(loop, inbox) if isinstance(e, P.PreviewEvent)]
    expected = predict_image(loop.state.nets, vol, "zyx")
    assert preview.z == 1
    np.testing.assert_allclose(preview.probability, expected.probability[1], atol=1e-5)


def test_pins_given_to_a_resumed_run_win(tiny_project, tmp_path):
    project = Project.load(tiny_project)
    cfg = _cfg(method="dii", steps=2)
    first = TrainingLoop(project, cfg, tmp_path / "r", pins={InstanceKey("img002", "1", "box"): 0.0})
    _run(first)
    key = first.weights.records[0].key
    again = TrainingLoop(project, _cfg(method="dii", steps=3), tmp_path / "r", resume=True, pins={key: 0.25})
    pins = {w.key: (w.weight, w.pinned) for w in again.weights.table()}
    assert pins[key] == (0.25, True)
    assert again.weights.pins[InstanceKey("img002", "1", "box")] == 0.0


def test_fresh_run_folders_never_reuse_a_name(tmp_path):
    from napari_hybridseg.training.run_folder import fresh_run_folder

    a = fresh_run_folder(tmp_path / "runs", "20261126-120000")
    b = fresh_run_folder(tmp_path / "runs", "20261126-120000")
    assert a.name == "20261126-120000" and b.name == "20261126-120000-2" and a.is_dir() and b.is_dir()


def test_an_update_that_changes_nothing_leaves_the_run_as_it_was(hand_project):
    """The widget sends the annotations after edits and after opening a project; the same
    annotations again (a copy) must not restart the weights' optimiser or the schedule, or
    the run would depend on when napari's debounce fired."""
    import copy

    def train(update_at):
        loop = TrainingLoop(hand_project, _cfg(method="dii+dcr", steps=8, dii_warmup=1, dii_interval=1))
        inbox = queue.Queue()
        for e in (gen := loop.events(inbox)):
            if update_at is not None and isinstance(e, P.StepEvent) and e.step == update_at:
                inbox.put(P.UpdateProject(copy.deepcopy(hand_project)))
        assert isinstance(e, P.FinishedEvent)
        del gen
        return loop

    a, b = train(None), train(3)
    for net_a, net_b in zip(a.state.nets, b.state.nets, strict=True):
        for (name, x), y in zip(net_a.state_dict().items(), net_b.state_dict().values()):
            assert torch.equal(x, y), name
    assert [w.weight for w in a.weights.table()] == [w.weight for w in b.weights.table()]


def _ct_project(edited=False):
    """One CT volume (air at -1000 HU) with a mask; ``edited``: the structure drawn larger,
    so that the foreground statistics differ."""
    from napari_hybridseg.images import ImageMeta

    rng = np.random.default_rng(0)
    vol = rng.normal(40, 10, (4, 32, 32))
    vol[:, :, :10] = -1000  # air: Hounsfield units
    mask = np.zeros(vol.shape, np.uint8)
    mask[:, 10:20, 12:24] = 1
    vol[mask > 0] += 30
    if edited:
        mask[:, 20:26, 12:24] = 1
    meta = ImageMeta(spacing=(1.0, 1.0, 1.0), format="nii.gz")
    return Project([ImageAnnotations("a", vol.astype(np.int16), meta, strong=mask)])


def test_a_resumed_or_continued_ct_run_keeps_the_normalisation_it_was_trained_with(tmp_path):
    """Masks edited between runs move the CT foreground statistics; a resumed run and a
    model continued on the edited project normalise as the networks were trained."""
    from napari_hybridseg.modelfile import load_model

    first = TrainingLoop(_ct_project(), _cfg(method="strong-only", steps=4), run_dir=tmp_path / "run")
    _run(first)
    trained = first.task.intensity
    assert trained.scheme == "ct"
    assert TrainingLoop(_ct_project(edited=True), _cfg(method="strong-only")).task.intensity != trained
    resumed = TrainingLoop(
        _ct_project(edited=True), _cfg(method="strong-only", steps=6), run_dir=tmp_path / "run", resume=True
    )
    assert resumed.task.intensity == trained and resumed.state.step == 4
    model = tmp_path / "run" / "model.pt"
    continued = TrainingLoop(_ct_project(edited=True), _cfg(method="strong-only", steps=2), init_model=model)
    assert continued.task.intensity == load_model(model).task.intensity == trained
    _run(continued)
    # asking for another normalisation than the model's is refused in one line
    with pytest.raises(ConfigError, match=r"model\.pt: its networks were trained on ct intensities.*zscore"):
        TrainingLoop(_ct_project(), _cfg(method="strong-only", intensity="zscore"), init_model=model)


def test_a_ct_projects_masks_can_be_edited_while_it_trains():
    """The CT statistics come from the masks; a run keeps the normalisation it started
    with, so an edited mask reaches the run instead of being refused as another task."""
    loop = TrainingLoop(_ct_project(), _cfg(method="strong-only", steps=4))
    assert loop.task.intensity.scheme == "ct"
    edited = _ct_project(edited=True)
    inbox = queue.Queue()
    inbox.put(P.UpdateProject(edited))
    out = _run(loop, inbox)
    (update,) = [e for e in out if isinstance(e, P.AnnotationsUpdatedEvent)]
    assert update.problem is None
    assert loop.task.intensity == loop.tset.task.intensity  # the run's normalisation, kept
    assert (loop.tset.strong[0].target == (edited["a"].strong[0] > 0)).all()


def test_a_stop_before_the_first_step_saves_no_untrained_model(tiny_project, tmp_path):
    """Start, then Stop at once: no model of networks that never trained becomes the
    current one, and the end says that nothing was saved."""
    inbox = queue.Queue()
    inbox.put(P.Stop())
    out = _run(TrainingLoop(Project.load(tiny_project), _cfg(steps=50), tmp_path / "run"), inbox)
    assert out[-1] == P.FinishedEvent(0, None, True, out[-1].elapsed)
    assert not {"model.pt", "checkpoint.pt"} & {p.name for p in (tmp_path / "run").iterdir()}
    # a resumed run stopped before its first new step leaves the run as it was
    _run(TrainingLoop(Project.load(tiny_project), _cfg(steps=2), tmp_path / "run"))
    model = (tmp_path / "run" / "model.pt").read_bytes()
    inbox.put(P.Stop())
    out = _run(TrainingLoop(Project.load(tiny_project), _cfg(steps=9), tmp_path / "run", resume=True), inbox)
    assert (out[-1].step, out[-1].run_dir) == (2, None)
    assert (tmp_path / "run" / "model.pt").read_bytes() == model
