"""``--preset paper`` (and the widget's "as in the paper"): the paper's settings, options
given beside it kept, and predictions from the first network alone."""

import json

import numpy as np
import pytest

from napari_hybridseg.cli import main
from napari_hybridseg.config import PRESETS, TrainConfig
from napari_hybridseg.errors import ConfigError
from napari_hybridseg.images import read_image, write_image
from napari_hybridseg.inference import predict_image
from napari_hybridseg.modelfile import LoadedModel, load_model, save_model
from napari_hybridseg.networks import create_model
from napari_hybridseg.task import Task

TINY = ["--steps", "2", "--batch-size", "2", "--patch-size", "32", "--width", "4", "--depth", "2", "--quiet"]


def test_the_paper_preset_sets_the_papers_choices():
    cfg = TrainConfig().with_preset("paper")
    assert (cfg.granularity, cfg.box_target, cfg.dii_box_target) == ("image", "filled", "same")
    assert (cfg.dii_space, cfg.dii_lr, cfg.predict_with, cfg.method) == ("weight", 0.1, "first", "dii+dcr")
    assert TrainConfig().with_preset("paper", keep={"granularity"}).granularity == "object"
    with pytest.raises(ConfigError, match="preset must be one of paper"):
        TrainConfig().with_preset("nnunet")


def test_the_cli_preset_keeps_options_given_beside_it(tiny_project, tmp_path):
    out = tmp_path / "run"
    # object is also the default: given explicitly, it still wins over the preset
    argv = ["train", str(tiny_project), "--out", str(out), "--preset", "paper", "--granularity", "object"]
    assert main([*argv, *TINY]) == 0
    cfg = json.loads((out / "config.json").read_text())
    expected = {**PRESETS["paper"], "granularity": "object"}
    assert {k: cfg[k] for k in expected} == expected
    assert load_model(out).config.predict_with == "first"


def test_a_model_that_predicts_with_its_first_network_does_so_everywhere(tmp_path, rng):
    task = Task()
    nets = [create_model(task, 2, 4, seed=s).eval() for s in (0, 1)]
    model = LoadedModel(nets, TrainConfig(depth=2, width=4, predict_with="first"), task)
    save_model(tmp_path / "m.pt", model)
    img = rng.random((48, 48)).astype(np.float32)
    write_image(tmp_path / "in" / "a.tif", img)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "in"), "--out", str(out), "--prob"]) == 0
    written, _ = read_image(next(out.glob("a*prob*")))
    loaded = load_model(tmp_path / "m.pt")  # its networks pad a small image as training did
    first = predict_image(loaded.nets[:1], img, "yx").probability
    both = predict_image(loaded.nets, img, "yx").probability
    np.testing.assert_allclose(written, first, atol=1e-5)
    assert not np.allclose(written, both, atol=1e-4)
    assert len(loaded.predictors) == 1
