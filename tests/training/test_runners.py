"""Runners: a child process started from a user's own script."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    # a user's script, as people write them: no `if __name__ == "__main__":` guard
    import sys, time
    from pathlib import Path

    with open(sys.argv[1], "a") as fh:
        fh.write("ran\\n")

    import numpy as np
    from napari_hybridseg.annotations import Box, ImageAnnotations, Project
    from napari_hybridseg.config import TrainConfig
    from napari_hybridseg.protocol import FINAL_EVENTS
    from napari_hybridseg.synthetic import synth_image
    from napari_hybridseg.training.loop import TrainingSpec
    from napari_hybridseg.training.runners import ProcessRunner

    rng = np.random.default_rng(1)
    img_s, lab_s = synth_image(rng, (64, 64), n_objects=4)
    img_w, _ = synth_image(rng, (64, 64), n_objects=4)
    weak = ImageAnnotations("w", img_w, boxes=[Box(1, 4, 4, 20, 20)])
    project = Project([ImageAnnotations("s", img_s, strong=lab_s), weak])
    cfg = TrainConfig(steps=2, batch_size=2, patch_size=32, width=4, depth=2)
    runner = ProcessRunner(TrainingSpec(project, cfg, sys.argv[2]), threads=1)
    runner.start()
    events = []
    deadline = time.monotonic() + 120
    while not runner.done and time.monotonic() < deadline:
        events += runner.poll()
        time.sleep(0.05)
    print(type(events[-1]).__name__, getattr(events[-1], "message", ""))
    """
)


def test_a_child_process_does_not_run_the_users_script_again(tmp_path):
    script = tmp_path / "my_training.py"
    script.write_text(SCRIPT)
    log = tmp_path / "log.txt"
    out = subprocess.run(
        [sys.executable, str(script), str(log), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert log.read_text() == "ran\n", out.stderr[-2000:]
    assert out.stdout.startswith("FinishedEvent"), out.stdout + out.stderr[-2000:]


def _run_to_end(runner, seconds=120):
    import time

    events, deadline = [], time.monotonic() + seconds
    while not runner.done and time.monotonic() < deadline:
        events += runner.poll()
        time.sleep(0.05)
    return events


def test_a_process_started_ahead_trains_the_next_run_with_its_settings(hand_project, tmp_path):
    from napari_hybridseg.config import TrainConfig
    from napari_hybridseg.protocol import FinishedEvent
    from napari_hybridseg.training.loop import TrainingSpec
    from napari_hybridseg.training.runners import ProcessRunner, process

    cfg = TrainConfig(steps=2, batch_size=2, patch_size=32, width=4, depth=2)
    process.start_spare(threads=1)
    ahead = process._spare.process
    runner = ProcessRunner(TrainingSpec(hand_project, cfg, str(tmp_path / "a")), threads=1)
    runner.start()
    assert runner.pid == ahead.pid and process._spare is None
    assert isinstance(_run_to_end(runner)[-1], FinishedEvent)
    # one started for other settings is not used: it ends, and the run gets its own
    process.start_spare(threads=2)
    other = process._spare.process
    runner = ProcessRunner(TrainingSpec(hand_project, cfg, str(tmp_path / "b")), threads=1)
    runner.start()
    assert runner.pid != other.pid
    other.join(30)
    assert not other.is_alive()
    assert isinstance(_run_to_end(runner)[-1], FinishedEvent)


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from napari_hybridseg.annotations import ImageAnnotations, Project
    from napari_hybridseg.config import TrainConfig
    from napari_hybridseg.protocol import UpdateProject
    from napari_hybridseg.synthetic import synth_image
    from napari_hybridseg.training.loop import TrainingSpec
    from napari_hybridseg.training.runners import ProcessRunner

    if __name__ == "__main__":
        img, lab = synth_image(np.random.default_rng(1), (64, 64), n_objects=4)
        project = Project([ImageAnnotations("s", img, strong=lab)])
        cfg = TrainConfig(steps=1, batch_size=2, patch_size=32, width=4, depth=2)
        runner = ProcessRunner(TrainingSpec(project, cfg, sys.argv[1]), threads=1)
        runner.start()
        while not runner.done:
            runner.poll()
            time.sleep(0.05)
        big = np.zeros((1000, 1000), np.float32)  # more than a pipe holds: never read by anyone
        runner.send(UpdateProject(Project([ImageAnnotations("s", big, strong=big.astype(np.uint8))])))
        print("done", flush=True)
    """
)


def test_a_command_sent_as_the_run_ends_does_not_keep_python_from_exiting(tmp_path):
    script = tmp_path / "edit_at_the_end.py"
    script.write_text(EXIT_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-2000:]
