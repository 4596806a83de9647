"""One contract for every network the factory builds (2D and 3D, any number of classes)."""

import pytest
import torch

from napari_hybridseg.networks import UNet, create_model
from napari_hybridseg.task import Task

TASKS = [Task(1, 1, 2), Task(3, 1, 2), Task(1, 3, 2), Task(2, 2, 3), Task(1, 2, 3, pools=((1, 2, 2), (2, 2, 2)))]


@pytest.mark.parametrize("task", TASKS, ids=str)
class TestNetworkContract:
    depth, width = 2, 4

    def _net(self, task, seed=0):
        return create_model(task, self.depth, self.width, seed=seed)

    def _input(self, task, size=16):
        return torch.rand(2, task.in_channels, *([size] * task.spatial_dims))

    def test_output_shape_and_exposed_classifier(self, task):
        net = self._net(task).eval()
        x = self._input(task)
        out = net(x)
        assert out.shape == (2, task.n_outputs, *x.shape[2:])
        feats = net.features(x)
        assert feats.shape[1] == net.n_features
        torch.testing.assert_close(net.classifier(feats), out)

    def test_seed_fixes_initialisation_and_two_seeds_differ(self, task):
        a, b, c = self._net(task, 1), self._net(task, 1), self._net(task, 2)
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)
        assert not torch.equal(a.classifier.weight, c.classifier.weight)

    def test_seeded_build_leaves_the_global_rng_alone(self, task):
        torch.manual_seed(5)
        expected = torch.rand(3)
        torch.manual_seed(5)
        self._net(task, 9)
        assert torch.equal(torch.rand(3), expected)

    def test_bad_size_gets_an_actionable_error(self, task):
        net = self._net(task)
        with pytest.raises(ValueError, match="multiple of 2\\*\\*depth = 4; pad it to"):
            net(self._input(task, size=10))
        with pytest.raises(ValueError, match="expected input"):
            net(torch.rand(1, task.in_channels + 1, *([8] * task.spatial_dims)))


def test_unknown_dimensionality_is_refused():
    with pytest.raises(ValueError, match="spatial_dims"):
        UNet(spatial_dims=4)


@pytest.mark.parametrize(
    "spacing, expected",
    [
        ((1.0, 1.0, 1.0), ((2, 2, 2),) * 3),
        ((5.0, 1.0, 1.0), ((1, 2, 2), (1, 2, 2), (2, 2, 2))),  # 5 mm slices: in-plane twice (4 mm pixels), then all
        ((3.0, 1.0, 1.0), ((1, 2, 2), (2, 2, 2), (2, 2, 2))),  # after one in-plane pooling 3 mm < 2 x 2 mm
        ((1.0, 0.5, 0.5), ((1, 2, 2), (2, 2, 2), (2, 2, 2))),  # twice as thick: one in-plane pooling first
    ],
)
def test_pooling_follows_the_spacing_until_near_isotropic(spacing, expected):
    from napari_hybridseg.task import pool_kernels

    assert pool_kernels(spacing, 3) == expected


def test_an_anisotropic_network_keeps_thin_axes_and_its_model_file(tmp_path):
    from napari_hybridseg.config import TrainConfig
    from napari_hybridseg.modelfile import LoadedModel, load_model, save_model

    task = Task(1, 1, 3, pools=((1, 2, 2), (2, 2, 2)))
    net = create_model(task, 2, 4, seed=0).eval()
    assert tuple(net.up[-1].weight.shape[2:]) == (1, 2, 2)  # the first level's up-sampling: in-plane only
    path = save_model(tmp_path / "m.pt", LoadedModel([net], TrainConfig(depth=2, width=4, method="dii"), task))
    loaded = load_model(path)
    assert loaded.task == task
    x = torch.rand(1, 1, 8, 16, 16)
    torch.testing.assert_close(loaded.nets[0](x), net(x))
