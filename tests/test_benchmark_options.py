"""``benchmarks/label_efficiency.py --set KEY=VALUE``: options reach TrainConfig with their field's type."""

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def config_options(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "label_efficiency", raising=False)
    import label_efficiency

    return label_efficiency.config_options


def test_set_options_take_their_fields_types(config_options):
    got = config_options(["augment=false", "dii_space=weight", "lambda_cr=0.5", "dii_warmup=20", "background_tile=64"])
    assert got == {"augment": False, "dii_space": "weight", "lambda_cr": 0.5, "dii_warmup": 20, "background_tile": 64}
    assert config_options(["augment=true"]) == {"augment": True}
