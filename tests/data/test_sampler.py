"""Patch sampling: strong crops must show every class often, however small it is."""

import numpy as np
import pytest

from napari_hybridseg.data.sampler import PatchSampler
from napari_hybridseg.data.targets import TrainingSample, TrainingSet


def _strong_set(shape, blobs):
    """One fully masked image: background everywhere but small blobs of classes 1.."""
    target = np.zeros(shape, np.int8)
    for cls, corner in blobs:
        target[tuple(slice(c, c + 4) for c in corner)] = cls
    sample = TrainingSample(
        name="full",
        z=None,
        image=np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32),
        target=target,
        instance=np.full(shape, -1, np.int32),
        strong=True,
    )
    return TrainingSet([sample], [], np.zeros(0, np.int64), np.zeros(0, np.int64), task=None)


@pytest.mark.parametrize(
    "shape, patch, blobs",
    [
        ((48, 48, 48), 16, [(1, (10, 30, 20)), (2, (30, 12, 34))]),  # 3D: each class is 0.06% of the volume
        ((128, 128), 32, [(1, (20, 90)), (2, (100, 40))]),  # 2D: 0.1% each
    ],
)
def test_strong_crops_hold_every_class_often(shape, patch, blobs):
    # a fully masked image counts every pixel as annotated; centring on annotated pixels
    # alone puts a small structure in a few percent of crops, and a network trained on
    # such crops can learn to predict background everywhere
    tset = _strong_set(shape, blobs)
    sampler = PatchSampler(tset, patch, 2, 0.5, np.random.default_rng(1), augment=False)
    crops = np.concatenate([sampler.sample().target for _ in range(400)])
    for cls, _ in blobs:
        share = np.mean([(c == cls).any() for c in crops])
        assert share >= 0.14, f"class {cls} in {share:.1%} of crops"


def test_an_image_without_foreground_is_still_sampled():
    tset = _strong_set((24, 24), [])
    sampler = PatchSampler(tset, 16, 2, 0.5, np.random.default_rng(0), augment=False)
    batch = sampler.sample()
    assert batch.target.shape == (2, 16, 16) and (batch.target == 0).all()


def test_a_fully_masked_volume_keeps_no_index_of_every_voxel():
    # 64^3 voxels, one small structure: what the sampler keeps to draw centres from
    # is the structure's voxels, not a flat index of the whole volume
    tset = _strong_set((64, 64, 64), [(1, (30, 30, 30))])
    sampler = PatchSampler(tset, 16, 2, 0.5, np.random.default_rng(0), augment=False)
    pd = sampler.padded[0]
    kept = sum(px.index.nbytes for px in [pd.annotated, *pd.classes] if px.index is not None)
    assert kept <= 4 * 4**3
    centres = [pd.annotated.pick(np.random.default_rng(k)) for k in range(200)]
    assert len(set(centres)) > 150 and max(centres) < 64**3
