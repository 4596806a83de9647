"""Patch sampling and augmentation for training.

Batches always hold strong data (at least ``strong_per_batch`` of each batch
while weak data exist); patch centres fall on annotated pixels most of the
time, so sparse scribbles and boxes on large images are seen often.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .targets import TrainingSet, TrainSlice

ANNOTATED_CENTRE_PROB = 0.8


@dataclass
class Batch:
    image: np.ndarray  # (B, C, P, P) float32
    target: np.ndarray  # (B, P, P) int64, -1 ignored
    instance: np.ndarray  # (B, P, P) int64, -1 none
    boxrect: np.ndarray  # (B, P, P) int64, global box index or -1
    valid: np.ndarray  # (B, P, P) bool, False on padding
    strong: np.ndarray  # (B,) bool
    slice_index: np.ndarray  # (B,) int64


class _Padded:
    """A slice padded to at least the patch size, with its annotated pixels indexed."""

    def __init__(self, s: TrainSlice, p: int) -> None:
        h, w = s.target.shape
        ph, pw = max(0, p - h), max(0, p - w)
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        self.image = np.pad(s.image, ((0, 0), *pads), mode="symmetric") if ph or pw else s.image
        fill = {"constant_values": -1}
        self.target = np.pad(s.target, pads, **fill)
        self.instance = np.pad(s.instance, pads, **fill)
        br = s.boxrect if s.boxrect is not None else np.full(s.target.shape, -1, np.int32)
        self.boxrect = np.pad(br, pads, **fill)
        self.valid = np.pad(np.ones((h, w), bool), pads)
        annotated = (self.target >= 0) | (self.instance >= 0) | (self.boxrect >= 0)
        self.annotated = np.flatnonzero(annotated)


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
        self.padded = [_Padded(s, patch) for s in tset.slices]
        self.strong_idx = [i for i, s in enumerate(tset.slices) if s.strong]
        self.weak_idx = [i for i, s in enumerate(tset.slices) if not s.strong]
        self.n_strong = batch if not self.weak_idx else max(1, int(round(batch * strong_share)))

    def steps_per_epoch(self) -> int:
        pixels = sum(s.target.size for s in self.tset.slices)
        return max(1, int(np.ceil(pixels / (self.batch_size * self.patch**2))))

    def _crop(self, i: int):
        pd = self.padded[i]
        h, w = pd.target.shape
        p = self.patch
        if pd.annotated.size and self.rng.random() < ANNOTATED_CENTRE_PROB:
            cy, cx = divmod(int(pd.annotated[self.rng.integers(pd.annotated.size)]), w)
        else:
            cy, cx = int(self.rng.integers(h)), int(self.rng.integers(w))
        y0 = int(np.clip(cy - p // 2, 0, h - p))
        x0 = int(np.clip(cx - p // 2, 0, w - p))
        sl = (slice(y0, y0 + p), slice(x0, x0 + p))
        arrays = [pd.image[(slice(None), *sl)], pd.target[sl], pd.instance[sl], pd.boxrect[sl], pd.valid[sl]]
        if self.augment:
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
            boxrect=stack[3].astype(np.int64),
            valid=stack[4],
            strong=np.array([self.tset.slices[i].strong for i in ids]),
            slice_index=np.array(ids, np.int64),
        )
