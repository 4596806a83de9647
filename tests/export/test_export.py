"""Sharing models: bioimage.io packages pass bioimage.io's own model test, ONNX matches our
prediction, and packages we exported are read back (others refused)."""

import json
import zipfile

import numpy as np
import pytest
import torch

from napari_hybridseg.cli import main
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.errors import ModelFileError
from napari_hybridseg.export import export_model
from napari_hybridseg.export.network import exported_network
from napari_hybridseg.intensity import Intensity
from napari_hybridseg.modelfile import LoadedModel, load_model
from napari_hybridseg.networks import create_model
from napari_hybridseg.task import Task

TINY = ["--steps", "3", "--batch-size", "2", "--patch-size", "32", "--width", "4", "--depth", "2", "--quiet"]


def _model(task: Task, n_nets: int = 2) -> LoadedModel:
    nets = [create_model(task, 2, 4, seed=s).eval() for s in range(n_nets)]
    return LoadedModel(nets, TrainConfig(depth=2, width=4), task)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    assert main(["sample", str(tmp / "p"), "--n-images", "3", "--size", "64", "--strong-fraction", "0.34"]) == 0
    assert main(["train", str(tmp / "p"), "--out", str(tmp / "run"), *TINY]) == 0
    return tmp


def _bioimageio_test(path):
    core = pytest.importorskip("bioimageio.core", reason="bioimageio.core is not installed (the testing extra)")
    summary = core.test_model(path)
    errors = [f"{d.name}: {e.loc}: {e.msg}" for d in summary.details for e in d.errors]
    assert summary.status == "passed", errors


@pytest.mark.filterwarnings("ignore")
def test_a_trained_run_exports_a_package_that_bioimageio_validates(run, tmp_path):
    out = tmp_path / "model.zip"
    rc = main(
        ["export-model", str(run / "run"), "--out", str(out), "--sample", str(run / "p" / "images" / "img001.tif")]
    )
    assert rc == 0
    names = set(zipfile.ZipFile(out).namelist())
    assert {"rdf.yaml", "weights.pt", "test_input.npy", "test_output.npy", "README.md"} <= names
    _bioimageio_test(out)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    "task",
    [
        Task(3, 3, 2),
        Task(1, 1, 3),
        Task(1, 2, 3, intensity=Intensity("zscore")),
        Task(1, 1, 2, intensity=Intensity("ct", ((400.0, 150.0, 100.0, 700.0),))),
    ],
    ids=["rgb-3-classes", "3d", "mr-zscore", "ct"],
)
def test_packages_of_other_tasks_validate_too(tmp_path, task):
    """bioimage.io's own test applies the declared preprocessing to the test input and
    compares with the output of our inference path: the declaration is exact."""
    _bioimageio_test(export_model(_model(task), tmp_path / "m.zip", "bioimageio"))


def test_onnx_matches_our_prediction(run, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the onnx extra)")
    assert main(["export-model", str(run / "run"), "--out", str(tmp_path / "m.onnx")]) == 0
    model = load_model(run / "run")
    x = np.random.default_rng(1).random((2, 1, 96, 64), dtype=np.float32)
    with torch.no_grad():
        ours = torch.stack([torch.softmax(n(torch.from_numpy(x)), 1) for n in model.nets]).mean(0).numpy()
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {"image": x})
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    assert session.get_modelmeta().custom_metadata_map == {"least_side": "32"}  # the run's patch side


def test_predict_reads_our_package_and_refuses_others(run, tmp_path, capsys):
    package = tmp_path / "shared.zip"
    assert main(["export-model", str(run / "run"), "--out", str(package)]) == 0
    a = tmp_path / "a"
    b = tmp_path / "b"
    assert main(["predict", str(package), str(run / "p" / "images"), "--out", str(a), "--prob"]) == 0
    assert main(["predict", str(run / "run"), str(run / "p" / "images"), "--out", str(b), "--prob"]) == 0
    for f in a.iterdir():
        assert f.read_bytes() == (b / f.name).read_bytes(), f.name
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("rdf.yaml", json.dumps({"type": "model", "format_version": "0.5.4", "name": "theirs"}))
    capsys.readouterr()
    assert main(["predict", str(foreign), str(run / "p" / "images"), "--out", str(tmp_path / "c")]) == 2
    assert "did not export" in capsys.readouterr().err
    (tmp_path / "damaged.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ModelFileError, match="damaged.zip: not a bioimage.io model package"):
        load_model(tmp_path / "damaged.zip")


def test_a_package_asks_for_inputs_at_least_as_large_as_the_training_patches(tmp_path):
    """A network sees an image smaller than its training patch the way it learnt it only
    when it is padded to that patch: the package declares that side as its inputs' least."""
    yaml = pytest.importorskip("yaml")
    model = _model(Task())
    for n in model.nets:
        n.patch_side = 100  # not a multiple of the networks' 4: the least input rounds it up
    with zipfile.ZipFile(export_model(model, tmp_path / "m.zip", "bioimageio")) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
    space = [a for a in rdf["inputs"][0]["axes"] if a["type"] == "space"]
    assert [a["size"] for a in space] == [{"min": 100, "step": 4}] * 2
    assert "100" in readme and "mirrored" in readme


def test_exporting_leaves_the_models_networks_as_they_were():
    """The exported module is built from copies: a model's networks keep their mode and
    precision (as predicting keeps them)."""
    model = _model(Task())
    model.nets[0].train().double()
    exported = exported_network(model)
    assert model.nets[0].training and next(model.nets[0].parameters()).dtype == torch.float64
    assert not exported.training and all(p.dtype == torch.float32 for p in exported.parameters())


@pytest.mark.filterwarnings("ignore")
def test_a_volume_as_sample_of_a_2d_model_gives_its_middle_slice(run, tmp_path, capsys, one_line_error):
    from napari_hybridseg.images import ImageMeta, write_image

    vol = np.random.default_rng(0).random((5, 64, 64)).astype(np.float32)
    vol[2] += 10  # the middle slice, told apart from the others
    write_image(tmp_path / "vol.nii.gz", vol, ImageMeta(format="nii.gz"))
    out = tmp_path / "model.zip"
    assert main(["export-model", str(run / "run"), "--out", str(out), "--sample", str(tmp_path / "vol.nii.gz")]) == 0
    with zipfile.ZipFile(out) as z:
        test_input = np.load(z.open("test_input.npy"))
    assert test_input.shape == (1, 1, 64, 64) and test_input.min() >= 10
    rgb = np.zeros((64, 64, 3), np.uint8)
    write_image(tmp_path / "rgb.tif", rgb)
    rc = main(
        ["export-model", str(run / "run"), "--out", str(tmp_path / "m2.zip"), "--sample", str(tmp_path / "rgb.tif")]
    )
    one_line_error(rc, "rgb.tif", "channel")
    write_image(tmp_path / "tiny.tif", np.zeros((8, 8), np.float32))
    rc = main(
        ["export-model", str(run / "run"), "--out", str(tmp_path / "m2.zip"), "--sample", str(tmp_path / "tiny.tif")]
    )
    one_line_error(rc, "tiny.tif", "small")
    assert not (tmp_path / "m2.zip").exists()


def test_a_3d_model_refuses_a_2d_image_naming_it(tmp_path, capsys, one_line_error):
    from napari_hybridseg.images import write_image
    from napari_hybridseg.modelfile import save_model

    save_model(tmp_path / "m3.pt", _model(Task(spatial_dims=3), 1))
    write_image(tmp_path / "flat.tif", np.zeros((40, 40), np.float32))
    rc = main(["predict", str(tmp_path / "m3.pt"), str(tmp_path / "flat.tif"), "--out", str(tmp_path / "o")])
    one_line_error(rc, "flat.tif", "3D")
    rc = main(
        [
            "export-model",
            str(tmp_path / "m3.pt"),
            "--out",
            str(tmp_path / "m.zip"),
            "--sample",
            str(tmp_path / "flat.tif"),
        ]
    )
    one_line_error(rc, "flat.tif", "3D")


@pytest.mark.parametrize(
    "text, problem",
    [("image,instance,kind,w\na,1,box,0.5\n", "no 'weight' column"), ("image,instance,kind,weight\na,1,box\n", "")],
)
def test_a_weights_file_that_cannot_be_read_does_not_stop_the_export(tmp_path, text, problem):
    """The weights only feed a sentence of the package's README: a damaged ``weights.csv``
    is said so (a warning naming it, and the README), and the package is still written."""
    (tmp_path / "weights.csv").write_text(text)
    with pytest.warns(UserWarning, match=f"weights.csv: cannot be read \\({problem}"):
        path = export_model(_model(Task()), tmp_path / "m.zip", "bioimageio", weights_csv=tmp_path / "weights.csv")
    with zipfile.ZipFile(path) as z:
        assert "Learned weights of the weak annotations: not readable (" + problem in z.read("README.md").decode()
