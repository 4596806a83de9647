"""Turn the label-efficiency records into the Markdown tables of BENCHMARKS.md.

    python benchmarks/summarize.py [RECORDS.jsonl ...] [--plot benchmarks/label_efficiency.png]

Prints, for every data set and strong budget, one table of all methods (mean ± standard
deviation over seeds), then the targets of the benchmark checked seed by seed (paired
differences on the same split and the same corrupted labels), then the mean learned weight
by kind of corruption.  A rerun of the same seed replaces the earlier record.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
from _common import OUT

from napari_hybridseg.config import TrainConfig

_cfg = TrainConfig()
DEFAULT = (_cfg.method, _cfg.box_target, f"dii_box_target={_cfg.dii_box_target}")  # the product's defaults
TOLERANCE_A = 0.005  # (a) dii+dcr >= strong-only - 0.005
TOLERANCE_B = 0.02  # (b) dii+dcr within 0.02 of 100% strong
AUC_TARGET = 0.95  # (c) for boxes and for scribbles
CLEAN_TARGET = 0.9  # clean annotations' mean weight
DETECT_TARGET = 0.8  # share of each corrupted kind whose weight ends below 0.5
# the corrupted kinds of the simulation, as the records name them, and their column names
CORRUPTED = {
    "box:loose": "loose",
    "box:shifted": "shifted",
    "box:background": "box on bg",
    "scribble:background": "stroke on bg",
}


def _fmt(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


# defaults that changed: (the commit that changed it, option, its value before)
DEFAULT_CHANGES = [
    ("7400757", "background_tile", 128),
    ("098a90f", "dii_own_quantile", None),
    ("57d925f", "dii_box_evidence", "mean"),
]
# commits whose package changed a constant that no config holds, reverted later: (option
# name for the grouping, its value); their runs are not runs of the defaults
REVERTED_CONSTANTS = {"c5594bb": ("stroke_margin", 1.0)}
# what every record states outside its options
_PER_RUN = {"method", "box_target", "steps", "seed"}
# options a method without learned weights, or without weak labels, does not read
_DII_ONLY = {k for k in vars(_cfg) if k.startswith("dii_")} | {"background_tile", "granularity"}
_WEAK_ONLY = _DII_ONLY | {"pairwise_weight", "affinity_threshold", "strong_per_batch", "lambda_cr", "cr_rampup"}
_UNREAD = {"full": _WEAK_ONLY, "strong-only": _WEAK_ONLY, "naive": _DII_ONLY, "dcr": _DII_ONLY}


@functools.cache
def _is_after(change: str, commit: str) -> bool | None:
    """Whether ``commit`` contains ``change`` (``None`` where git cannot tell)."""
    rc = subprocess.run(
        ["git", "merge-base", "--is-ancestor", change, commit], cwd=Path(__file__).parent, capture_output=True
    ).returncode
    return {0: True, 1: False}.get(rc)


@functools.cache
def _defaults(as_of: str | None) -> dict:
    """Every option's default today, or at commit ``as_of`` (of the options in
    ``DEFAULT_CHANGES``)."""
    defaults = {k: getattr(_cfg, k) for k in vars(_cfg)}
    for change, key, before in DEFAULT_CHANGES:
        if as_of and _is_after(change, as_of) is False:
            defaults[key] = before
    return defaults


def _options(r: dict, as_of: str | None = None) -> dict:
    """The options a record's run differed from today's defaults in (or from those of
    commit ``as_of``): from its ``config`` where it has one; else its ``--set`` options,
    plus each default that changed after its commit at its old value, less what equals
    the default."""
    unread = _PER_RUN | _UNREAD.get(r["method"], set())
    defaults = _defaults(as_of)
    reverted = dict(v for c, v in REVERTED_CONSTANTS.items() if r.get("commit", "")[:7] == c[:7])
    reverted = {k: v for k, v in reverted.items() if r["method"] not in _UNREAD}  # methods with DII only
    if "config" in r:
        # an option missing from the config did not exist yet: the run behaved as before its change
        config = {key: before for _, key, before in DEFAULT_CHANGES} | r["config"]
        return {k: v for k, v in config.items() if k not in unread and defaults.get(k, v) != v} | reverted
    options = {}
    for change, key, before in DEFAULT_CHANGES:  # what the record's commit had by default
        options[key] = before if _is_after(change, r.get("commit", "")) is False else getattr(_cfg, key)
    options |= r.get("options", {})
    return {k: v for k, v in options.items() if k not in unread and not (k in defaults and defaults[k] == v)} | reverted


def load(paths: list[Path], as_of: str | None = None) -> dict[tuple, dict[tuple, dict[int, dict]]]:
    """``{(dataset, budget, steps): {(method, box target, options): {seed: record}}}``, a
    synthetic set of other than round objects named with its shapes (``synthetic elongated``); options
    measured against the defaults of commit ``as_of`` (today's if ``None``)."""
    groups: dict[tuple, dict[tuple, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            options = _options(r, as_of)
            if r["method"] in ("dii", "dii+dcr") and r["box_target"] == "projection":
                # records from before the option existed scored boxes by the training loss
                options.setdefault("dii_box_target", r.get("dii_box_target", "same"))
            else:
                options.pop("dii_box_target", None)
            if r["method"] in ("dii", "dii+dcr") and "dii_lr" not in r and "dii_interval" not in options:
                # before b974d6a: updates amortised to a tenth by pass count, lr fixed at 0.1
                options["schedule"] = "old"
            opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
            opts += f",corrupt={r['corrupt']}" if r.get("corrupt", 0.3) != 0.3 else ""
            opts += f",annotator={r['annotator']}" if r.get("annotator", "development") != "development" else ""
            key = (r["method"], "-" if r["method"] in ("full", "strong-only") else r["box_target"], opts.strip(","))
            # a synthetic set of other shapes is another data set, with its own references
            dataset = r["dataset"] + (f" {r['objects']}" if r.get("objects") not in (None, "round") else "")
            groups[(dataset, r["budget"], r["steps"])][key][r["seed"]] = r
    # `full` trains on every training mask whatever the budget: the same run serves both
    full = ("full", "-", "")
    for (dataset, _, steps), runs in groups.items():
        for (d2, _, s2), other in groups.items():
            if (d2, s2) == (dataset, steps) and full in other:
                for seed, r in other[full].items():
                    runs[full].setdefault(seed, r)
    return groups


def method_table(runs: dict[tuple, dict[int, dict]]) -> list[str]:
    lines = [
        "| method | box target | options | seeds | Dice | AUC boxes | AUC scribbles | s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(runs.items(), key=lambda kv: -np.mean([r["dice"] for r in kv[1].values()]))
    for (method, bt, opts), by_seed in order:
        rs = [by_seed[s] for s in sorted(by_seed)]
        lines.append(
            f"| {method} | {bt} | {opts or '-'} | {','.join(str(s) for s in sorted(by_seed))} | "
            f"{_fmt([r['dice'] for r in rs])} | {_fmt([r.get('auc_box') for r in rs])} | "
            f"{_fmt([r.get('auc_scribble') for r in rs])} | {np.mean([r['seconds'] for r in rs]):.0f} |"
        )
    return lines


def _paired(runs, a: tuple, b: tuple) -> tuple[list[int], np.ndarray]:
    """Seeds both runs have, and the per-seed Dice difference ``a - b``."""
    if a not in runs or b not in runs:
        return [], np.zeros(0)
    seeds = sorted(set(runs[a]) & set(runs[b]))
    return seeds, np.array([round(runs[a][s]["dice"] - runs[b][s]["dice"], 4) for s in seeds])


def _verdict(diffs: np.ndarray, ok) -> str:
    if diffs.size == 0:
        return "not run"
    met = [bool(ok(d)) for d in diffs]
    if all(met):
        return "**met**" + ("" if len(met) >= 3 else f" ({len(met)} seed{'s' if len(met) > 1 else ''})")
    if not any(met):
        return "**missed**"
    return f"**met in {sum(met)} of {len(met)} seeds**"


def target_rows(setting: str, runs) -> list[str]:
    rows = []
    default = DEFAULT
    checks = [
        ("(a) dii+dcr - strong-only", ("strong-only", "-", ""), lambda d: d >= -TOLERANCE_A, f">= -{TOLERANCE_A}"),
        ("(b) dii+dcr - full", ("full", "-", ""), lambda d: d >= -TOLERANCE_B, f">= -{TOLERANCE_B}"),
        ("(b) dii+dcr - naive", ("naive", DEFAULT[1], ""), lambda d: d > 0, "> 0"),
        ("(b) dii+dcr - dcr", ("dcr", DEFAULT[1], ""), lambda d: d > 0, "> 0"),
    ]
    for name, other, ok, target in checks:
        seeds, diffs = _paired(runs, default, other)
        shown = ", ".join(f"{d:+.3f}" for d in diffs) or "-"
        mean = f"{diffs.mean():+.3f}" if diffs.size else "-"
        rows.append(f"| {setting} | {name} | {target} | {shown} | {mean} | {_verdict(diffs, ok)} |")
    for kind in ("box", "scribble"):
        aucs = np.array([r.get(f"auc_{kind}") for r in runs.get(default, {}).values() if r.get(f"auc_{kind}")])
        shown = ", ".join(f"{a:.3f}" for a in aucs) or "-"
        mean = f"{aucs.mean():.3f}" if aucs.size else "-"
        verdict = _verdict(aucs, lambda a: a >= AUC_TARGET)
        plural = {"box": "boxes", "scribble": "scribbles"}[kind]
        rows.append(f"| {setting} | (c) AUC {plural} | >= {AUC_TARGET} | {shown} | {mean} | {verdict} |")
    return rows


def _mark(value: float | None, ok: bool, fmt: str) -> str:
    if value is None:
        return "-"
    return format(value, fmt) if ok else f"**{format(value, fmt)}**"


SCORECARD_COLUMNS = [
    "- strong-only", "- 100% strong", "- naive", "- dcr", "box AUC", "scribble AUC", "clean boxes",
    "clean strokes", *(f"{c} found" for c in CORRUPTED.values()),
]  # fmt: skip


def scorecard(setting: str, runs) -> list[tuple[str, int, float, list[tuple[str, float | None, bool]]]]:
    """``(setting, seed, Dice, checks)`` per seed of the default method; a check is
    ``(format, value, met)``, value ``None`` where the run it needs is missing."""
    out = []
    for seed, r in sorted(runs.get(DEFAULT, {}).items()):
        checks: list[tuple[str, float | None, bool]] = []
        refs = [(("strong-only", "-", ""), -TOLERANCE_A, True), (("full", "-", ""), -TOLERANCE_B, True)]
        refs += [((m, DEFAULT[1], ""), 0.0, False) for m in ("naive", "dcr")]
        for other, bound, inclusive in refs:
            ref = runs.get(other, {}).get(seed)
            d = round(r["dice"] - ref["dice"], 4) if ref else None  # Dice is recorded to 4 places
            checks.append(("+.3f", d, d is None or d > bound or (inclusive and d == bound)))
        for kind in ("box", "scribble"):
            a = r.get(f"auc_{kind}")
            checks.append((".3f", a, a is None or a >= AUC_TARGET))
        for kind in ("box", "scribble"):
            c = r.get(f"mean_weight_{kind}_clean")
            checks.append((".2f", c, c is None or c >= CLEAN_TARGET))
        below = r.get("below_half_by_corruption", {})
        for key in CORRUPTED:
            v = below.get(key)
            checks.append((".1%", v, v is None or v >= DETECT_TARGET))
        out.append((setting, seed, r["dice"], checks))
    return out


def scorecard_lines(rows) -> list[str]:
    """The scorecard as a Markdown table: a miss in bold, and how many checks each seed meets."""
    head = "| setting | seed | Dice | " + " | ".join(SCORECARD_COLUMNS) + " | met |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for setting, seed, dice, checks in rows:
        cells = [_mark(v, ok, f) for f, v, ok in checks]
        judged = [ok for _, v, ok in checks if v is not None]
        met = f"{sum(judged)} / {len(judged)}"
        lines.append(f"| {setting} | {seed} | {dice:.3f} | " + " | ".join(cells) + f" | {met} |")
    return lines


def scorecard_plot(rows, path: Path) -> None:
    """The scorecard as a grid: green where a target is met, red where it is missed, grey
    where the run it needs is missing; each cell shows its figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colour = {True: "#a6d96a", False: "#f46d43", None: "#e0e0e0"}
    fig, ax = plt.subplots(figsize=(1.0 * len(SCORECARD_COLUMNS) + 2.5, 0.32 * len(rows) + 1.6))
    for i, (_, _, _, checks) in enumerate(rows):
        for j, (fmt, value, ok) in enumerate(checks):
            ax.add_patch(plt.Rectangle((j, i), 1, 1, color=colour[ok if value is not None else None], ec="white"))
            text = "-" if value is None else format(value, fmt)
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=7)
    ax.set_xlim(0, len(SCORECARD_COLUMNS))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks([j + 0.5 for j in range(len(SCORECARD_COLUMNS))], SCORECARD_COLUMNS, rotation=40, ha="left")
    ax.xaxis.tick_top()
    ax.set_yticks([i + 0.5 for i in range(len(rows))], [f"{s}, seed {seed}: {d:.3f}" for s, seed, d, _ in rows])
    ax.tick_params(length=0, labelsize=7)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def weight_rows(setting: str, runs) -> list[str] | None:
    records = list(runs.get(DEFAULT, {}).values())
    by_kind = [r.get("mean_weight_by_corruption") for r in records if r.get("mean_weight_by_corruption")]
    if not by_kind:
        return None
    cols = ["box:none", "box:loose", "box:shifted", "box:background", "scribble:none", "scribble:background"]
    cols.append("background:background")
    # the weak images' backgrounds: one per image in early records, in regions since
    old_key = "background:background"
    by_kind = [{**w, old_key: w.get(old_key, w.get("background:none"))} for w in by_kind]
    cells = [_fmt([w.get(c) for w in by_kind]) for c in cols]
    return [f"| {setting} | {len(by_kind)} | " + " | ".join(cells) + " |"]


def plot(groups, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted(groups)
    methods = [
        ("full", "-", "", "full"),
        ("strong-only", "-", "", "strong-only"),
        ("naive", "projection", "", "naive"),
        ("dcr", "projection", "", "dcr"),
        ("dii", "projection", "dii_box_target=extent", "dii, extent-scored"),
        ("dii", "projection", "dii_box_target=filled", "dii, filled-scored"),
        ("dii", "projection", DEFAULT[2], "dii"),
        ("dii+dcr", "projection", "dii_box_target=filled,schedule=old", "dii+dcr, old schedule"),
        (*DEFAULT, "dii+dcr"),
    ]
    cols = 2
    rows = -(-len(settings) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(settings) :]:
        ax.set_visible(False)
    for ax, setting in zip(axes.flat, settings):
        runs = groups[setting]
        names, means, errs, colours = [], [], [], []
        for m, bt, opts, label in methods:
            rs = runs.get((m, bt, opts), {})
            if not rs:
                continue
            d = [r["dice"] for r in rs.values()]
            names.append(f"{label} [{len(d)}]")
            means.append(np.mean(d))
            errs.append(np.std(d))
            colours.append("#d62728" if (m, bt, opts) == DEFAULT else "#7f7f7f" if bt == "-" else "#1f77b4")
        ax.bar(range(len(names)), means, yerr=errs, color=colours, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        low = min(m - e for m, e in zip(means, errs)) if means else 0.8
        ax.set_ylim(max(0.0, low - 0.02), 1.0)
        ax.set_title(f"{setting[0]}, {setting[1]}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylabel("Dice, mean ± sd over seeds", fontsize=8)
    machines = sorted({r["machine"] for runs in groups.values() for rs in runs.values() for r in rs.values()})
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.text(0.01, 0.01, "measured on: " + "; ".join(machines), fontsize=7, color="#555555")
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", type=Path, nargs="*", default=[OUT / "label_efficiency.jsonl"])
    ap.add_argument("--plot", type=Path, default=None, help="also draw Dice per method and setting (needs matplotlib)")
    ap.add_argument(
        "--scorecard", action="store_true", help="only the targets of the default, seed by seed (--plot draws them)"
    )
    ap.add_argument("--defaults-of", default=None, help="read the records against the defaults of this commit")
    args = ap.parse_args()
    groups = load(args.paths, args.defaults_of)
    if args.scorecard:
        print(
            f"Targets: - strong-only >= -{TOLERANCE_A}, - 100% strong >= -{TOLERANCE_B}, - naive and - dcr > 0, "
            f"AUCs >= {AUC_TARGET}, clean mean weights >= {CLEAN_TARGET}, each corrupted kind found (weight < 0.5) "
            f"in >= {DETECT_TARGET:.0%}; a miss in bold, '-' not run.\n"
        )
        rows = [row for (d, b, n), runs in sorted(groups.items()) for row in scorecard(f"{d} {b}, {n} steps", runs)]
        print("\n".join(scorecard_lines(rows)))
        if args.plot:
            scorecard_plot(rows, args.plot)
            print(f"\nplot written to {args.plot}")
        return
    targets, weights = [], []
    for (dataset, budget, steps), runs in sorted(groups.items()):
        # records from before the test set existed were all on validation sets
        role = next(iter(next(iter(runs.values())).values())).get("role", "validation")
        print(f"\n### {dataset} ({role} set), strong budget {budget}, {steps} steps\n")
        print("\n".join(method_table(runs)))
        targets += target_rows(f"{dataset} {budget}", runs)
        weights += weight_rows(f"{dataset} {budget}", runs) or []
    print(f"\n### Targets, seed by seed (`{DEFAULT[0]}`, `{DEFAULT[1]}` box target, {DEFAULT[2]})\n")
    print("| setting | comparison | target | per seed | mean | verdict |")
    print("|---|---|---|---|---|---|")
    print("\n".join(targets))
    if weights:
        print(f"\n### Mean learned weight by kind of corruption (`{DEFAULT[0]}`, {DEFAULT[2]})\n")
        print(
            "| setting | seeds | clean boxes | loose boxes | shifted boxes | boxes on background "
            "| clean scribbles | scribbles on background | weak images' backgrounds |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(weights))
    if args.plot:
        plot(groups, args.plot)
        print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
