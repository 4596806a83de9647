"""The one tiler: layouts, cores that partition the image, padding; and the sampler."""

import numpy as np
import pytest

from napari_hybridseg.data.tiling import Tiling, axis_layout, centred_pads, pad_spatial


@pytest.mark.parametrize("size", [37, 64, 300, 1000])
def test_tile_layout_covers_with_little_redundancy(size):
    tile, starts = axis_layout(size, 256, 32, 8)
    assert tile % 8 == 0 and starts[0] == 0
    covered = np.zeros(max(size, tile), bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered[:size].all()
    if len(starts) > 1:
        assert min(b - a for a, b in zip(starts, starts[1:])) <= tile - 32  # overlap at least 32
        assert len(starts) * tile / size < 1.25


@pytest.mark.parametrize("shape, overlap", [((300, 700), 32), ((1100, 90), 0), ((40, 50, 60), 8), ((13, 17), 0)])
def test_cores_partition_the_image_and_lie_in_their_windows(shape, overlap):
    tiling = Tiling(shape, 64, overlap, 8)
    count = np.zeros(shape, int)
    for tile in tiling.tiles:
        count[tile.core] += 1
        for axis, (core, window) in enumerate(zip(tile.core, tile.window)):
            assert window.start <= core.start and core.stop <= window.stop
            assert window.stop - window.start == tiling.tile_shape[axis]
    assert (count == 1).all()
    assert all(t % 8 == 0 for t in tiling.tile_shape)
    assert tiling.pad(np.zeros((2, *shape))).shape == (2, *tiling.padded_shape)


def test_blend_weights_are_positive_and_one_for_a_single_tile():
    assert (Tiling((30, 30), 64, 8, 8).blend_weights() == 1).all()
    win = Tiling((300, 300), 64, 16, 8).blend_weights()
    assert win.shape == (64, 64) and win.min() > 0 and win[32, 32] > win[0, 0]


def test_padding_mirrors_images_and_fills_labels():
    arr = np.arange(6).reshape(1, 2, 3)
    assert pad_spatial(arr, [(0, 0), (0, 2)]).tolist() == [[[0, 1, 2, 2, 1], [3, 4, 5, 5, 4]]]
    assert pad_spatial(arr[0], centred_pads((2, 3), 5), -1)[0].tolist() == [-1] * 5
    assert centred_pads((2, 9), 5) == [(1, 2), (0, 0)]


def test_an_overlap_as_large_as_the_tile_is_cut_to_half_a_tile():
    from napari_hybridseg.data.tiling import axis_layout

    tile, starts = axis_layout(32, 16, 32, 4)  # a 16-voxel tile asked to overlap its neighbours by 32
    assert tile <= 16 and starts[0] == 0 and starts[-1] + tile >= 32
    assert all(b - a <= tile for a, b in zip(starts, starts[1:]))  # no gaps
