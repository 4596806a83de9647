"""Cost of the engine, as ratios measured side by side in one run.

1. trainer step vs a bare PyTorch loop (same network, same batch size, CE + AdamW);
2. dii+dcr vs dcr wall time with default settings, DII updating;
3. one DII update vs one no-grad inference pass over the weak set;
4. sliding-window prediction vs a bare forward over the same pixels;
5. peak memory (RSS) of training and of predicting a 4096 x 4096 image (subprocesses);
6. one DII update with boxes read by their mean, their quantile pixel, or both (time, and
   the peak memory of a process that loads ten 768 x 768 images and updates, in subprocesses);
7. predicting a volume with a 3D network in the default 3D tiles vs in one tile of 512 per
   axis (the earlier default): peak memory and time, each in its own subprocess.

    python benchmarks/cost.py [--quick] [--only dii_update_vs_inference ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev, machine  # noqa: E402

from napari_hybridseg import protocol as ev  # noqa: E402
from napari_hybridseg.config import DII_BOX_EVIDENCE, DII_BOX_TARGETS, TrainConfig  # noqa: E402
from napari_hybridseg.inference import predict_array  # noqa: E402
from napari_hybridseg.networks import create_model  # noqa: E402
from napari_hybridseg.synthetic import make_project  # noqa: E402
from napari_hybridseg.task import Task  # noqa: E402
from napari_hybridseg.training import TrainingLoop  # noqa: E402


def _project(n=10, size=256):
    return make_project(None, n_images=n, strong_fraction=0.1, shape=(size, size), seed=0)


def _median_times(fns: list, repeats: int, warmup: int = 2) -> list[float]:
    """Median seconds of each function, calls interleaved (a, b, a, b, ...) so that a
    change of machine load during the measurement affects both sides alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return [float(np.median(t)) for t in times]


def step_vs_bare(repeats: int) -> dict:
    project = _project()
    out = {}
    for method in ("strong-only", "naive"):
        loop = TrainingLoop(project, TrainConfig(method=method, steps=10_000))
        net = create_model(Task(), loop.config.depth, loop.config.width, seed=1)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        b = loop.sampler.sample()
        x, t = torch.from_numpy(b.image), torch.from_numpy(b.target).clamp(min=0)

        def bare(net=net, opt=opt, x=x, t=t):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), t)
            loss.backward()
            opt.step()

        # the trainer's step includes sampling and augmentation
        trainer_t, bare_t = _median_times([loop.train_step, bare], repeats)
        ratio = round(trainer_t / bare_t, 3)
        out[method] = {"trainer_s": round(trainer_t, 4), "bare_s": round(bare_t, 4), "ratio": ratio}
    return out


def dii_dcr_vs_dcr(steps: int) -> dict:
    project = _project()
    res = {}
    for method in ("dcr", "dii+dcr"):
        loop = TrainingLoop(project, TrainConfig(method=method, steps=steps))
        updates = 0
        t = time.perf_counter()
        for e in loop.events():
            if isinstance(e, ev.WeightsEvent) and e.step > 0:
                updates += 1
            if isinstance(e, ev.ErrorEvent):
                raise RuntimeError(e.traceback)
        res[method] = {
            "seconds": round(time.perf_counter() - t, 2),
            "dii_updates": updates,
            "schedule": list(loop.schedule.as_tuple()),
        }
    res["ratio"] = round(res["dii+dcr"]["seconds"] / res["dcr"]["seconds"], 3)
    return res


def dii_vs_inference(repeats: int) -> dict:
    out = {}
    for box_score in DII_BOX_TARGETS:
        loop = TrainingLoop(_project(), TrainConfig(method="dii", steps=10_000, dii_box_target=box_score))
        for _ in range(5):
            loop.train_step()
        net = loop.state.nets[0]

        @torch.no_grad()
        def inference(net=net, loop=loop):
            net.eval()
            for s in loop.tset.weak:
                for _, img, *_ in loop.scorer._tiles(s):
                    net(torch.from_numpy(np.ascontiguousarray(img[None])))

        dii_t, inf_t = _median_times([loop.dii_update, inference], repeats, 1)
        key = f"dii_box_target={box_score}"
        out[key] = {"dii_update_s": round(dii_t, 4), "inference_s": round(inf_t, 4), "ratio": round(dii_t / inf_t, 3)}
    return out


def sliding_vs_bare(size: int, repeats: int) -> dict:
    nets = [create_model(Task(), 3, 16, seed=0).eval()]
    img = np.random.default_rng(0).random((1, size, size)).astype(np.float32)
    tile = 512

    @torch.no_grad()
    def bare():  # non-overlapping tiles covering exactly the image, no blending
        for y in range(0, size, tile):
            for x in range(0, size, tile):
                nets[0](torch.from_numpy(img[None, :, y : y + tile, x : x + tile].copy()))

    sw, bt = _median_times([lambda: predict_array(nets, img, tile=tile), bare], repeats, 1)
    return {"image": f"{size}x{size}", "sliding_s": round(sw, 3), "bare_s": round(bt, 3), "ratio": round(sw / bt, 3)}


# Each snippet runs in a child process and reports with ``peak()``: the peak resident memory
# of the child's own address space (VmHWM).  ``ru_maxrss`` would not do: on Linux a child
# started by fork or vfork and exec starts from the peak of the parent that started it.
PEAK = """
def peak():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
"""

PEAK_TRAIN = """
from napari_hybridseg.synthetic import make_project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.training import TrainingLoop
p = make_project(None, n_images=10, strong_fraction=0.1, shape=(512, 512), seed=0)
loop = TrainingLoop(p, TrainConfig(method="dii+dcr", steps=STEPS, dii_warmup=5, dii_interval=10))
for e in loop.events():
    pass
print(peak())
"""

PEAK_PREDICT = """
import numpy as np
from napari_hybridseg.networks import create_model
from napari_hybridseg.inference import predict_image
from napari_hybridseg.task import Task
nets = [create_model(Task(), 3, 16, seed=0), create_model(Task(), 3, 16, seed=1)]
img = (np.random.default_rng(0).random((4096, 4096)) * 4000).astype(np.uint16)
before = peak()
pred = predict_image(nets, img, "yx")
labels = pred.labels()
print(peak(), before)
"""


def child_peak(code: str) -> list[float]:
    """Run ``code`` in a fresh Python process, with ``peak()`` defined, and return the
    numbers it prints."""
    out = subprocess.run([sys.executable, "-c", PEAK + code], capture_output=True, text=True, check=True)
    return [float(v) for v in out.stdout.split()]


def peak_memory(steps: int) -> dict:
    train = child_peak(PEAK_TRAIN.replace("STEPS", str(steps)))
    pred = child_peak(PEAK_PREDICT)
    return {
        "train_dii_dcr_512px_peak_rss_mib": round(train[0]),
        "predict_4096px_two_nets_peak_rss_mib": round(pred[0]),
        "predict_input_image_mib": round(4096 * 4096 * 2 / 2**20),
    }


PEAK_DII_UPDATE = """
from napari_hybridseg.annotations import Project
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.training import TrainingLoop
loop = TrainingLoop(Project.load("ROOT"), TrainConfig(method="dii+dcr", steps=10_000, dii_box_evidence="MODE"))
loop.scorer.hypergradient(loop.state.nets[:1])  # warm up: the controls' colour affinities, allocator
before = peak()
loop.scorer.hypergradient(loop.state.nets)
print(peak(), before)
"""


PEAK_VOLUME = """
import time
import numpy as np
import torch
torch.set_num_threads(1)
from napari_hybridseg.networks import create_model
from napari_hybridseg.inference import predict_image
from napari_hybridseg.task import Task
nets = [create_model(Task(1, 1, 3), 3, 16, seed=0)]
vol = np.random.default_rng(0).random(SHAPE).astype(np.float32)
start = time.perf_counter()
predict_image(nets, vol, "zyx", tile=TILE)
print(peak(), time.perf_counter() - start)
"""


def volume_tiles(shape=(96, 256, 256)) -> dict:
    """A 3D network (width 16, depth 3) over one volume: default tiles against one tile of 512."""
    out = {"volume": "x".join(map(str, shape))}
    for name, tile in (("default_tiles", "None"), ("one_tile_512", "512")):
        mib, seconds = child_peak(PEAK_VOLUME.replace("SHAPE", repr(shape)).replace("TILE", tile))
        out[name] = {"peak_rss_mib": round(mib), "seconds": round(seconds, 1)}
    out["peak_ratio_default_vs_one_tile"] = round(
        out["default_tiles"]["peak_rss_mib"] / out["one_tile_512"]["peak_rss_mib"], 3
    )
    out["time_ratio_default_vs_one_tile"] = round(out["default_tiles"]["seconds"] / out["one_tile_512"]["seconds"], 3)
    return out


def box_evidence_cost(repeats: int) -> dict:
    """One DII update per way of reading boxes: the peak memory of a process that loads ten
    768 px images and updates (each way in its own), and the time of an update on 256 px
    images, timed interleaved."""
    import tempfile

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        make_project(f"{tmp}/p", n_images=10, strong_fraction=0.1, shape=(768, 768), seed=0)
        for mode in DII_BOX_EVIDENCE:
            code = PEAK_DII_UPDATE.replace("MODE", mode).replace("ROOT", f"{tmp}/p")
            out[mode] = {"peak_rss_mib": round(child_peak(code)[0])}
    project = _project()
    loops = [TrainingLoop(project, TrainConfig(method="dii+dcr", steps=10_000, dii_box_evidence=m)) for m in out]
    for loop in loops:
        loop.train_step()
    for mode, t in zip(list(out), _median_times([loop.dii_update for loop in loops], repeats, 1)):
        out[mode]["dii_update_s"] = round(t, 4)
    out["time_ratio_both_vs_mean"] = round(out["both"]["dii_update_s"] / out["mean"]["dii_update_s"], 3)
    out["peak_rss_ratio_both_vs_mean"] = round(out["both"]["peak_rss_mib"] / out["mean"]["peak_rss_mib"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    ap.add_argument("--out", type=Path, default=OUT / "cost.json")
    ap.add_argument("--only", nargs="+", default=None, metavar="PART", help="measure only these parts")
    args = ap.parse_args()
    reps = 3 if args.quick else 10
    parts = {
        "step_vs_bare": lambda: step_vs_bare(reps),
        "dii_update_vs_inference": lambda: dii_vs_inference(max(3, reps // 2)),
        "sliding_window_vs_bare": lambda: sliding_vs_bare(2048, max(2, reps // 3)),
        "dii_dcr_vs_dcr": lambda: dii_dcr_vs_dcr(60 if args.quick else 240),
        "peak_memory": lambda: peak_memory(20 if args.quick else 40),
        "box_evidence": lambda: box_evidence_cost(max(3, reps // 2)),
        "volume_tiles": lambda: volume_tiles((48, 128, 128) if args.quick else (96, 256, 256)),
    }
    chosen = args.only or list(parts)
    unknown = sorted(set(chosen) - set(parts))
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(parts)}")
    # --only refreshes some parts and keeps the others, each with the commit it measured
    result = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    machine_then, commit_then = result.pop("machine", None), result.pop("commit", None)  # older layout
    for part in result.values():
        part.setdefault("machine", machine_then)
        part.setdefault("commit", commit_then)
    for name in chosen:
        result[name] = {**parts[name](), "machine": machine(), "commit": git_rev()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
