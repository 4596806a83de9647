"""`benchmarks/cost.py`: a child process's peak memory is its own, not that of the process
that started it."""

import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_child_peak_is_the_childs_own(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "cost", raising=False)
    import cost

    held = np.ones(600 * 2**20 // 8)  # 600 MiB resident in this process while the child runs
    own, extra = cost.child_peak("x = bytearray(100 * 2**20)\nprint(peak(), len(x) / 2**20)")
    assert held.sum() == held.size
    assert extra == 100
    # an empty interpreter plus the 100 MiB it made; a reading that included this
    # process's peak would be above 600
    assert 100 <= own < 300
