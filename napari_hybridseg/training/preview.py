"""Live previews for the training loop: which image, how often, and predicted how.

A preview never touches the networks being trained: it copies their weights
into separate networks in eval mode (BatchNorm uses its running statistics and
updates nothing), so a run with previews trains exactly as one without.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from ..config import TrainConfig
from ..data.preprocess import normalize
from ..inference import predict_array
from ..networks import create_model
from ..protocol import PreviewEvent, RequestPreview
from ..task import Task

CACHED_IMAGES = 4  # normalised preview slices kept between previews


class Previewer:
    def __init__(self, project, task: Task, cfg: TrainConfig, device: torch.device) -> None:
        self.project = project
        self.task = task
        self.cfg = cfg
        self.device = device
        self.request: RequestPreview | None = None
        self.pending = False
        self._nets: list = []
        self._images: OrderedDict = OrderedDict()

    def set_project(self, project) -> None:
        self.project = project
        self._images.clear()

    def set_request(self, request: RequestPreview) -> None:
        self.request = request if request.image is not None else None
        self.pending = self.request is not None

    def due(self, step: int) -> bool:
        if self.request is None:
            return False
        every = self.request.every
        return self.pending or bool(every and step % every == 0)

    def _image(self, name: str, z: int | None) -> np.ndarray | None:
        """The normalised ``(C, H, W)`` slice to preview (whole-volume statistics)."""
        if (name, z) in self._images:
            self._images.move_to_end((name, z))
            return self._images[(name, z)]
        try:
            item = self.project[name]
        except KeyError:
            return None
        image = normalize(item.image, item.axes, z if item.is_volume else None)
        self._images[(name, z)] = image
        while len(self._images) > CACHED_IMAGES:
            self._images.popitem(last=False)
        return image

    def _snapshot(self, nets) -> list:
        """Eval-mode copies of ``nets`` with their current weights."""
        if len(self._nets) != len(nets):
            self._nets = [create_model(self.task, self.cfg.depth, self.cfg.width).to(self.device).eval() for _ in nets]
        for copy, net in zip(self._nets, nets):
            copy.load_state_dict(net.state_dict())
        return self._nets

    def event(self, step: int, nets) -> PreviewEvent | None:
        """Predict the requested image with a snapshot of ``nets``."""
        self.pending = False
        request = self.request
        if request is None or request.image not in self.project.images:
            return None
        item = self.project[request.image]
        z = request.z if not item.is_volume or request.z is not None else item.spatial_shape[0] // 2
        image = self._image(request.image, z if item.is_volume else None)
        if image is None:
            return None
        pred = predict_array(self._snapshot(nets), image, device=self.device)
        return PreviewEvent(step, request.image, z if item.is_volume else None, pred.probability, pred.uncertainty)
