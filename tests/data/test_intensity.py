"""Medical intensities: CT clipped and scaled by the training foreground, MR z-scored per
image, microscopy by percentiles as before; chosen from the data or project.json, recorded
in the model and used by every prediction with it."""

import json

import numpy as np
import pytest

from napari_hybridseg.annotations import ImageAnnotations, Project
from napari_hybridseg.cli import main
from napari_hybridseg.data.preprocess import normalize, ranges_for
from napari_hybridseg.errors import AnnotationError, ConfigError
from napari_hybridseg.images import ImageMeta, read_image, write_image
from napari_hybridseg.inference import predict_image
from napari_hybridseg.intensity import Intensity, choose_scheme, intensity_for
from napari_hybridseg.modelfile import load_model
from napari_hybridseg.task import Task

NII = ImageMeta(spacing=(1.0, 1.0, 1.0), format="nii.gz")


def _ct(rng, shape=(6, 40, 40), air=0.3, metal=False):
    """Hounsfield units: air around a body of soft tissue (40 HU) holding a liver (60 HU)."""
    vol = rng.normal(40, 10, shape)
    vol[:, :, : int(shape[2] * air)] = -1000 + rng.normal(0, 5, (shape[0], shape[1], int(shape[2] * air)))
    organ = np.zeros(shape, np.int32)
    organ[:, 15:30, 20:35] = 1
    vol[organ > 0] = rng.normal(60, 8, int(organ.sum()))
    if metal:
        vol[:, 2:4, 36:38] = 3000  # an implant
    return vol.astype(np.int16), organ


def test_ct_is_recognised_and_scaled_by_the_foreground_of_the_masks(rng):
    vol, organ = _ct(rng)
    project = Project([ImageAnnotations("a", vol, NII, strong=organ)])
    intensity = intensity_for(project)
    assert intensity.scheme == "ct"
    ((mean, std, low, high),) = intensity.stats
    assert mean == pytest.approx(60, abs=1) and std == pytest.approx(8, abs=1)
    assert low < 60 < high and high - low < 80  # the foreground's 0.5-99.5 percentiles
    out = normalize(vol, "zyx", ranges=ranges_for(intensity, vol, "zyx"))[:, 0]
    assert abs(out[organ > 0].mean()) < 0.05 and out[organ > 0].std() == pytest.approx(1, abs=0.1)
    # air and metal are clipped to the foreground's range, not stretched over it
    assert out.min() >= (low - mean) / std - 1e-5 and out.max() <= (high - mean) / std + 1e-5


def test_a_ct_scan_maps_hounsfield_units_the_same_whatever_else_it_holds(rng):
    """A metal implant or more air changes nothing: HU are absolute, the model's statistics fixed."""
    vol, organ = _ct(rng)
    intensity = intensity_for(Project([ImageAnnotations("a", vol, NII, strong=organ)]))
    other, _ = _ct(np.random.default_rng(5), air=0.6, metal=True)
    assert ranges_for(intensity, other, "zyx") == ranges_for(intensity, vol, "zyx")
    # per-image schemes move with the content
    assert ranges_for(Intensity("percentile"), other, "zyx") != ranges_for(Intensity("percentile"), vol, "zyx")


def test_mr_scans_are_z_scored_per_image_and_microscopy_keeps_its_percentiles(rng):
    mr = rng.gamma(4, 100, (6, 32, 32)).astype(np.float32)
    assert choose_scheme([(mr, "nii.gz")]) == "zscore"
    out = normalize(mr, "zyx", ranges=ranges_for(Intensity("zscore"), mr, "zyx"))
    assert abs(out.mean()) < 1e-3 and out.std() == pytest.approx(1, abs=1e-3)
    # the same scan saved as TIFF, and 2D images, are microscopy: percentiles, exactly as before
    assert choose_scheme([(mr, "tif")]) == "percentile"
    img = rng.random((32, 32)).astype(np.float32) * 300 + 100
    lo, hi = np.percentile(img, [1.0, 99.8])
    np.testing.assert_allclose(normalize(img, "yx", ranges=ranges_for(None, img, "yx"))[0], (img - lo) / (hi - lo))
    np.testing.assert_array_equal(normalize(img, "yx"), normalize(img, "yx", ranges=ranges_for(None, img, "yx")))
    # a project mixing CT and MR is not CT
    assert choose_scheme([(mr, "nii.gz"), (_ct(rng)[0], "nii.gz")]) == "zscore"


def test_the_setting_comes_from_the_option_then_project_json_then_the_data(tmp_path, rng):
    mr = rng.gamma(4, 100, (4, 32, 32)).astype(np.float32)
    mask = np.zeros(mr.shape, np.uint8)
    mask[:, 8:20, 8:20] = 1
    root = tmp_path / "p"
    project = Project([ImageAnnotations("a", mr, NII, strong=mask)])
    project.save(root)
    assert intensity_for(Project.load(root), "auto").scheme == "zscore"
    data = json.loads((root / "project.json").read_text())
    (root / "project.json").write_text(json.dumps({**data, "intensity": "percentile"}))
    loaded = Project.load(root)
    assert loaded.intensity == "percentile"
    from napari_hybridseg.task import task_for

    assert task_for(loaded).intensity.scheme == "percentile"
    assert task_for(loaded, intensity="zscore").intensity.scheme == "zscore"
    (root / "project.json").write_text(json.dumps({**data, "intensity": "hounsfield"}))
    with pytest.raises(AnnotationError, match=r"project\.json: intensity must be one of auto, percentile"):
        Project.load(root)
    # a CT setting needs structures in the full masks
    empty = Project([ImageAnnotations("a", mr, NII, strong=np.zeros_like(mask))])
    with pytest.raises(ConfigError, match="foreground voxels"):
        intensity_for(empty, "ct")


def test_a_model_records_its_normalisation_and_old_model_files_read_as_percentile():
    task = Task(1, 2, 2, intensity=Intensity("ct", ((50.0, 10.0, 20.0, 80.0),)))
    assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    old = {k: v for k, v in task.to_dict().items() if k != "intensity"}
    assert Task.from_dict(old).intensity == Intensity("percentile")
    with pytest.raises(ConfigError, match="intensity scheme"):
        Intensity("minmax")
    with pytest.raises(ConfigError, match="mean, std > 0"):
        Intensity("ct", ((50.0, 0.0, 20.0, 80.0),))


def test_a_ct_model_trained_and_applied_from_the_command_line_uses_its_statistics(tmp_path, rng):
    vol, organ = _ct(rng, shape=(4, 32, 32))
    root = tmp_path / "p"
    Project([ImageAnnotations("a", vol, NII, strong=organ)]).save(root)
    args = ["--steps", "2", "--batch-size", "2", "--patch-size", "16", "--width", "4", "--depth", "2", "--quiet"]
    assert main(["train", str(root), "--out", str(tmp_path / "run"), *args]) == 0
    model = load_model(tmp_path / "run")
    assert model.task.intensity.scheme == "ct"
    new, _ = _ct(np.random.default_rng(9), shape=(4, 32, 32), metal=True)
    write_image(tmp_path / "in" / "b.nii.gz", new, NII)
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--prob"]) == 0
    written, _ = read_image(next((tmp_path / "out").glob("b*prob*")))
    ours = predict_image(model.nets, new, "zyx", intensity=model.task.intensity).probability
    scaled_alone = predict_image(model.nets, new, "zyx").probability
    np.testing.assert_allclose(written, ours, atol=1e-5)
    assert not np.allclose(written, scaled_alone, atol=1e-3)
