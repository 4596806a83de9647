"""The live loop at real sizes: napari's lag while a user looks around during training,
seconds to the first preview, and training speed in the GUI against the command line.

Builds a project of ``--images`` synthetic fluorescence images of ``--size`` (one with a
full mask, boxes on the others, about ``--objects`` nuclei each), opens it in napari and
plays a user who waits: every second the view zooms in, pans, zooms out or switches to
another image.  The same actions run without training first (the baseline), then while
training (dii+dcr, live preview on) with each runner, side by side in one run.  The
command line trains the same project with the same number of torch threads.

    xvfb-run -a python benchmarks/live_loop.py --seconds 60 [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev, machine  # noqa: E402
from ui_lag import measure  # noqa: E402

from napari_hybridseg.synthetic import make_project  # noqa: E402


def build_project(root: Path, n: int, shape: tuple[int, int], objects: int) -> None:
    make_project(root, n_images=n, strong_fraction=1 / n, weak="boxes", shape=shape, n_objects=objects)


class User:
    """Zoom in, pan, zoom out, switch image: one action a second."""

    def __init__(self, viewer, widget, names: list[str]) -> None:
        from qtpy.QtCore import QTimer

        self.viewer, self.widget, self.names = viewer, widget, names
        self.k = 0
        self.timer = QTimer()
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.act)

    def act(self) -> None:
        from napari_hybridseg._qt import layers as L

        cam = self.viewer.camera
        step = self.k % 4
        if step == 0:
            cam.zoom = cam.zoom * 2.0
        elif step == 1:
            cam.center = (cam.center[-2] + 60, cam.center[-1] + 90)
        elif step == 2:
            cam.zoom = cam.zoom / 2.0
        else:
            name = self.names[(self.k // 4) % len(self.names)]
            self.widget.annotate.image_combo.setCurrentText(name)
            L.show_only(self.viewer, name)
        self.k += 1


def cli_steps_per_s(project: Path, threads: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "napari_hybridseg", "train", str(project), "--out", tmp + "/r", "--quiet"]
        subprocess.run([*cmd, "--steps", str(steps)], env=env, check=True, capture_output=True)
        rows = [json.loads(line) for line in Path(tmp, "r", "metrics.jsonl").read_text().splitlines()]
    if len(rows) < 2:
        raise SystemExit("--cli-steps must cover at least two logged steps (20 or more)")
    return (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["elapsed"] - rows[0]["elapsed"])


def settle(app, seconds: float) -> None:
    """Keep napari responsive for ``seconds`` without measuring."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def train_with_actions(app, widget, runner: str, n_threads: int, seconds: float, profile: Path | None) -> dict:
    """Lag while training with ``runner`` for ``seconds``, seconds to the first preview,
    and the GUI's steps/s; with ``profile``, a cProfile of napari's thread written there."""
    from napari_hybridseg import protocol as P
    from napari_hybridseg.training.runners import ProcessRunner, close_spare

    widget.train.separate_process.setChecked(runner == "process")
    widget.session.threads = n_threads
    close_spare()  # the one waiting may have other settings
    if runner == "process":  # as after opening the project, or after the previous run
        widget.session.runner_factory = ProcessRunner
        widget.session.prepare()
    settle(app, 15)
    first_preview: list[float] = []
    started: list[float] = []
    steps: list[tuple[float, int]] = []

    def watch(event):
        if isinstance(event, P.PreviewEvent) and not first_preview:
            first_preview.append(time.perf_counter())
        if isinstance(event, P.StepEvent):
            steps.append((time.perf_counter(), event.step))

    widget.session.event_received.connect(watch)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    lag = measure(app, seconds, at_start=lambda: (started.append(time.perf_counter()), widget.start_training(100_000)))
    if profiler:
        profiler.disable()
    widget.stop_training()
    while widget.session.busy:
        app.processEvents()
        time.sleep(0.01)
    widget.session.event_received.disconnect(watch)
    close_spare()  # the one started for a next run
    rate = (steps[-1][1] - steps[0][1]) / (steps[-1][0] - steps[0][0]) if len(steps) > 1 else 0.0
    row = {
        "training": lag,
        "first_preview_s": round(first_preview[0] - started[0], 1) if first_preview else None,
        "gui_steps_per_s": round(rate, 3),
    }
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
        profile.parent.mkdir(parents=True, exist_ok=True)
        profile.write_text(text.getvalue())
        profiler.dump_stats(profile.with_suffix(".prof"))  # for pstats / snakeviz
        row["profile"] = str(profile)
    return row


def ratios(rounds: list[dict]) -> dict:
    """Per runner, the lag while training over the baseline of the same round (p99, max)."""
    out: dict[str, list] = {}
    for row in rounds:
        base = row["idle_with_actions"]
        for label, run in row["runners"].items():
            lag = run["training"]
            pair = {k: round(lag[k] / base[k], 2) if base[k] else None for k in ("p99_ms", "max_ms")}
            out.setdefault(label, []).append(pair)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--size", default="700x1100")
    ap.add_argument("--objects", type=int, default=150)
    ap.add_argument("--every", type=int, default=20, help="live preview every N steps (the widget's default)")
    ap.add_argument("--runners", nargs="+", default=["process", "thread"], choices=["process", "thread"])
    ap.add_argument(
        "--threads",
        nargs="+",
        type=int,
        help="torch threads for training in the child process, one run each (default: the GUI's own choice); "
        "the thread runner and the command line use the first",
    )
    ap.add_argument("--cli-steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=1, help="baseline and training runs, one after the other, this often")
    ap.add_argument("--profile", action="store_true", help="profile napari's thread while training")
    ap.add_argument("--out", type=Path, default=OUT / "live_loop.json")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.size.split("x"))

    import napari

    from napari_hybridseg._qt.widget import HybridSegWidget

    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name) / "project"
    build_project(root, args.images, shape, args.objects)
    viewer = napari.Viewer()
    widget = HybridSegWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.open_project(root)
    widget.annotate.autosave.setChecked(False)
    names = [f"img{k:03d}" for k in range(1, args.images)]
    widget.annotate.image_combo.setCurrentText(names[0])
    widget.train.every.setValue(args.every)
    app = napari.qt.get_qapp()
    threads = args.threads or [widget.session.threads]
    # the child process for the first run starts when the project opens; a user annotates
    # for a while before Start: let it load torch before anything is measured
    settle(app, 15)
    user = User(viewer, widget, names)
    user.timer.start()
    result = {
        "machine": machine(),
        "commit": git_rev(),
        "project": f"{args.images} images of {args.size}, ~{args.objects} objects each, boxes on {args.images - 1}",
        "rounds": [],
    }
    runs = [(r, t) for r in args.runners for t in (threads if r == "process" else threads[:1])]
    for k in range(args.rounds):
        # the baseline and the runs of a round follow each other, so that the machine's
        # other load weighs on both; later rounds' baselines show the weights of the last run
        row = {"idle_with_actions": measure(app, args.seconds), "runners": {}}
        for runner, n_threads in runs:
            label = runner if len(threads) == 1 else f"{runner}, {n_threads} threads"
            profile = args.out.with_name(f"live_loop_profile_{runner}.txt") if args.profile and k == 0 else None
            row["runners"][label] = train_with_actions(app, widget, runner, n_threads, args.seconds, profile)
        result["rounds"].append(row)
        print(json.dumps({"round": k + 1, **row}), flush=True)
    user.timer.stop()
    result["cli_steps_per_s"] = {str(t): round(cli_steps_per_s(root, t, args.cli_steps), 3) for t in threads}
    result["training_threads"] = threads
    result["ratios"] = ratios(result["rounds"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    viewer.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
