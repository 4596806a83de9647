"""Two gloo processes train exactly as one process on the same global batch."""

import multiprocessing as mp
import os

import numpy as np
import pytest
import torch

from napari_hybridseg import protocol as P
from napari_hybridseg.annotations import Project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.synthetic import make_project
from napari_hybridseg.training import TrainingLoop
from napari_hybridseg.training.distributed import Distributed

CFG = dict(method="dii+dcr", steps=6, batch_size=4, patch_size=32, width=4, depth=2, dii_warmup=2, dii_interval=2)


def _rank(rank: int, world: int, init_file: str, project, results, cfg) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loop = TrainingLoop(project, TrainConfig(**cfg), dist=Distributed(rank, world))
        events = list(loop.events())
        errors = [e for e in events if isinstance(e, P.ErrorEvent)]
        # NumPy, not tensors: torch would share tensors through file descriptors that end with this process
        nets = [{k: v.detach().numpy().copy() for k, v in n.named_parameters()} for n in loop.state.nets]
        buffers = [{k: v.detach().numpy().copy() for k, v in n.named_buffers()} for n in loop.state.nets]
        results.put((rank, errors[0].traceback if errors else None, nets, buffers, loop.weights.values().tolist()))
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp") / "p"
    make_project(root, n_images=5, strong_fraction=0.4, shape=(48, 48), seed=2)
    return Project.load(root)


@pytest.mark.parametrize("box_evidence", ["mean", "quantile"])
def test_two_gloo_ranks_equal_one_process(project, tmp_path, box_evidence):
    """Every box lies in one rank's share of the images: each its own quantile too."""
    cfg = CFG | {"dii_box_evidence": box_evidence}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = TrainingLoop(project, TrainConfig(**cfg))
        assert not [e for e in alone.events() if isinstance(e, P.ErrorEvent)]
    finally:
        torch.set_num_threads(threads)
    # spawned, not forked: a fork copies this process's threads' locks (Qt's, torch's, other
    # tests' queues), and forked ranks were seen to end without a word after the GUI tests
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    ranks = [ctx.Process(target=_rank, args=(r, 2, str(tmp_path / "init"), project, results, cfg)) for r in range(2)]
    for p in ranks:
        p.start()
    got = {}
    for _ in ranks:
        rank, error, nets, buffers, gamma = results.get(timeout=120)
        assert error is None, error
        got[rank] = (nets, buffers, gamma)
    for p in ranks:
        p.join(30)
        assert p.exitcode == 0
    assert len(alone.weights) > 0 and min(alone.weights.values().tolist()) < 1.0  # the weights did move
    assert (alone.scorer.box_q is not None) == (box_evidence == "quantile")
    for rank in (0, 1):
        nets, buffers, gamma = got[rank]
        np.testing.assert_allclose(gamma, alone.weights.values().tolist(), atol=1e-4)
        for net, expected in zip(nets, alone.state.nets, strict=True):
            for name, value in expected.named_parameters():
                np.testing.assert_allclose(net[name], value.detach().numpy(), atol=1e-4, rtol=0, err_msg=name)
        for net, expected in zip(buffers, alone.state.nets, strict=True):
            for name, value in expected.named_buffers():
                np.testing.assert_allclose(net[name], value.numpy(), atol=1e-4, rtol=0, err_msg=name)


def test_a_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match="cannot be split evenly over 3"):
        Distributed(0, 3).share(4)
    assert Distributed(1, 2).share(4) == slice(2, 4) and Distributed(1, 2).shard([0, 1, 2, 3, 4]) == [1, 3]
    assert os.environ.get("WORLD_SIZE") is None and not Distributed.from_environment().active


def test_the_command_line_trains_with_two_processes(tmp_path, capfd):
    from napari_hybridseg.cli import main

    assert main(["sample", str(tmp_path / "p"), "--n-images", "3", "--size", "48", "--strong-fraction", "0.34"]) == 0
    tiny = ["--steps", "3", "--batch-size", "2", "--patch-size", "32", "--width", "4", "--depth", "2", "--quiet"]
    rc = main(["train", str(tmp_path / "p"), "--out", str(tmp_path / "r"), "--nproc-per-node", "2", *tiny])
    err = capfd.readouterr().err
    assert rc == 0, err
    assert err.count("training dii+dcr on cpu") == 1  # rank 0 alone speaks
    assert {"model.pt", "checkpoint.pt", "weights.csv", "metrics.jsonl"} <= {p.name for p in (tmp_path / "r").iterdir()}
    rc = main(["train", str(tmp_path / "p"), "--out", str(tmp_path / "r3"), "--nproc-per-node", "3", *tiny])
    assert rc == 2 and "cannot be split evenly over 3 processes" in capfd.readouterr().err
