"""One preprocessing path: dtype-independent scaling, and a slice scaled like its volume."""

import numpy as np
import pytest

from napari_hybridseg.data.preprocess import normalize


@pytest.mark.parametrize("dtype, offset", [(np.uint8, 0), (np.uint16, 1000), (np.float32, -5.0)])
def test_normalisation_is_dtype_independent(dtype, offset):
    base = np.random.default_rng(0).random((64, 64)) * 200
    img = (base + offset).astype(dtype)
    out = normalize(img, "yx")
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    assert -0.1 < np.percentile(out, 1) < 0.1 and 0.9 < np.percentile(out, 99.8) < 1.1


def test_a_slice_is_scaled_by_the_whole_volume():
    vol = np.random.default_rng(0).random((5, 16, 16)).astype(np.float32)
    vol[2] *= 10  # one bright slice
    whole = normalize(vol, "zyx")
    assert whole.shape == (5, 1, 16, 16)
    np.testing.assert_array_equal(normalize(vol, "zyx", z=2), whole[2])
    np.testing.assert_array_equal(normalize(vol, "zyx", z=0), whole[0])
    assert not np.allclose(normalize(vol[0], "yx"), whole[0])  # scaled alone, it would differ


def test_channels_are_scaled_apart():
    img = np.stack([np.linspace(0, 1, 400).reshape(20, 20), np.linspace(0, 1000, 400).reshape(20, 20)], -1)
    out = normalize(img, "yxc")
    assert out.shape == (2, 20, 20)
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
