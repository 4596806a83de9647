"""The command line never loses what the user made: outputs, run folders, interrupted and
diverged runs, and one-line errors for bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch

from napari_hybridseg.cli import main

TINY = ["--batch-size", "2", "--patch-size", "32", "--width", "4", "--depth", "2", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("safety")
    assert main(["sample", str(tmp / "p"), "--n-images", "3", "--size", "48", "--strong-fraction", "0.34"]) == 0
    assert main(["train", str(tmp / "p"), "--out", str(tmp / "run"), "--steps", "2", *TINY]) == 0
    return tmp


# -- predict never overwrites the user's files --------------------------------------------
@pytest.mark.parametrize("folder", ["images", "strong", "scribbles", "boxes"])
def test_predict_refuses_to_write_into_a_projects_annotations(run, capsys, folder, one_line_error):
    before = {p: p.read_bytes() for p in (run / "p").rglob("*") if p.is_file()}
    rc = main(["predict", str(run / "run"), str(run / "p" / "images"), "--out", str(run / "p" / folder)])
    one_line_error(rc, folder, "project")
    assert before == {p: p.read_bytes() for p in (run / "p").rglob("*") if p.is_file()}


def test_predict_refuses_an_output_that_is_an_input(run, tmp_path, capsys, one_line_error):
    folder = tmp_path / "imgs"
    folder.mkdir()
    tifffile.imwrite(folder / "x.tif", np.zeros((32, 32), np.uint8))
    one_line_error(main(["predict", str(run / "run"), str(folder), "--out", str(folder)]), "imgs", "input")
    assert sorted(p.name for p in folder.iterdir()) == ["x.tif"]


@pytest.mark.parametrize("names, extra", [(["a.tif", "a.png"], []), (["x.tif", "x_prob.tif"], ["--prob"])])
def test_inputs_whose_outputs_collide_are_named(run, tmp_path, capsys, names, extra, one_line_error):
    folder = tmp_path / "in"
    folder.mkdir()
    for n in names:
        (tifffile.imwrite if n.endswith(".tif") else _png)(folder / n, np.zeros((32, 32), np.uint8))
    rc = main(["predict", str(run / "run"), str(folder), "--out", str(tmp_path / "o"), *extra])
    one_line_error(rc, names[0], names[1])
    assert not (tmp_path / "o").exists()


def _png(path, arr):
    from skimage.io import imsave

    imsave(path, arr, check_contrast=False)


# -- train never replaces a folder it does not own -------------------------------------------
def test_train_refuses_a_folder_of_other_files(run, tmp_path, capsys, one_line_error):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.docx").write_text("years of work")
    (out / "metrics.jsonl").write_text('{"mine": 1}\n')
    rc = main(["train", str(run / "p"), "--out", str(out), "--steps", "2", *TINY])
    one_line_error(rc, "thesis", "--force")
    assert (out / "metrics.jsonl").read_text() == '{"mine": 1}\n' and sorted(p.name for p in out.iterdir()) == [
        "chapter1.docx",
        "metrics.jsonl",
    ]
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "2", "--force", *TINY]) == 0
    assert (out / "chapter1.docx").exists() and (out / "model.pt").exists()


def test_train_refuses_to_replace_a_finished_run_without_resume_or_force(run, capsys, one_line_error):
    before = (run / "run" / "model.pt").read_bytes()
    one_line_error(main(["train", str(run / "p"), "--out", str(run / "run"), "--steps", "2", *TINY]), "--resume")
    assert (run / "run" / "model.pt").read_bytes() == before


def test_sample_refuses_to_write_truth_over_user_files(tmp_path, capsys, one_line_error):
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "mine.tif").write_bytes(b"x")
    rc = main(["sample", str(tmp_path / "p"), "--n-images", "2", "--size", "32", "--truth", str(tmp_path / "truth")])
    one_line_error(rc, "truth", "not empty")
    assert not (tmp_path / "p").exists()


def test_two_trainings_cannot_share_a_run_folder(run, tmp_path, capsys, one_line_error):
    out = tmp_path / "busy"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    rc = main(["train", str(run / "p"), "--out", str(out), "--steps", "2", *TINY])
    one_line_error(rc, "in use", str(os.getpid()))


def test_a_stale_lock_is_taken_over_with_a_warning(run, tmp_path, capsys):
    out = tmp_path / "stale"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "2", *TINY]) == 0
    assert "stale lock" in capsys.readouterr().err and not (out / ".lock").exists()


# -- runs that end badly keep what they had -------------------------------------------------
def test_a_project_without_weak_annotations_trains_the_default_method(tmp_path, capsys):
    root = tmp_path / "p"
    assert main(["sample", str(root), "--n-images", "2", "--size", "48", "--strong-fraction", "1.0"]) == 0
    rc = main(["train", str(root), "--out", str(tmp_path / "r"), "--steps", "3", "--dii-warmup", "1", *TINY])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.count("no weak annotations") == 1 and (tmp_path / "r" / "model.pt").exists()


def test_a_failure_claims_a_checkpoint_only_when_there_is_one(run, tmp_path, capsys, monkeypatch, one_line_error):
    from napari_hybridseg.training import TrainingLoop

    def boom(self):
        raise RuntimeError("simulated")

    monkeypatch.setattr(TrainingLoop, "train_step", boom)
    last = one_line_error(main(["train", str(run / "p"), "--out", str(tmp_path / "r"), "--steps", "5", *TINY]))
    assert "simulated" in last and "checkpoint" not in last


def test_a_diverged_run_stops_with_the_step_and_keeps_the_last_finite_model(run, tmp_path, capsys, one_line_error):
    out = tmp_path / "r"
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "2", *TINY]) == 0
    good = (out / "model.pt").read_bytes()
    rc = main(["train", str(run / "p"), "--out", str(out), "--steps", "40", "--resume", "--lr", "1e30", *TINY])
    one_line_error(rc, "diverged at step")
    assert (out / "model.pt").read_bytes() == good
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} written into metrics.jsonl"))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for net in state["nets"] for t in net.values() if t.is_floating_point())


def test_ctrl_c_saves_a_checkpoint_before_exiting(run, tmp_path):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "napari_hybridseg", "train", str(run / "p"), "--out", str(out), "--steps", "100000"]
    proc = subprocess.Popen([*cmd, *TINY], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "Traceback" not in err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] >= 10 and (out / "model.pt").exists()


# -- bad input is a one-line error ----------------------------------------------------------
@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: tifffile.imwrite(p, np.full((32, 32), np.nan, np.float32)), "NaN"),
        (lambda p: tifffile.imwrite(p, np.ones((32, 32), np.complex64)), "complex"),
        (lambda p: tifffile.imwrite(p, np.zeros((0, 32), np.uint8)), "empty"),
        (lambda p: tifffile.imwrite(p, np.zeros((2, 3, 32, 32), np.uint8)), "4D"),
    ],
)
def test_predict_says_what_is_wrong_with_an_input(run, tmp_path, capsys, make, needle, one_line_error):
    path = tmp_path / "bad.tif"
    make(path)
    one_line_error(main(["predict", str(run / "run"), str(path), "--out", str(tmp_path / "o")]), "bad.tif", needle)


@pytest.mark.parametrize(
    "option, value",
    [
        ("--width", "100000"),
        ("--patch-size", "65536"),
        ("--batch-size", "1000000"),
        ("--depth", "60"),
        ("--steps", "0"),
        ("--lr", "nan"),
    ],
)
def test_absurd_options_are_refused_in_one_line(run, tmp_path, capsys, option, value, one_line_error):
    rc = main(["train", str(run / "p"), "--out", str(tmp_path / "r"), *TINY, option, value])
    one_line_error(rc, option.lstrip("-").replace("-", "_"))
    assert not (tmp_path / "r").exists()


def test_predict_never_writes_over_an_input_image(run, tmp_path, capsys, one_line_error):
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "x.tif", np.zeros((32, 32), np.uint8))
    before = (folder / "x.tif").read_bytes()
    one_line_error(main(["predict", str(run / "run"), str(folder / "x.tif"), "--out", str(folder)]), "x.tif", "input")
    assert (folder / "x.tif").read_bytes() == before


def test_predict_never_writes_over_a_file_beside_an_input(run, tmp_path, capsys, one_line_error):
    """``a.png``'s mask is ``a.tif``: in the input's own folder it would replace the user's file."""
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "a.png", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(folder / "a.tif", np.full((20, 20), 7, np.uint16))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    one_line_error(main(["predict", str(run / "run"), str(folder / "a.png"), "--out", str(folder)]), "a.png", "input")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_followed_run_can_be_resumed(run, tmp_path):
    out = tmp_path / "r"
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "2", "--follow-project", *TINY]) == 0
    assert {"events.jsonl", "control.json"} <= {p.name for p in out.iterdir()}
    assert (
        main(["train", str(run / "p"), "--out", str(out), "--steps", "3", "--resume", "--follow-project", *TINY]) == 0
    )


def test_a_resumed_followed_run_tells_napari_the_pins_it_kept(run, tmp_path):
    """The pins a checkpoint holds stay in force on resume; control.json starts with them,
    so that napari shows them and can release them."""
    out = tmp_path / "r"
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "2", "--follow-project", *TINY]) == 0
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    image, instance, kind = json.loads(checkpoint["instances"])[0][:3]
    checkpoint["pins"] = json.dumps([[image, instance, kind, 0.0]])
    torch.save(checkpoint, out / "checkpoint.pt")
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "3", "--resume", "--follow-project"]) == 0
    assert json.loads((out / "control.json").read_text())["pins"] == [[image, instance, kind, 0.0]]


def test_resume_keeps_the_runs_options_and_changes_only_those_given(run, tmp_path):
    """``--resume`` with only ``--steps`` continued under the default options: a run of
    ``--preset paper`` lost its one weight per image (every weight restarted at 1)."""
    out = tmp_path / "r"
    extra = ["--dii-warmup", "1", "--dii-interval", "1"]
    assert main(["train", str(run / "p"), "--out", str(out), "--preset", "paper", "--steps", "3", *extra, *TINY]) == 0
    weights = (out / "weights.csv").read_text()
    assert (
        main(["train", str(run / "p"), "--out", str(out), "--steps", "4", "--lr", "0.001", "--resume", "--quiet"]) == 0
    )
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["granularity"], cfg["predict_with"], cfg["dii_lr"]) == ("image", "first", 0.1)
    assert (cfg["width"], cfg["steps"], cfg["lr"]) == (4, 4, 0.001)
    keys = [line.split(",")[:2] for line in weights.splitlines()]
    assert [line.split(",")[:2] for line in (out / "weights.csv").read_text().splitlines()] == keys


# -- a run folder in use, replaced or resumed -----------------------------------------------
def test_a_refused_trainer_leaves_the_live_runs_control_alone(run, tmp_path, capsys, one_line_error):
    """The same ``--follow-project`` command started twice: the second is refused before it
    touches the live run's pause and pins."""
    from napari_hybridseg.training.follow import write_control

    out = tmp_path / "r"
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "2", "--follow-project", *TINY]) == 0
    control = {"stop": False, "pause": True, "pins": [["img001", "1", "box", 0.0]], "preview": None}
    write_control(out, control)
    (out / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    rc = main(["train", str(run / "p"), "--out", str(out), "--resume", "--steps", "3", "--follow-project", *TINY])
    one_line_error(rc, "in use")
    assert json.loads((out / "control.json").read_text()) == control


def test_a_forced_run_never_resumes_or_leaves_the_run_it_replaced(run, tmp_path, capsys, monkeypatch, one_line_error):
    """``--force`` cut short before its first checkpoint: no old model beside its options,
    and ``--resume`` has nothing to continue (not the old run)."""
    from napari_hybridseg.training import TrainingLoop

    out = tmp_path / "r"
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "2", "--follow-project", *TINY]) == 0

    def killed(self):
        raise RuntimeError("killed")

    monkeypatch.setattr(TrainingLoop, "train_step", killed)
    one_line_error(main(["train", str(run / "p"), "--out", str(out), "--steps", "50", "--force", *TINY]), "killed")
    monkeypatch.undo()
    assert {"config.json", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    assert not {"checkpoint.pt", "model.pt", "weights.csv", "events.jsonl"} & {p.name for p in out.iterdir()}
    one_line_error(main(["train", str(run / "p"), "--out", str(out), "--resume", *TINY]), "nothing to resume")


def test_resume_refuses_another_intensity_than_the_runs(run, tmp_path, capsys, one_line_error):
    out = tmp_path / "r"
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "2", *TINY]) == 0
    before = (out / "config.json").read_text()
    rc = main(["train", str(run / "p"), "--out", str(out), "--steps", "3", "--resume", "--intensity", "zscore", *TINY])
    one_line_error(rc, "checkpoint.pt", "percentile", "zscore")
    assert (out / "config.json").read_text() == before and not (out / ".lock").exists()
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "3", "--resume", "--quiet"]) == 0


@pytest.mark.parametrize("damage", ["task", "step"])
def test_a_checkpoint_with_a_number_too_large_is_a_one_line_error(run, tmp_path, capsys, damage, one_line_error):
    out = tmp_path / "r"
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "2", *TINY]) == 0
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    if damage == "task":
        checkpoint["task"] = checkpoint["task"].replace('"n_classes": 1', '"n_classes": 1e400')
    else:
        checkpoint["step"] = float("inf")
    torch.save(checkpoint, out / "checkpoint.pt")
    rc = main(["train", str(run / "p"), "--out", str(out), "--steps", "3", "--resume", *TINY])
    one_line_error(rc, "checkpoint.pt")


def test_an_unreadable_checkpoint_is_named_once(tmp_path, capsys, one_line_error):
    out = tmp_path / "r"
    out.mkdir()
    (out / "checkpoint.pt").write_text("not json")
    last = one_line_error(main(["train", str(tmp_path / "p"), "--out", str(out), "--resume", *TINY]), "checkpoint.pt")
    assert last.count("checkpoint.pt") == 1


def test_an_image_given_as_a_model_is_called_what_it_is(run, tmp_path, capsys, one_line_error):
    image = next((run / "p" / "images").iterdir())
    rc = main(
        ["train", str(run / "p"), "--out", str(tmp_path / "r"), "--steps", "2", "--init-model", str(image), *TINY]
    )
    last = one_line_error(rc, image.name, "not a napari-hybridseg model")
    assert "weights_only" not in last


# -- a bioimage.io package is named in its errors and never read into memory -----------------
def _package(path, attachment: bytes | None = None, size: int = 0):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("rdf.yaml", "config:\n  napari-hybridseg: {}\n")
        with zf.open("napari-hybridseg-model.pt", "w", force_zip64=True) as fh:
            fh.write(attachment or b"")
            for _ in range(size >> 20):
                fh.write(bytes(1 << 20))
    return path


def test_a_damaged_package_is_named_not_its_temporary_copy(run, tmp_path):
    from napari_hybridseg.errors import ModelFileError
    from napari_hybridseg.modelfile import load_model

    good = (run / "run" / "model.pt").read_bytes()
    package = _package(tmp_path / "my_model.zip", good[: len(good) // 2])
    with pytest.raises(ModelFileError) as caught:
        load_model(package)
    message = str(caught.value)
    assert message.startswith(f"{package}: ") and "\n" not in message
    assert "my_model.zip" in message and message.count("napari-hybridseg-model.pt") == 1


def test_a_package_is_copied_out_in_pieces(tmp_path):
    """A small zip can hold a large attachment of zeros: it is streamed, never held whole."""
    import tracemalloc

    from napari_hybridseg.errors import ModelFileError
    from napari_hybridseg.modelfile import load_model

    package = _package(tmp_path / "zeros.zip", size=64 << 20)
    assert package.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="zeros.zip"):
            load_model(package)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_a_package_declaring_a_model_too_large_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import zipfile

    from napari_hybridseg.errors import ModelFileError
    from napari_hybridseg.modelfile import load_model

    package = _package(tmp_path / "huge.zip", size=2 << 20)
    real_open = zipfile.ZipFile.open

    def unread(self, name, *args, **kwargs):
        assert getattr(name, "filename", name) != "napari-hybridseg-model.pt", "the attachment was read"
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr("napari_hybridseg.modelfile.MAX_MODEL_BYTES", 1 << 20, raising=False)
    monkeypatch.setattr(zipfile.ZipFile, "open", unread)
    with pytest.raises(ModelFileError, match=r"huge\.zip: .*larger than"):
        load_model(package)


def test_a_run_that_cannot_start_leaves_no_folder(run, tmp_path, capsys, one_line_error):
    rc = main(["train", str(run / "p"), "--out", str(tmp_path / "r"), "--init-model", str(tmp_path / "none.pt"), *TINY])
    one_line_error(rc, "none.pt")
    assert not (tmp_path / "r").exists()


def test_a_followed_run_stopped_before_its_first_step_says_nothing_was_saved(run, tmp_path, capsys, monkeypatch):
    """napari's Stop reaches the trainer before its first step."""
    from napari_hybridseg import protocol as P
    from napari_hybridseg.training.follow import Follower

    real = Follower.__init__

    def stop_at_once(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.inbox.put(P.Stop())

    monkeypatch.setattr(Follower, "__init__", stop_at_once)
    out = tmp_path / "r"
    assert main(["train", str(run / "p"), "--out", str(out), "--steps", "50", "--follow-project", *TINY]) == 0
    assert "before the first step" in capsys.readouterr().err and not (out / "model.pt").exists()
