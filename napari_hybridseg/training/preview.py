"""Live previews for the training loop: which image, how often, and predicted how.

A preview never touches the networks being trained: it copies their weights
into separate networks in eval mode (BatchNorm uses its running statistics and
updates nothing), so a run with previews trains exactly as one without.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..config import TrainConfig
from ..data.preprocess import normalize, ranges_for
from ..inference import predict_array
from ..networks import model_for
from ..protocol import PreviewEvent, RequestPreview
from ..task import Task

# Previews predict a 2D image of up to this many pixels per axis in one piece: no overlapping
# tiles to compute twice (prediction for export keeps its smaller, blended tiles); a volume
# for a 3D network goes in prediction's own 3D tiles (a cube of 1024 would be the whole scan)
PREVIEW_TILE = 1024

# Previews asked for on demand (the user showed another image or slice) take at most this share of the training time;
# periodic previews (every N steps) and the first are not held back.  A preview costs two
# predictions of what is on screen: unlimited, a user who looks around while waiting
# halved the steps per second (BENCHMARKS.md, the live loop).
PREVIEW_BUDGET = 0.1

# Pixels of context predicted around the region on screen (and then dropped), so that the
# region's border is predicted as it would be inside the whole image
PREVIEW_MARGIN = 32


class Previewer:
    def __init__(self, project, task: Task, cfg: TrainConfig, device: torch.device) -> None:
        self.project = project
        self.task = task
        self.cfg = cfg
        self.device = device
        self.request: RequestPreview | None = None
        self.pending = False
        self.budget = PREVIEW_BUDGET
        self._began: float | None = None  # when the first preview began
        self._spent = 0.0  # seconds spent on previews so far
        self._nets: list = []
        self._last: tuple | None = None  # image and slice of the last preview
        self._ranges: dict[str, list] = {}  # intensity ranges per image: whole-volume statistics, once

    def set_project(self, project) -> None:
        self.project = project
        self._ranges.clear()

    def set_request(self, request: RequestPreview) -> None:
        """Follow ``request``; a preview is due at once (within the budget) when it shows
        another image or slice than the last preview.  Where the view moves within the
        image, the next periodic preview follows it: previews on every pan and zoom cost
        napari more than they showed (BENCHMARKS.md, the live loop)."""
        self.request = request if request.image is not None else None
        self.pending = self.request is not None and self._last != (self.request.image, self.request.z)

    def due(self, step: int) -> bool:
        if self.request is None:
            return False
        every = self.request.every
        if every and step % every == 0:
            return True
        if not self.pending:
            return False
        if self._began is None:  # no preview yet
            return True
        return self._spent <= self.budget * (time.monotonic() - self._began)

    def _input(self, item, z: int | None) -> np.ndarray:
        """The normalised network input: ``(C, H, W)``, or ``(C, Z, H, W)`` for 3D networks."""
        if item.name not in self._ranges:
            self._ranges[item.name] = ranges_for(self.task.intensity, item.image, item.axes)
        ranges = self._ranges[item.name]
        if self.task.spatial_dims == 3 and item.is_volume:
            return np.ascontiguousarray(np.moveaxis(normalize(item.image, item.axes, ranges=ranges), 1, 0))
        return normalize(item.image, item.axes, z if item.is_volume else None, ranges)

    def _snapshot(self, nets) -> list:
        """Eval-mode copies of ``nets`` with their current weights."""
        if len(self._nets) != len(nets):
            # seeded, so that building them leaves the global random state alone
            self._nets = [model_for(self.task, self.cfg, seed=0) for _ in nets]
            self._nets = [n.to(self.device).eval() for n in self._nets]
        for copy, net in zip(self._nets, nets):
            copy.load_state_dict(net.state_dict())
        return self._nets

    def event(self, step: int, nets) -> PreviewEvent | None:
        """Predict the requested image with a snapshot of ``nets``; ``None`` when the image
        (or slice) is not in the project."""
        self.pending = False
        request = self.request
        if request is None or request.image not in self.project.images:
            return None
        began = time.monotonic()
        try:
            return self._event(step, nets, request)
        finally:
            self._spent += time.monotonic() - began
            if self._began is None:
                self._began = began

    def _event(self, step: int, nets, request: RequestPreview) -> PreviewEvent | None:
        item = self.project[request.image]
        z = None
        if item.is_volume:
            z = request.z if request.z is not None else item.spatial_shape[0] // 2
            if not 0 <= z < item.spatial_shape[0]:
                return None
        x = self._input(item, z)
        plane = x.shape[-2:]
        region = _clip(request.region, plane)
        if region is not None:  # predict the region on screen with some context around it
            outer = [(max(0, a - PREVIEW_MARGIN), min(n, b + PREVIEW_MARGIN)) for (a, b), n in zip(region, plane)]
            x = np.ascontiguousarray(x[(..., *(slice(a, b) for a, b in outer))])
            inner = (..., *(slice(a - o, b - o) for (a, b), (o, _) in zip(region, outer)))
        tile = PREVIEW_TILE if x.ndim == 3 else None  # (C, Y, X); (C, Z, Y, X) takes the 3D default
        pred = predict_array(self._snapshot(self.cfg.predictors(nets)), x, tile=tile, device=self.device)
        if self.task.spatial_dims == 3 and item.is_volume:
            pred = pred.take((z,))
        origin = None
        if region is not None:
            pred = pred.take(inner[1:])
            origin = (region[0][0], region[1][0])
        self._last = (request.image, request.z)
        classes = pred.labels() if pred.class_probability is not None else None
        prob = np.ascontiguousarray(pred.probability)
        return PreviewEvent(step, request.image, z, prob, pred.uncertainty, origin, classes)


def _clip(region, plane: tuple[int, int]):
    """``region`` inside an image plane of shape ``plane``; ``None`` for the whole plane
    (or no region, or one that misses the plane)."""
    if region is None:
        return None
    clipped = tuple((max(0, int(a)), min(n, int(b))) for (a, b), n in zip(region, plane))
    if any(b <= a for a, b in clipped) or clipped == tuple((0, n) for n in plane):
        return None
    return clipped
