"""Every reader and option, tried with arbitrary input: the answer is a valid result or
one line naming the file (or option) and the problem, never a traceback or a file's bytes.

A new reader or option is added to the lists below and gets the same treatment.
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from napari_hybridseg.annotations import parse_boxes_csv
from napari_hybridseg.annotations.model import label_array
from napari_hybridseg.annotations.project import _read_project_json
from napari_hybridseg.config import TrainConfig
from napari_hybridseg.errors import HybridSegError
from napari_hybridseg.images import READERS, read_image
from napari_hybridseg.modelfile import load_model

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SECRET = b"SECRET-CONTENT-"


def _one_line(exc: BaseException, where: str) -> None:
    message = str(exc)
    assert isinstance(exc, HybridSegError), f"{type(exc).__name__}: {message}"
    assert "\n" not in message and where in message, message
    assert "SECRET" not in message, message


@pytest.mark.parametrize("suffix", sorted(READERS))
@FAST
@given(body=st.binary(max_size=400), header=st.sampled_from([b"", b"II*\x00", b"MM\x00*", b"\x89PNG\r\n\x1a\n"]))
def test_readers_take_any_bytes(tmp_path, suffix, body, header):
    path = tmp_path / f"f{suffix}"
    path.write_bytes(header + SECRET + body)
    try:
        arr, _ = read_image(path)
    except Exception as exc:  # noqa: BLE001 - every failure must be one of ours
        _one_line(exc, path.name)
    else:
        assert isinstance(arr, np.ndarray)


@FAST
@given(text=st.text(max_size=300))
def test_box_files_take_any_text(text):
    try:
        boxes = parse_boxes_csv(text, (40, 50), "boxes/a.csv")
    except Exception as exc:  # noqa: BLE001
        _one_line(exc, "boxes/a.csv")
    else:
        assert all(0 <= b.y0 < b.y1 <= 40 and 0 <= b.x0 < b.x1 <= 50 for b in boxes)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@FAST
@given(
    data=json_values
    | st.builds(lambda c, i, n: {"classes": c, "images": i, "intensity": n}, json_values, json_values, json_values)
)
def test_project_json_takes_any_json(tmp_path, data):
    (tmp_path / "project.json").write_text(json.dumps(data))
    try:
        flags, classes, intensity = _read_project_json(tmp_path)
    except Exception as exc:  # noqa: BLE001
        _one_line(exc, "project.json")
    else:
        assert all(isinstance(v, dict) and isinstance(v.get("exhaustive", True), bool) for v in flags.values())
        assert classes is None or all(name and name == name.strip() for name in classes.names)
        assert intensity in (None, "percentile", "zscore", "ct")


@FAST
@given(
    dtype=st.sampled_from([np.uint8, np.int16, np.uint32, np.int64, np.uint64, np.float32, np.float64, np.bool_]),
    values=st.lists(
        st.integers(-(2**40), 2**40) | st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=6
    ),
)
def test_labels_are_exact_or_refused(dtype, values):
    with np.errstate(all="ignore"):
        arr = np.array(values, dtype=np.float64)
        assume(np.all(np.isnan(arr) | (np.abs(arr) < 2**62)))
        arr = arr.astype(dtype)
    try:
        out = label_array(arr, "strong/a.tif")
    except Exception as exc:  # noqa: BLE001
        _one_line(exc, "strong/a.tif")
    else:
        assert out.dtype == np.int32 and np.array_equal(out.astype(np.float64), arr.astype(np.float64))


numbers = (
    st.integers(-(10**9), 10**9) | st.floats(allow_nan=True, allow_infinity=True) | st.none() | st.text(max_size=5)
)


@FAST
@given(changes=st.dictionaries(st.sampled_from(sorted(TrainConfig.__dataclass_fields__)), numbers, max_size=4))
def test_options_are_valid_or_refused_in_one_line(changes):
    try:
        cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **changes})
    except Exception as exc:  # noqa: BLE001
        _one_line(exc, "")
    else:
        assert cfg.width * 2**cfg.depth <= 4096 and 1 <= cfg.batch_size <= 512


@FAST
@given(
    payload=st.dictionaries(
        st.sampled_from(["format", "version", "config", "in_channels", "task", "nets"]), json_values
    )
)
def test_model_files_take_any_content(tmp_path, payload):
    import torch

    payload = {"format": "napari-hybridseg-model", **payload}
    path = tmp_path / "m.pt"
    torch.save(payload, path)
    try:
        load_model(path)
    except Exception as exc:  # noqa: BLE001
        _one_line(exc, "m.pt")


def test_a_model_file_with_a_number_too_large_is_refused_in_one_line(tmp_path):
    """JSON reads 1e400 as infinity, which no count can be."""
    import torch

    task = '{"in_channels": 1, "n_classes": 1e400, "spatial_dims": 2}'
    torch.save(
        {"format": "napari-hybridseg-model", "version": 1, "config": "{}", "task": task, "nets": [{}]},
        tmp_path / "m.pt",
    )
    with pytest.raises(Exception) as caught:
        load_model(tmp_path / "m.pt")
    _one_line(caught.value, "m.pt")
