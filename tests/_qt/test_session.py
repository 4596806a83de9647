"""The GUI's session: state, snapshots, the GUI and the command line training the same model."""

import os

import numpy as np
import pytest
import torch

from napari_hybridseg import protocol as P
from napari_hybridseg._qt import layers as L
from napari_hybridseg._qt.session import Session, TrainingState
from napari_hybridseg._qt.widget import HybridSegWidget
from napari_hybridseg.cli import main
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.modelfile import load_model
from napari_hybridseg.synthetic import make_project

pytestmark = pytest.mark.gui
TIMEOUT = 120_000
SMALL = dict(batch_size=2, patch_size=32, width=4, depth=2, dii_warmup=1, dii_interval=2)


@pytest.mark.parametrize("n_classes", [1, 2])
def test_gui_and_cli_train_the_same_model(make_napari_viewer, qtbot, tmp_path, n_classes):
    """Same project, options and seed: the widget (live previews every step, annotations
    read from layers, training in a thread) and the command line write identical models,
    for one structure and for two classes (class ids of masks, boxes and strokes)."""
    root = tmp_path / "p"
    make_project(root, n_images=3, strong_fraction=0.34, shape=(48, 48), seed=5, n_classes=n_classes)
    viewer = make_napari_viewer()
    widget = HybridSegWidget(viewer)
    widget.open_project(root)
    widget._config = lambda steps=None: TrainConfig(steps=steps, **SMALL)
    widget.train.every.setValue(1)
    widget.annotate.image_combo.setCurrentText("img001")
    previews = []
    widget.session.event_received.connect(lambda e: isinstance(e, P.PreviewEvent) and previews.append(e))
    with qtbot.waitSignal(widget.finished, timeout=TIMEOUT) as blocker:
        assert widget.start_training(steps=5)
    gui = blocker.args[0]
    assert isinstance(gui, P.FinishedEvent) and len(previews) == 5
    if n_classes > 1:  # previews and the prediction layer show class ids
        assert previews[-1].classes is not None and previews[-1].classes.max() <= n_classes
        prediction = viewer.layers["img001 prediction"]
        assert prediction.data.max() <= n_classes
        classes = L.collect_project(viewer).classes
        assert prediction.colormap.map(np.array([2]))[0, :3] == pytest.approx(np.array(classes.rgb(2)) / 255)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # the GUI runner's thread count
    try:
        argv = ["--steps", "5", "--batch-size", "2", "--patch-size", "32", "--width", "4", "--depth", "2"]
        argv += ["--dii-warmup", "1", "--dii-interval", "2", "--quiet"]
        assert main(["train", str(root), "--out", str(tmp_path / "cli"), *argv]) == 0
    finally:
        torch.set_num_threads(threads)
    a, b = load_model(os.path.join(gui.run_dir, "model.pt")), load_model(tmp_path / "cli" / "model.pt")
    assert a.config == b.config
    for net_a, net_b in zip(a.nets, b.nets, strict=True):
        for (name, x), y in zip(net_a.state_dict().items(), net_b.state_dict().values()):
            assert torch.equal(x, y), name
    assert (tmp_path / "cli" / "weights.csv").read_text() == open(os.path.join(gui.run_dir, "weights.csv")).read()


def test_the_trainer_gets_a_snapshot_not_the_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((32, 32)).astype(np.float32), name="x")
    widget = HybridSegWidget(viewer)
    widget.create_layers()
    scribbles = viewer.layers["x scribbles"]
    scribbles.data[3, 3:9] = 2
    project = L.collect_project(viewer)
    scribbles.data[3, 3:9] = 5  # the user keeps painting in place
    assert (project["x"].scribbles[3, 3:9] == 2).all()
    assert not project["x"].scribbles.flags.writeable and not project["x"].image.flags.writeable
    assert L.collect_project(viewer)["x"].image is project["x"].image  # an unchanged image is not copied again


def test_session_states_and_pause(make_napari_viewer, qtbot, tiny_project):
    from napari_hybridseg.annotations import Project

    session = Session()
    states = []
    session.state_changed.connect(states.append)
    cfg = TrainConfig(method="dii", steps=100_000, **SMALL)
    session.start(Project.load(tiny_project), cfg, tiny_project.parent / "run")
    assert session.busy and session.state is TrainingState.STARTING
    qtbot.waitUntil(lambda: session.state is TrainingState.RUNNING, timeout=TIMEOUT)
    session.pause(True)
    qtbot.waitUntil(lambda: session.state is TrainingState.PAUSED, timeout=TIMEOUT)
    with pytest.raises(RuntimeError, match="already active"):
        session.start(Project.load(tiny_project), cfg, tiny_project.parent / "run2")
    with qtbot.waitSignal(session.finished, timeout=TIMEOUT) as blocker:
        session.stop()
    assert isinstance(blocker.args[0], P.FinishedEvent) and blocker.args[0].stopped
    assert states == [
        TrainingState.STARTING,
        TrainingState.RUNNING,
        TrainingState.PAUSED,
        TrainingState.STOPPING,
        TrainingState.IDLE,
    ]
    assert session.model is not None and session.model_path == tiny_project.parent / "run" / "model.pt"


def test_the_papers_settings_in_the_widget_are_the_cli_preset(make_napari_viewer, tmp_path):
    from napari_hybridseg.cli import build_parser
    from napari_hybridseg.cli.train_options import config_from_args

    widget = HybridSegWidget(make_napari_viewer())
    widget.train.method.setCurrentText("dcr")
    widget.train.paper.setChecked(True)
    assert widget.train.method.currentText() == "dii+dcr" and not widget.train.method.isEnabled()
    args = build_parser().parse_args(["train", str(tmp_path), "--out", str(tmp_path / "r"), "--preset", "paper"])
    args.steps = 37
    assert widget._config(37) == config_from_args(args)
    widget.train.paper.setChecked(False)
    assert widget.train.method.isEnabled() and widget._config(37).granularity == "object"


def test_the_widgets_co_regularisation_weight_is_the_clis_lambda_cr(make_napari_viewer, tmp_path):
    from napari_hybridseg.cli import build_parser
    from napari_hybridseg.cli.train_options import config_from_args

    widget = HybridSegWidget(make_napari_viewer())
    panel = widget.train
    panel.method.setCurrentText("dcr")
    args = build_parser().parse_args(["train", str(tmp_path), "--out", str(tmp_path / "r"), "--method", "dcr"])
    args.steps = 37
    # untouched, both leave the weight to the network (1 in 2D, 0.1 in 3D)
    assert panel.cr_weight.text() == "auto" and widget._config(37).lambda_cr is None
    assert widget._config(37) == config_from_args(args)
    panel.cr_weight.stepBy(1)  # one step up from auto: no co-regularisation at all
    assert widget._config(37).lambda_cr == 0.0
    panel.cr_weight.setValue(0.25)
    args.lambda_cr = 0.25
    assert widget._config(37) == config_from_args(args)
    panel.method.setCurrentText("dii")  # one network: nothing to weigh
    assert not panel.cr_weight.isEnabled()
    panel.method.setCurrentText("dii+dcr")
    assert panel.cr_weight.isEnabled()
    panel.paper.setChecked(True)  # the paper's weight, held while the preset is on
    assert panel.cr_weight.value() == 1.0 and not panel.cr_weight.isEnabled()
    assert widget._config(37).lambda_cr == 1.0
    panel.paper.setChecked(False)
    assert panel.cr_weight.isEnabled() and panel.box_check.isEnabled()


def test_the_widget_trains_with_project_jsons_intensity_as_the_cli_does(make_napari_viewer, tmp_path):
    import json

    from napari_hybridseg.annotations import Project
    from napari_hybridseg.task import task_for

    root = tmp_path / "p"
    make_project(root, n_images=2, strong_fraction=0.5, shape=(48, 48), seed=1)
    settings = json.loads((root / "project.json").read_text())
    (root / "project.json").write_text(json.dumps({**settings, "intensity": "zscore"}))
    widget = HybridSegWidget(make_napari_viewer())
    widget.open_project(root)
    from_layers = L.collect_project(widget.viewer, widget.project_root)
    assert task_for(from_layers).intensity == task_for(Project.load(root)).intensity
    assert task_for(from_layers).intensity.scheme == "zscore"
