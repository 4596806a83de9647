"""Training speed with 1 process and with N processes (DistributedDataParallel), side by side.

On a machine with GPUs each process gets one GPU; on the CPU the cores are shared out
(1 process with all threads vs N processes with cores/N threads each), so the CPU figures
say what the distributed machinery costs, not what more hardware buys.  Steps per second
are read from each run's metrics.jsonl between its first and last logged steps, so that
start-up (imports, rendezvous) is left out.

    python benchmarks/ddp.py --nproc 2 --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev, machine  # noqa: E402

from napari_hybridseg.synthetic import make_project  # noqa: E402


def run(project: Path, out: Path, nproc: int, steps: int, batch: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "napari_hybridseg", "train", str(project), "--out", str(out), "--quiet"]
    cmd += ["--steps", str(steps), "--batch-size", str(batch), "--nproc-per-node", str(nproc)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0], records[-1]
    rate = (last["step"] - first["step"]) / (last["elapsed"] - first["elapsed"])
    return {"processes": nproc, "threads_per_process": threads, "steps_per_s": round(rate, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, default=OUT / "ddp.json")
    args = ap.parse_args()
    gpus = torch.cuda.device_count()
    cores = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "p"
        make_project(project, n_images=10, strong_fraction=0.1, shape=(256, 256), seed=0)
        rows = [
            run(project, Path(tmp) / "one", 1, args.steps, args.batch_size, cores),
            run(project, Path(tmp) / "many", args.nproc, args.steps, args.batch_size, max(1, cores // args.nproc)),
        ]
    result = {
        "machine": machine(),
        "commit": git_rev(),
        "hardware": f"{gpus} GPU(s)" if gpus else f"CPU only, {cores} cores",
        "batch_size": args.batch_size,
        "runs": rows,
        "speedup": round(rows[1]["steps_per_s"] / rows[0]["steps_per_s"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
