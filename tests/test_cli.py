"""The command line end to end on a tiny project, and every error path."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_hybridseg.cli import main
from napari_hybridseg.images import ImageMeta, read_image, write_image

TRAIN = ["--steps", "3", "--batch-size", "2", "--patch-size", "32", "--width", "4", "--depth", "2", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    assert (
        main(
            [
                "sample",
                str(tmp / "p"),
                "--n-images",
                "4",
                "--size",
                "48",
                "--strong-fraction",
                "0.25",
                "--truth",
                str(tmp / "truth"),
            ]
        )
        == 0
    )
    assert main(["train", str(tmp / "p"), "--out", str(tmp / "run"), "--method", "dii+dcr", *TRAIN]) == 0
    return tmp


def test_help_works():
    out = subprocess.run([sys.executable, "-m", "napari_hybridseg.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("train", "predict", "evaluate", "demo"):
        assert cmd in out.stdout


def test_train_writes_run_folder(trained):
    run = trained / "run"
    assert {p.name for p in run.iterdir()} >= {"model.pt", "config.json", "metrics.jsonl", "weights.csv"}
    header = (run / "weights.csv").read_text().splitlines()[0]
    assert header == "image,instance,kind,weight"
    assert json.loads((run / "config.json").read_text())["method"] == "dii+dcr"


def test_train_options_reach_the_config(trained, capsys):
    out = trained / "run_same"
    argv = ["train", str(trained / "p"), "--out", str(out), "--method", "dii", "--dii-box-target", "same", *TRAIN]
    assert main([*argv, "--box-target", "projection", "--granularity", "image", "--dii-lr", "0.25"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["method"], cfg["dii_box_target"], cfg["box_target"], cfg["granularity"], cfg["dii_lr"]) == (
        "dii",
        "same",
        "projection",
        "image",
        0.25,
    )
    assert "learning rate 0.25" in capsys.readouterr().err


def test_co_regularisation_options_reach_the_config_and_win_over_the_preset(tmp_path):
    from napari_hybridseg.cli import build_parser
    from napari_hybridseg.cli.train_options import config_from_args
    from napari_hybridseg.config import TrainConfig

    base = ["train", str(tmp_path), "--out", str(tmp_path / "r")]
    cfg = config_from_args(build_parser().parse_args([*base, "--lambda-cr", "0.1", "--cr-rampup", "0.3"]))
    assert (cfg.lambda_cr, cfg.cr_rampup) == (0.1, 0.3)
    default = config_from_args(build_parser().parse_args(base))
    assert (default.lambda_cr, default.cr_rampup) == (TrainConfig.lambda_cr, TrainConfig.cr_rampup)
    paper = config_from_args(build_parser().parse_args([*base, "--preset", "paper", "--lambda-cr", "0.1"]))
    assert (paper.lambda_cr, paper.granularity) == (0.1, "image")


def test_dii_own_quantile_option_reaches_the_config(tmp_path):
    from napari_hybridseg.cli import build_parser
    from napari_hybridseg.cli.train_options import config_from_args

    base = ["train", str(tmp_path), "--out", str(tmp_path / "r")]
    parse = build_parser().parse_args
    assert config_from_args(parse(base)).dii_own_quantile == 0.5
    assert config_from_args(parse([*base, "--dii-own-quantile", "0.7"])).dii_own_quantile == 0.7
    assert config_from_args(parse([*base, "--dii-own-quantile", "off"])).dii_own_quantile is None
    assert config_from_args(parse(base)).dii_box_evidence == "both"
    for how in ("mean", "quantile", "both"):
        assert config_from_args(parse([*base, "--dii-box-evidence", how])).dii_box_evidence == how


def test_resume_continues_to_more_steps(trained, capsys):
    assert (
        main(
            [
                "train",
                str(trained / "p"),
                "--out",
                str(trained / "run"),
                "--method",
                "dii+dcr",
                *TRAIN[:1],
                "5",
                *TRAIN[2:],
                "--resume",
            ]
        )
        == 0
    )
    steps = [json.loads(line)["step"] for line in (trained / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 5


def test_predict_tif_and_evaluate(trained, capsys):
    out = trained / "pred"
    rc = main(
        ["predict", str(trained / "run"), str(trained / "p" / "images"), "--out", str(out), "--prob", "--uncertainty"]
    )
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert "img000.tif" in names and "img000_prob.tif" in names and "img000_uncertainty.tif" in names
    labels, _ = read_image(out / "img001.tif")
    assert labels.shape == (48, 48) and labels.dtype.kind == "u"
    capsys.readouterr()
    for f in out.glob("*_*.tif"):
        f.unlink()
    assert main(["evaluate", str(out), str(trained / "truth")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["images"]) == {"img000", "img001", "img002", "img003"}
    assert 0.0 <= result["mean"]["dice"] <= 1.0


def test_predict_nifti_keeps_affine(trained, tmp_path):
    img, _ = read_image(trained / "p" / "images" / "img001.tif")
    vol = np.stack([img, img, img])
    affine = np.diag([0.5, 0.5, 3.0, 1.0])
    affine[:3, 3] = [7, 8, 9]
    write_image(tmp_path / "scan.nii.gz", vol, ImageMeta(affine=affine, format="nii.gz"))
    assert (
        main(
            ["predict", str(trained / "run" / "model.pt"), str(tmp_path / "scan.nii.gz"), "--out", str(tmp_path / "o")]
        )
        == 0
    )
    out = nib.load(tmp_path / "o" / "scan.nii.gz")
    assert out.shape == (48, 48, 3)
    assert np.allclose(out.affine, affine)


def test_error_paths(trained, tmp_path, capsys, one_line_error):
    run = str(trained / "run")
    one_line_error(main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]), "not found")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    one_line_error(main(["train", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]), "empty project")
    one_line_error(main(["train", str(trained / "p"), "--out", str(tmp_path / "r"), "--device", "tpu"]), "device")
    if not __import__("torch").cuda.is_available():
        one_line_error(
            main(["train", str(trained / "p"), "--out", str(tmp_path / "r"), "--device", "cuda"]),
            "CUDA is not available",
        )
    one_line_error(
        main(["train", str(trained / "p"), "--out", str(tmp_path / "fresh"), "--resume"]), "nothing to resume"
    )
    one_line_error(
        main(["predict", run, str(tmp_path / "missing.tif"), "--out", str(tmp_path / "o")]),
        "missing.tif",
        "not found",
    )
    (tmp_path / "broken.tif").write_bytes(b"II*\x00broken")
    one_line_error(main(["predict", run, str(tmp_path / "broken.tif"), "--out", str(tmp_path / "o")]), "broken.tif")
    (tmp_path / "foreign.pt").write_bytes(b"PK\x03\x04 not a model")
    tifffile.imwrite(tmp_path / "ok.tif", np.zeros((32, 32), np.uint8))
    one_line_error(
        main(["predict", str(tmp_path / "foreign.pt"), str(tmp_path / "ok.tif"), "--out", str(tmp_path / "o")]),
        "foreign.pt",
    )
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((32, 32, 3), np.uint8))
    one_line_error(
        main(["predict", run, str(tmp_path / "rgb.tif"), "--out", str(tmp_path / "o")]), "rgb.tif", "channel"
    )
    one_line_error(main(["evaluate", str(tmp_path / "nothing"), str(trained / "truth")]), "not found")


def test_strong_free_project_is_a_clear_error(tmp_path, capsys, one_line_error):
    root = tmp_path / "p"
    (root / "images").mkdir(parents=True)
    (root / "boxes").mkdir()
    tifffile.imwrite(root / "images" / "a.tif", np.zeros((32, 32), np.uint8))
    (root / "boxes" / "a.csv").write_text("id,y0,x0,y1,x1\n1,1,1,5,5\n")
    one_line_error(main(["train", str(root), "--out", str(tmp_path / "r"), *TRAIN]), "full mask")


def test_clipped_box_warning_is_one_line(tmp_path, capsys):
    root = tmp_path / "p"
    (root / "images").mkdir(parents=True)
    (root / "boxes").mkdir()
    (root / "strong").mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(root / "images" / "a.tif", rng.random((32, 32)).astype(np.float32))
    tifffile.imwrite(root / "images" / "b.tif", rng.random((32, 32)).astype(np.float32))
    tifffile.imwrite(root / "strong" / "a.tif", (rng.random((32, 32)) > 0.5).astype(np.uint8))
    (root / "boxes" / "b.csv").write_text("id,y0,x0,y1,x1\n1,20,20,40,40\n")
    assert main(["train", str(root), "--out", str(tmp_path / "r"), *TRAIN]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "was clipped" in line]
    assert warning == ["napari-hybridseg: warning: " + warning[0].split("warning: ", 1)[1]]
    assert "b.csv" in warning[0]


def test_several_classes_from_sample_to_evaluation(tmp_path, capsys):
    """A project that names two classes: trained, predicted to class-id maps with one
    probability file per class and a label table, and scored per class."""
    p, truth, run, out = tmp_path / "p", tmp_path / "truth", tmp_path / "run", tmp_path / "pred"
    sample = ["sample", str(p), "--n-images", "4", "--size", "48", "--strong-fraction", "0.25", "--classes", "2"]
    assert main([*sample, "--truth", str(truth)]) == 0
    settings = json.loads((p / "project.json").read_text())
    assert settings["classes"][1]["name"] == "size2"
    settings["classes"][1]["colour"] = "#102030"  # the user's colour travels with the model
    (p / "project.json").write_text(json.dumps(settings))
    assert main(["train", str(p), "--out", str(run), "--method", "dii+dcr", *TRAIN]) == 0
    from napari_hybridseg.modelfile import load_model

    task = load_model(run / "model.pt").task
    assert (task.n_classes, task.class_names) == (2, ("size1", "size2"))
    assert main(["predict", str(run), str(p / "images" / "img001.tif"), "--out", str(out), "--prob"]) == 0
    names = sorted(f.name for f in out.iterdir())
    assert names == ["img001.tif", "img001_prob_1-size1.tif", "img001_prob_2-size2.tif", "labels.ctbl", "labels.txt"]
    labels, _ = read_image(out / "img001.tif")
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    assert '"size2"' in (out / "labels.txt").read_text()
    assert "2 size2 16 32 48 255" in (out / "labels.ctbl").read_text().splitlines()
    capsys.readouterr()
    assert main(["evaluate", str(out), str(truth)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["classes"]) == {"size1", "size2"}
    gt, _ = read_image(truth / "img001.tif")
    for c, name in ((1, "size1"), (2, "size2")):
        p_c, t_c = labels == c, gt == c
        dice = 2 * (p_c & t_c).sum() / (p_c.sum() + t_c.sum())
        assert report["images"]["img001"][name]["dice"] == pytest.approx(dice, abs=1e-6)
        assert report["classes"][name]["dice"] == pytest.approx(dice, abs=1e-6)  # the one image
    assert report["mean"]["dice"] == pytest.approx(np.mean([report["classes"][n]["dice"] for n in ("size1", "size2")]))


def test_a_3d_network_from_the_command_line(tmp_path):
    """--network 3d on NIfTI volumes with 3 mm slices: the model pools in-plane first and
    predicts a volume back into NIfTI with its affine."""
    from napari_hybridseg.annotations import Box, ImageAnnotations, Project
    from napari_hybridseg.modelfile import load_model
    from napari_hybridseg.synthetic import synth_volume

    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    meta = ImageMeta(spacing=(3.0, 0.8, 0.8), affine=affine, format="nii.gz")
    vol_s, lab_s = synth_volume(rng, (8, 32, 32))
    vol_w, lab_w = synth_volume(rng, (8, 32, 32))
    ys, xs = np.nonzero(lab_w[4])
    weak = ImageAnnotations("w", vol_w, meta, boxes=[Box(1, ys.min(), xs.min(), ys.max() + 1, xs.max() + 1, z=4)])
    Project([ImageAnnotations("s", vol_s, meta, strong=lab_s), weak]).save(tmp_path / "p")
    run, out = tmp_path / "run", tmp_path / "pred"
    argv = ["train", str(tmp_path / "p"), "--out", str(run), "--network", "3d", "--patch-size-3d", "16"]
    assert main([*argv, "--steps", "2", "--batch-size", "2", "--width", "4", "--depth", "2", "--quiet"]) == 0
    assert load_model(run / "model.pt").task.pools == ((1, 2, 2), (2, 2, 2))
    assert main(["predict", str(run), str(tmp_path / "p" / "images" / "w.nii.gz"), "--out", str(out)]) == 0
    img = nib.load(out / "w.nii.gz")
    assert img.shape == (32, 32, 8)  # NIfTI order: x, y, z
    np.testing.assert_allclose(img.affine, affine)
