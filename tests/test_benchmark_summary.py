"""`benchmarks/summarize.py`: records are grouped by what their runs differed in from
today's defaults, and the scorecard checks each target at its bound."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def summarize(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "summarize", raising=False)
    import summarize

    # which commits contain the background-tile change, without asking git
    monkeypatch.setattr(summarize, "_is_after", lambda change, commit: commit == "new")
    return summarize


def _record(method, commit, dice, seed=0, **extra):
    return {
        "dataset": "d", "budget": "10pct", "steps": 600, "seed": seed, "method": method,
        "box_target": "projection", "dice": dice, "commit": commit, "seconds": 1.0, **extra,
    }  # fmt: skip


def test_a_default_that_changed_after_a_record_counts_as_an_option(summarize):
    old_default = _record("dii+dcr", "old", 0.5)
    set_to_todays = _record("dii+dcr", "old", 0.5, options={"background_tile": 48})
    before = {"dii_own_quantile": None, "dii_box_evidence": "mean"}
    assert summarize._options(old_default) == {"background_tile": 128} | before
    assert summarize._options(set_to_todays) == before
    # read against the defaults of an older commit, the old record is a default run
    assert summarize._options(old_default, as_of="old") == {}
    new_default = _record("dii+dcr", "new", 0.5)
    now = {"background_tile": 48, "dii_own_quantile": 0.5, "dii_box_evidence": "both"}
    assert summarize._options(new_default, as_of="old") == now
    assert summarize._options(_record("dii+dcr", "new", 0.5)) == {}
    # the full config, where a record has it, decides alone; an option it lacks did not
    # exist when it ran, so the run had the behaviour from before that option's change
    config = {"background_tile": 48, "seed": 3}
    assert summarize._options(_record("dii+dcr", "old", 0.5, config=config)) == before
    todays = config | {"dii_own_quantile": 0.5, "dii_box_evidence": "both"}
    assert summarize._options(_record("dii+dcr", "new", 0.5, config=todays)) == {}


def test_a_record_of_a_constant_since_reverted_is_not_a_default_run(summarize):
    """A run at a commit whose package changed a constant the config does not hold (later
    reverted) is grouped apart from the default, though its config equals today's defaults."""
    config = {k: getattr(summarize._cfg, k) for k in vars(summarize._cfg)}
    # c5594bb: strokes lowered past a margin of 1.0 (reverted in 62a7238)
    assert summarize._options(_record("dii+dcr", "c5594bb", 0.5, config=config)) == {"stroke_margin": 1.0}
    assert summarize._options(_record("dii+dcr", "new", 0.5, config=config)) == {}
    # a method without learned weights does not read it
    assert summarize._options(_record("naive", "c5594bb", 0.5, config=config)) == {}


def test_options_a_method_does_not_read_do_not_split_its_runs(summarize):
    assert summarize._options(_record("strong-only", "old", 0.5, options={"lambda_cr": 0.1})) == {}
    assert summarize._options(_record("naive", "old", 0.5)) == {}
    weaker_pairs = _record("naive", "new", 0.5, options={"pairwise_weight": 0.5})
    assert summarize._options(weaker_pairs) == {"pairwise_weight": 0.5}


def test_scorecard_checks_each_target_at_its_bound(summarize, tmp_path):
    default = dict(
        dii_box_target="ellipse", dii_lr=0.1, auc_box=0.95, auc_scribble=0.949,
        mean_weight_box_clean=0.9, mean_weight_scribble_clean=0.89,
        below_half_by_corruption={"box:loose": 0.8, "box:shifted": 0.79, "box:background": 1.0},
    )  # fmt: skip
    records = [
        _record("dii+dcr", "new", 0.900, **default),
        _record("strong-only", "new", 0.905),  # -0.005: met
        _record("full", "new", 0.921),  # -0.021: missed
        _record("naive", "new", 0.900),  # 0: missed (must be above)
        _record("dii+dcr", "new", 0.800, seed=1, **default),
        _record("strong-only", "new", 0.8051, seed=1),  # -0.0051: missed
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    (runs,) = summarize.load([path]).values()
    rows = summarize.scorecard("d", runs)
    met = dict(zip(summarize.SCORECARD_COLUMNS, [(v, ok) for _, v, ok in rows[0][3]]))
    assert met["- strong-only"][1] and not met["- 100% strong"][1] and not met["- naive"][1]
    assert met["- dcr"] == (None, True)  # not run
    assert met["box AUC"][1] and not met["scribble AUC"][1]
    assert met["clean boxes"][1] and not met["clean strokes"][1]
    assert met["loose found"][1] and not met["shifted found"][1] and met["box on bg found"][1]
    assert met["stroke on bg found"] == (None, True)
    assert not rows[1][3][0][2]
    lines = summarize.scorecard_lines(rows)
    assert lines[2].endswith("| 5 / 10 |") and "**-0.021**" in lines[2]


def test_a_synthetic_set_of_other_shapes_is_a_setting_of_its_own(summarize, tmp_path):
    default = dict(dii_box_target="ellipse", dii_lr=0.1, auc_box=0.97)
    shapes = [("round", 0.99, 0.995), ("elongated", 0.95, 0.96)]
    records = []
    for objects, dice, full in shapes:
        records += [
            _record("dii+dcr", "new", dice, dataset="synthetic", budget="few", objects=objects, **default),
            _record("strong-only", "new", dice - 0.01, dataset="synthetic", budget="few", objects=objects),
            _record("full", "new", full, dataset="synthetic", budget="10pct", objects=objects),
        ]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    groups = summarize.load([path])
    rows = {d: summarize.scorecard(d, runs) for (d, b, _), runs in groups.items() if b == "few"}
    assert sorted(rows) == ["synthetic", "synthetic elongated"]
    for (_, dice, full), name in zip(shapes, ["synthetic", "synthetic elongated"]):
        ((_, _, got, checks),) = rows[name]
        # against its own strong-only run, and the 100% strong run of its own shapes (made at 10pct)
        assert (got, checks[0][1], checks[1][1]) == (dice, 0.01, round(dice - full, 4))
