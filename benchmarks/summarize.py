"""Turn benchmarks/_out/label_efficiency.jsonl into the Markdown tables of BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from _common import OUT


def _fmt(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path", type=Path, nargs="?", default=OUT / "label_efficiency.jsonl")
    args = ap.parse_args()
    groups: dict[tuple, dict[tuple, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for line in args.path.read_text().splitlines():
        r = json.loads(line)
        opts = ",".join(f"{k}={v}" for k, v in sorted(r.get("options", {}).items()))
        opts += f",corrupt={r['corrupt']}" if r.get("corrupt", 0.3) != 0.3 else ""
        # a rerun of the same seed replaces the earlier record
        groups[(r["dataset"], r["budget"], r["steps"])][(r["method"], r["box_target"], opts.strip(","))][r["seed"]] = r
    for (dataset, budget, steps), runs in sorted(groups.items()):
        print(f"\n### {dataset}, strong budget {budget}, {steps} steps\n")
        print("| method | box target | options | seeds | Dice | AUC boxes | AUC scribbles | s/run |")
        print("|---|---|---|---|---|---|---|---|")
        runs = {k: list(v.values()) for k, v in runs.items()}
        for (method, bt, opts), rs in sorted(runs.items(), key=lambda kv: -np.mean([r["dice"] for r in kv[1]])):
            seeds = ",".join(str(r["seed"]) for r in rs)
            bt_shown = bt if method not in ("full", "strong-only") else "-"
            print(
                f"| {method} | {bt_shown} | {opts or '-'} | {seeds} | {_fmt([r['dice'] for r in rs])} | "
                f"{_fmt([r.get('auc_box') for r in rs])} | {_fmt([r.get('auc_scribble') for r in rs])} | "
                f"{np.mean([r['seconds'] for r in rs]):.0f} |"
            )


if __name__ == "__main__":
    main()
