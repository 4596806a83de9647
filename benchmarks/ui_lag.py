"""napari's responsiveness while training: lateness of a 10 ms QTimer.

Opens napari with the sample project and the dock widget, starts training on
the CPU with live previews, and records how late each 10 ms timer tick fires for
``--seconds`` seconds, once with training in a thread and once in a child process
(side by side in one run).  Also records an idle baseline.  Targets while training:
p99 <= 20 ms, max <= 100 ms.

    xvfb-run -a python benchmarks/ui_lag.py --seconds 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, git_rev, machine  # noqa: E402


def measure(app, seconds: float, interval_ms: int = 10, at_start=None) -> dict:
    """Timer lateness over ``seconds``; ``at_start`` runs inside the measured window."""
    from qtpy.QtCore import QEventLoop, QTimer

    lateness = []
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        lateness.append(max(0.0, (now - last[0]) * 1000 - interval_ms))
        last[0] = now

    timer = QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(tick)
    timer.start()
    loop = QEventLoop()
    if at_start is not None:
        QTimer.singleShot(50, at_start)
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()
    timer.stop()
    arr = np.asarray(lateness[1:])
    return {
        "ticks": int(arr.size),
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "p99_ms": round(float(np.percentile(arr, 99)), 1),
        "max_ms": round(float(arr.max()), 1),
    }


def train_and_measure(widget, app, args, runner: str) -> dict:
    """Lag while training with ``runner`` (``process`` or ``thread``) for ``--seconds``."""
    widget.train.separate_process.setChecked(runner == "process")
    t0 = time.perf_counter()
    # starting (snapshot of the annotations, building the loop) happens inside the measured window too
    busy = measure(app, args.seconds, at_start=lambda: widget.start_training(steps=100_000))
    steps = widget.train.progress.value()
    seconds = time.perf_counter() - t0
    widget.stop_training()
    while widget.session.busy:
        app.processEvents()
        time.sleep(0.01)
    return {"training": busy, "steps_trained": steps, "steps_per_s": round(steps / seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--every", type=int, default=5, help="live preview every N steps")
    ap.add_argument("--method", default="dii+dcr")
    ap.add_argument("--runners", nargs="+", default=["thread", "process"], choices=["thread", "process"])
    ap.add_argument("--out", type=Path, default=OUT / "ui_lag.json")
    args = ap.parse_args()

    import napari

    from napari_hybridseg._qt.widget import HybridSegWidget
    from napari_hybridseg._sample_data import sample_project_path

    viewer = napari.Viewer()
    widget = HybridSegWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.open_project(sample_project_path())
    widget.project_root = None  # keep the bundled project pristine (runs go to a temp folder)
    widget.annotate.image_combo.setCurrentText("img002")
    app = napari.qt.get_qapp()
    idle = measure(app, min(10.0, args.seconds))
    widget.train.method.setCurrentText(args.method)
    widget.train.every.setValue(args.every)
    result = {
        "machine": machine(),
        "commit": git_rev(),
        "method": args.method,
        "preview_every": args.every,
        "idle": idle,
        "runners": {runner: train_and_measure(widget, app, args, runner) for runner in args.runners},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    viewer.close()


if __name__ == "__main__":
    main()
