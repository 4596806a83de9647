"""Atomic writes keep what the user set up: file modes, and symlinks to shared files."""

import os
import stat

import pytest

from napari_hybridseg.atomic import atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_files_follow_the_umask(tmp_path, umask_022):
    atomic_write_text(tmp_path / "new.txt", "x")
    assert _mode(tmp_path / "new.txt") == 0o644


def test_an_existing_files_mode_is_kept(tmp_path, umask_022):
    path = tmp_path / "shared.csv"
    path.write_text("old")
    os.chmod(path, 0o664)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o664


def test_a_symlinked_file_is_written_through_the_link(tmp_path):
    target = tmp_path / "lab" / "mask.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "project" / "boxes" / "a.csv"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert not [p for p in link.parent.iterdir() if p.name.startswith(".")]  # no temporary left
