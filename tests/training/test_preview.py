"""Previews asked for on demand stay within their share of the training time."""

import numpy as np
import torch

from napari_hybridseg.config import TrainConfig
from napari_hybridseg.networks import create_model
from napari_hybridseg.protocol import RequestPreview
from napari_hybridseg.task import Task
from napari_hybridseg.training import preview as preview_module
from napari_hybridseg.training.preview import Previewer


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_on_demand_previews_wait_for_their_time_budget(hand_project, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(preview_module.time, "monotonic", clock)
    cfg = TrainConfig(depth=2, width=4)
    nets = [create_model(Task(), 2, 4, seed=s) for s in (0, 1)]
    previewer = Previewer(hand_project, Task(), cfg, torch.device("cpu"))
    previewer.budget = 0.2
    real = previewer._event

    def costly(step, nets, request):  # every preview takes 2 s
        clock.now += 2.0
        return real(step, nets, request)

    previewer._event = costly
    previewer.set_request(RequestPreview("w", None, 0))
    assert previewer.due(1)  # the first one at once
    assert previewer.event(1, nets).image == "w"
    previewer.set_request(RequestPreview("s", None, 0))  # the user shows another image
    clock.now += 1.0
    assert not previewer.due(2)  # 2 s of previews in 3 s: over 20%
    clock.now += 6.0
    assert not previewer.due(3)  # 2 s in 9 s
    clock.now += 1.0
    assert previewer.due(4)  # 2 s in 10 s
    assert previewer.event(4, nets).image == "s"
    assert not previewer.due(5)  # nothing asked for


def test_periodic_previews_are_not_held_back(hand_project, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(preview_module.time, "monotonic", clock)
    previewer = Previewer(hand_project, Task(), TrainConfig(depth=2, width=4), torch.device("cpu"))
    nets = [create_model(Task(), 2, 4, seed=s) for s in (0, 1)]
    previewer.set_request(RequestPreview("w", None, 5))
    previewer.event(0, nets)
    previewer._spent = 1e6  # far over any budget
    assert previewer.due(5) and previewer.due(10) and not previewer.due(7)


def _previewer(project, budget=1.0):
    previewer = Previewer(project, Task(), TrainConfig(depth=2, width=4), torch.device("cpu"))
    previewer.budget = budget
    return previewer, [create_model(Task(), 2, 4, seed=s) for s in (0, 1)]


def test_a_preview_of_the_region_on_screen_matches_the_whole_image_inside_it(hand_project):
    previewer, nets = _previewer(hand_project)
    previewer.set_request(RequestPreview("w"))
    whole = previewer.event(1, nets)
    assert whole.origin is None and whole.probability.shape == (64, 64)
    previewer.set_request(RequestPreview("w", region=((10, 40), (20, 50))))
    part = previewer.event(2, nets)
    assert part.origin == (10, 20) and part.probability.shape == (30, 30)
    assert part.uncertainty.shape == (30, 30)
    # the region was predicted with the image around it as context: same values
    np.testing.assert_allclose(part.probability, whole.probability[10:40, 20:50], atol=1e-4)
    np.testing.assert_allclose(part.uncertainty, whole.uncertainty[10:40, 20:50], atol=1e-4)


def test_a_region_outside_the_image_or_covering_it_predicts_the_whole_image(hand_project):
    previewer, nets = _previewer(hand_project)
    for region in (((-5, 80), (0, 64)), ((70, 90), (0, 10))):
        previewer.set_request(RequestPreview("w", region=region))
        event = previewer.event(1, nets)
        assert event.origin is None and event.probability.shape == (64, 64)


def test_moving_the_view_waits_for_the_next_periodic_preview_another_image_does_not(hand_project):
    previewer, nets = _previewer(hand_project)
    previewer.set_request(RequestPreview("w", region=((0, 32), (0, 32)), every=5))
    assert previewer.pending
    previewer.event(1, nets)
    previewer.set_request(RequestPreview("w", region=((20, 50), (0, 32)), every=5))  # panned
    assert not previewer.pending and not previewer.due(2)
    assert previewer.due(5) and previewer.event(5, nets).origin == (20, 0)  # the new region
    previewer.set_request(RequestPreview("s", region=((20, 50), (0, 32)), every=5))  # another image
    assert previewer.pending and previewer.due(6)


def test_a_volume_previewed_by_a_3d_network_goes_in_3d_tiles(monkeypatch):
    """A preview of one slice predicts the volume in prediction's 3D tiles, not in one
    cube of 1024 per axis (the whole scan in one pass)."""
    from napari_hybridseg.annotations import ImageAnnotations, Project
    from napari_hybridseg.inference import predict as P

    sides, real = [], P.Tiling
    monkeypatch.setattr(P, "Tiling", lambda shape, tile, *a: sides.append((len(shape), tile)) or real(shape, tile, *a))
    vol = np.random.default_rng(0).random((4, 140, 8)).astype(np.float32)
    task = Task(1, 1, 3)
    project = Project([ImageAnnotations("v", vol, strong=(vol > 0.5).astype(np.uint8))])
    previewer = Previewer(project, task, TrainConfig(depth=2, width=4), torch.device("cpu"))
    previewer.set_request(RequestPreview("v", z=2))
    event = previewer.event(1, [create_model(task, 2, 4, seed=s) for s in (0, 1)])
    assert sides == [(3, 128)] and event.probability.shape == (140, 8)
