"""Patch sampling and augmentation for training.

Batches always hold strong data (at least ``strong_per_batch`` of each batch
while weak data exist); patch centres fall on annotated pixels most of the
time, so sparse scribbles and boxes on large images are seen often.  In a fully
masked image every pixel is annotated, so a share of its crops is centred on a
pixel of one of the classes its mask holds, chosen uniformly among them (as
nnU-Net oversamples foreground in a third of its patches): a structure that fills
2% of a volume is otherwise in too few crops to be learnt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .targets import TrainingSample, TrainingSet
from .tiling import centred_pads, pad_spatial

ANNOTATED_CENTRE_PROB = 0.8
CLASS_CENTRE_PROB = 1 / 3


class _Pixels:
    """The pixels of a mask, to draw from at random: their flat indices (int32 where
    they fit), or none at all when the mask is everywhere true (a fully masked CT
    volume would otherwise keep a flat index of every voxel)."""

    def __init__(self, mask: np.ndarray) -> None:
        self.index = None
        if not mask.all():
            idx = np.flatnonzero(mask)
            self.index = idx.astype(np.int32) if mask.size < 2**31 else idx
        self.size = mask.size if self.index is None else self.index.size

    def pick(self, rng: np.random.Generator) -> int:
        k = int(rng.integers(self.size))
        return k if self.index is None else int(self.index[k])


@dataclass
class Batch:
    """One batch of patches; ``P`` stands for the patch's spatial axes."""

    image: np.ndarray  # (B, C, *P) float32
    target: np.ndarray  # (B, *P) int64, -1 ignored
    instance: np.ndarray  # (B, *P) int64, -1 none
    boxmap: np.ndarray  # (B, *P) int64, index into the training set's boxes, or -1
    valid: np.ndarray  # (B, *P) bool, False on padding
    strong: np.ndarray  # (B,) bool
    sample_index: np.ndarray  # (B,) int64


class _Padded:
    """A sample padded to at least the patch size, with its annotated pixels indexed."""

    def __init__(self, s: TrainingSample, p: int) -> None:
        pads = centred_pads(s.spatial_shape, p)
        self.image = pad_spatial(s.image, pads)
        self.target = pad_spatial(s.target, pads, -1)
        self.instance = pad_spatial(s.instance, pads, -1)
        boxmap = s.boxmap if s.boxmap is not None else np.full(s.spatial_shape, -1, np.int32)
        self.boxmap = pad_spatial(boxmap, pads, -1)
        self.valid = pad_spatial(np.ones(s.spatial_shape, bool), pads, False)
        annotated = (self.target >= 0) | (self.instance >= 0) | (self.boxmap >= 0)
        self.annotated = _Pixels(annotated)
        # the pixels of each class of a full mask; weak annotations are drawn where the
        # structures are, so centring on annotated pixels already finds them
        top = int(self.target.max()) if s.strong else 0
        self.classes = [px for px in (_Pixels(self.target == c) for c in range(1, top + 1)) if px.size]


class PatchSampler:
    def __init__(
        self,
        tset: TrainingSet,
        patch: int,
        batch: int,
        strong_share: float,
        rng: np.random.Generator,
        augment: bool = True,
    ) -> None:
        self.tset = tset
        self.patch = patch
        self.batch_size = batch
        self.rng = rng
        self.augment = augment
        self.padded = [_Padded(s, patch) for s in tset.samples]
        self.strong_idx = [i for i, s in enumerate(tset.samples) if s.strong]
        self.weak_idx = [i for i, s in enumerate(tset.samples) if not s.strong]
        self.n_strong = batch if not self.weak_idx else max(1, int(round(batch * strong_share)))

    def steps_per_epoch(self) -> int:
        pixels = sum(s.target.size for s in self.tset.samples)
        return max(1, int(np.ceil(pixels / (self.batch_size * self.patch ** len(self.tset.samples[0].spatial_shape)))))

    def _crop(self, i: int) -> list[np.ndarray]:
        pd = self.padded[i]
        shape = pd.target.shape
        p = self.patch
        if self.rng.random() < CLASS_CENTRE_PROB and pd.classes:  # drawn for every crop
            pixels = pd.classes[int(self.rng.integers(len(pd.classes)))]
            centre = np.unravel_index(pixels.pick(self.rng), shape)
        elif pd.annotated.size and self.rng.random() < ANNOTATED_CENTRE_PROB:
            centre = np.unravel_index(pd.annotated.pick(self.rng), shape)
        else:
            centre = [int(self.rng.integers(n)) for n in shape]
        starts = [int(np.clip(c - p // 2, 0, n - p)) for c, n in zip(centre, shape)]
        sl = tuple(slice(s, s + p) for s in starts)
        arrays = [pd.image[(slice(None), *sl)], pd.target[sl], pd.instance[sl], pd.boxmap[sl], pd.valid[sl]]
        if self.augment:
            # rotations and flips in the image plane (the last two axes) only: a volume's
            # slices may be thicker than its pixels are wide
            k = int(self.rng.integers(4))
            flip = bool(self.rng.integers(2))
            out = []
            for a in arrays:
                a = np.rot90(a, k, axes=(-2, -1))
                out.append(a[..., ::-1] if flip else a)
            arrays = out
            scale, shift = self.rng.uniform(0.8, 1.2), self.rng.uniform(-0.1, 0.1)
            arrays[0] = arrays[0] * scale + shift
        return arrays

    def sample(self) -> Batch:
        ids = []
        for k in range(self.batch_size):
            pool = self.strong_idx if k < self.n_strong or not self.weak_idx else self.weak_idx
            ids.append(pool[int(self.rng.integers(len(pool)))])
        crops = [self._crop(i) for i in ids]
        stack = [np.ascontiguousarray(np.stack([c[j] for c in crops])) for j in range(5)]
        return Batch(
            image=stack[0].astype(np.float32),
            target=stack[1].astype(np.int64),
            instance=stack[2].astype(np.int64),
            boxmap=stack[3].astype(np.int64),
            valid=stack[4],
            strong=np.array([self.tset.samples[i].strong for i in ids]),
            sample_index=np.array(ids, np.int64),
        )
