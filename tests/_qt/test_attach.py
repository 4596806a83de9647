"""napari follows a run that trains in another process, through the run folder only."""

import subprocess
import sys

import numpy as np
import pytest

from napari_hybridseg import protocol as P
from napari_hybridseg._qt.widget import HybridSegWidget
from napari_hybridseg.synthetic import make_project
from napari_hybridseg.training.follow import EventReader, commands_between, default_control, read_control

pytestmark = pytest.mark.gui
TIMEOUT = 180_000


def test_attach_to_a_run_then_edit_pin_and_stop_it(make_napari_viewer, qtbot, tmp_path):
    root = tmp_path / "p"
    make_project(root, n_images=3, strong_fraction=0.34, shape=(64, 64), seed=4, weak="boxes")
    run = root / "runs" / "server"
    cmd = [sys.executable, "-m", "napari_hybridseg", "train", str(root), "--out", str(run), "--follow-project"]
    cmd += ["--steps", "100000", "--batch-size", "2", "--patch-size", "32", "--width", "4", "--depth", "2"]
    cmd += ["--method", "dii", "--dii-warmup", "1", "--dii-interval", "1", "--quiet"]
    trainer = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        qtbot.waitUntil(lambda: (run / "events.jsonl").exists(), timeout=TIMEOUT)
        viewer = make_napari_viewer()
        widget = HybridSegWidget(viewer)
        widget.open_project(root)
        widget.annotate.image_combo.setCurrentText("img001")
        widget.train.every.setValue(1)
        previews = []
        widget.session.event_received.connect(lambda e: isinstance(e, P.PreviewEvent) and previews.append(e.image))
        widget.attach_run(run)
        qtbot.waitUntil(lambda: widget.train.progress.value() > 2 and bool(widget.live.weights), timeout=TIMEOUT)
        qtbot.waitUntil(lambda: "img001" in previews, timeout=TIMEOUT)  # previews of the image in view
        # an edit saved into the project (autosave) reaches the trainer: a new box gets a weight
        boxes = viewer.layers["img001 boxes"]
        n = len(boxes.data)
        boxes.add_rectangles(np.array([[40, 40], [50, 52]]))
        new_id = str(int(boxes.features["id"][n])) if len(boxes.features["id"]) > n else str(n + 1)
        qtbot.waitUntil(
            lambda: P.InstanceKey("img001", new_id, "box") in {w.key for w in widget.live.weights}, timeout=TIMEOUT
        )
        # a pin reaches it too
        widget.pin(P.InstanceKey("img001", new_id, "box"), 0.0)
        qtbot.waitUntil(lambda: read_control(run)["pins"] == [["img001", new_id, "box", 0.0]], timeout=TIMEOUT)
        # stop from napari ends the run cleanly
        with qtbot.waitSignal(widget.finished, timeout=TIMEOUT) as blocker:
            widget.stop_training()
        event = blocker.args[0]
        assert isinstance(event, P.FinishedEvent) and event.stopped
        assert trainer.wait(60) == 0, trainer.stderr.read()
        assert (run / "model.pt").is_file() and widget.session.model_path == run / "model.pt"
    finally:
        if trainer.poll() is None:
            trainer.kill()


def test_control_states_become_commands():
    old = default_control()
    new = {**old, "pause": True, "pins": [["a", "1", "box", 1.0]], "preview": ["a", None, 5], "stop": True}
    commands = commands_between(old, new)
    assert commands == [
        P.Pause(),
        P.Pin(P.InstanceKey("a", "1", "box"), 1.0),
        P.RequestPreview("a", None, 5),
        P.Stop(),
    ]
    assert commands_between(new, {**new, "pins": []}) == [P.Pin(P.InstanceKey("a", "1", "box"), None)]


def test_half_written_or_malformed_files_are_skipped(tmp_path):
    (tmp_path / "control.json").write_text('{"stop": tru')
    with pytest.warns(UserWarning, match="control.json: ignored"):
        assert read_control(tmp_path) is None
    (tmp_path / "events.jsonl").write_text(
        '{"type": "StepEvent", "step": 1, "total": 2, "losses": {}, "elapsed": 0, "lr": 0}\n'
        '{"type": "Nonsense"}\n{"type": "StepEv'
    )
    reader = EventReader(tmp_path)
    with pytest.warns(UserWarning, match="a line was skipped"):
        events = reader.read()
    assert [type(e).__name__ for e in events] == ["StepEvent"]
    with open(tmp_path / "events.jsonl", "a") as fh:
        fh.write('ent", "step": 2, "total": 2, "losses": {}, "elapsed": 0, "lr": 0}\n')
    assert [e.step for e in reader.read()] == [2]


def test_a_resumed_run_is_followed_past_its_earlier_end(tmp_path):
    import json
    import os
    import socket

    from napari_hybridseg.training.follow import EventLog
    from napari_hybridseg.training.runners import FollowRunner

    log = EventLog(tmp_path)
    log.write(P.StartedEvent("cpu", 4, 0, 0, {}))
    log.write(P.FinishedEvent(4, str(tmp_path), False, 1.0))
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    log.write(P.StartedEvent("cpu", 8, 4, 0, {}))
    log.write(P.StepEvent(5, 8, {"total": 1.0}, 1.0, 0.1))
    runner = FollowRunner(tmp_path)
    events = runner.poll()
    assert [type(e).__name__ for e in events][-1] == "StepEvent" and not runner.done


def test_the_follower_starts_from_a_clean_control_state(tmp_path):
    import queue

    from napari_hybridseg.training.follow import Follower, write_control

    root = tmp_path / "p"
    make_project(root, n_images=2, strong_fraction=0.5, shape=(32, 32), seed=1)
    write_control(tmp_path / "run", {**default_control(), "stop": True})  # left by an earlier run
    inbox = queue.SimpleQueue()
    follower = Follower(root, tmp_path / "run", inbox)
    assert read_control(tmp_path / "run") == default_control() and inbox.empty()
    write_control(tmp_path / "run", {**default_control(), "stop": True})
    follower.check()
    assert inbox.get_nowait() == P.Stop()


def test_a_run_resuming_but_not_yet_started_is_not_taken_for_ended(tmp_path):
    """Attached while a resumed trainer still loads: the last run's end is in the log and
    the new trainer holds the lock without a word yet; the follower waits for it."""
    import json
    import os
    import socket

    from napari_hybridseg.training.follow import EventLog
    from napari_hybridseg.training.runners import FollowRunner

    log = EventLog(tmp_path)
    log.write(P.StartedEvent("cpu", 4, 0, 0, {}))
    log.write(P.FinishedEvent(4, str(tmp_path), False, 1.0))
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    runner = FollowRunner(tmp_path)
    runner.poll()
    assert not runner.done
    log.write(P.StartedEvent("cpu", 8, 4, 0, {}))
    log.write(P.FinishedEvent(8, str(tmp_path), False, 2.0))
    (tmp_path / ".lock").unlink()  # the trainer ends: its end is the run's
    runner.poll()
    assert runner.done and runner._final.step == 8
