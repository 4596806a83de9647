"""The run folder's lock and its start: what a run leaves behind when the disk is full,
and what a new run keeps of the one it replaces."""

import errno
from pathlib import Path

import pytest

from napari_hybridseg.config import TrainConfig
from napari_hybridseg.training.run_folder import LOCK, RunFolder


def test_a_lock_that_cannot_be_written_leaves_no_file_behind(tmp_path, monkeypatch):
    """A full disk: the lock written aside is created, then its write fails."""
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(LOCK + "."):
            real(self, "")
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"x")
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        RunFolder(run).lock()
    monkeypatch.undo()
    assert sorted(p.name for p in run.iterdir()) == ["model.pt"]
    RunFolder(run).check_writable(resume=True)


def test_a_lock_file_left_aside_does_not_make_a_run_foreign(tmp_path):
    """A trainer killed while it took the lock leaves ``.lock.PID.HEX`` (or a stale lock
    moved aside); the folder is still the run's."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.pt", "checkpoint.pt", ".lock.123.0a1b2c3d", ".lock.stale.7.8"):
        (run / name).write_bytes(b"x")
    RunFolder(run).check_writable(resume=True)


def test_taking_the_lock_twice_is_one_hold(tmp_path):
    """The command line holds the folder before it reads the project; the loop's own
    start then finds it held by itself."""
    folder = RunFolder(tmp_path / "run")
    folder.lock()
    folder.prepare(TrainConfig(), 0, fresh=True)
    assert (tmp_path / "run" / LOCK).is_file()
    folder.unlock()
    assert not (tmp_path / "run" / LOCK).exists()


@pytest.mark.parametrize("fresh", [True, False])
def test_a_new_run_starts_without_the_files_of_the_run_it_replaces(tmp_path, fresh):
    run = tmp_path / "run"
    run.mkdir()
    old = ["checkpoint.pt", "model.pt", "weights.csv", "events.jsonl", "preview.npz", "config.json"]
    for name in old:
        (run / name).write_bytes(b"old")
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 1}\n')
    (run / "control.json").write_text('{"pause": true}\n')  # the follower's: written before the start
    (run / "notes.txt").write_text("mine")
    folder = RunFolder(run)
    folder.prepare(TrainConfig(), 0 if fresh else 10, fresh=fresh)
    folder.unlock()
    kept = {p.name for p in run.iterdir()}
    if fresh:
        assert kept == {"config.json", "metrics.jsonl", "control.json", "notes.txt"}
        assert (run / "metrics.jsonl").read_text() == ""
    else:
        assert kept == {*old, "metrics.jsonl", "control.json", "notes.txt"}
        assert (run / "metrics.jsonl").read_text() == '{"step": 10, "loss": 1}\n'
    assert (run / "config.json").read_bytes() != b"old"
