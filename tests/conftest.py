import numpy as np
import pytest
import torch

from napari_hybridseg.annotations import Box, ImageAnnotations, Project
from napari_hybridseg.synthetic import make_project, synth_image

torch.set_num_threads(2)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny_project(tmp_path):
    """A written 6-image project (64x64): 1 strong, boxes and scribbles, with ground truth."""
    root = tmp_path / "project"
    truth = tmp_path / "truth"
    make_project(root, n_images=6, strong_fraction=0.2, shape=(64, 64), seed=3, truth_dir=truth)
    return root


@pytest.fixture
def small_item(rng):
    image, labels = synth_image(rng, (64, 64))
    return image, labels


@pytest.fixture
def hand_project():
    """A 2-image in-memory project with known boxes: one strong, one weak."""
    rng = np.random.default_rng(1)
    img_s, lab_s = synth_image(rng, (64, 64), n_objects=4)
    img_w, _ = synth_image(rng, (64, 64), n_objects=4)
    strong = ImageAnnotations("s", img_s, strong=lab_s)
    weak = ImageAnnotations("w", img_w, boxes=[Box(1, 4, 4, 20, 20), Box(2, 30, 30, 50, 52)])
    return Project([strong, weak])


@pytest.fixture
def sparse_volume():
    """A 6 x 48 x 48 volume of two discs on every slice, fully masked on slices 1 and 4
    only: ``(volume, mask, strong ImageAnnotations)``."""
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 0.1, (6, 48, 48)).astype(np.float32)
    yy, xx = np.mgrid[:48, :48]
    mask = np.zeros((6, 48, 48), np.uint8)
    mask[:, (yy - 20) ** 2 + (xx - 20) ** 2 <= 64] = 1
    mask[:, (yy - 36) ** 2 + (xx - 34) ** 2 <= 36] = 1
    vol[mask > 0] += 1
    return vol, mask, ImageAnnotations("v", vol, strong=mask, axes="zyx", strong_slices=[1, 4])


@pytest.fixture
def one_line_error(capsys):
    """Check that a command failed with exit status 2 and one line on stderr, no traceback,
    naming each of ``needles``; return that line."""

    def check(rc, *needles):
        err = capsys.readouterr().err.strip()
        assert rc == 2, err
        assert "Traceback" not in err
        last = err.splitlines()[-1]
        assert last.startswith("napari-hybridseg: error: "), last
        for n in needles:
            assert n in last, last
        return last

    return check
