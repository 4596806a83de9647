"""Model and checkpoint files, loaded without running code from them.

Both are ``torch.save`` dictionaries of tensors and plain values, read back with
``torch.load(weights_only=True)``: PyTorch's restricted unpickler refuses any
object that could execute code, so a model someone sends cannot run anything.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import atomic_path
from .config import TrainConfig
from .errors import ModelFileError, reason
from .limits import MAX_MODEL_BYTES
from .networks import UNet, model_for
from .task import Task

MODEL_FORMAT = "napari-hybridseg-model"
PACKAGE_ATTACHMENT = "napari-hybridseg-model.pt"  # our model file inside a bioimage.io package
CHECKPOINT_FORMAT = "napari-hybridseg-checkpoint"
VERSION = 1


def save_file(path: str | Path, payload: dict) -> Path:
    """``torch.save`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_file(path: str | Path, expected: str | tuple[str, ...]) -> dict:
    """Load a file of ours safely; raise :class:`ModelFileError` for anything else.

    ``expected``: the format (or formats) accepted; a folder means its ``model.pt`` (or
    ``checkpoint.pt`` when only checkpoints are accepted)."""
    path = Path(path)
    expected = (expected,) if isinstance(expected, str) else tuple(expected)
    if path.is_dir():
        path = path / ("model.pt" if MODEL_FORMAT in expected else "checkpoint.pt")
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    kinds = " or ".join(e.rsplit("-", 1)[-1] for e in expected)
    if not zipfile.is_zipfile(path):  # torch.save writes a zip: an image, a text, a cut-off download
        raise ModelFileError(f"{path}: not a napari-hybridseg {kinds} file (or a damaged one)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure of the restricted unpickler means: not ours, or damaged
        # PyTorch's own message would advise loading it without the restriction
        why = "it holds objects other than tensors and plain values" if "weights_only" in str(exc) else reason(exc)
        raise ModelFileError(f"{path}: not a napari-hybridseg {kinds} file, or damaged ({why[:160]})") from None
    if not isinstance(data, dict) or data.get("format") not in expected:
        raise ModelFileError(f"{path}: not a napari-hybridseg {kinds} file")
    version = data.get("version", 0)
    if not isinstance(version, int):
        raise ModelFileError(f"{path}: damaged file (format version {version!r})")
    if version > VERSION:
        raise ModelFileError(f"{path}: written by a newer napari-hybridseg (format {version})")
    return data


@dataclass
class LoadedModel:
    """A trained model: its networks (in eval mode), training options and task."""

    nets: list[UNet]
    config: TrainConfig
    task: Task

    @property
    def in_channels(self) -> int:
        return self.task.in_channels

    @property
    def predictors(self) -> list[UNet]:
        """The networks that predict: both (their probabilities averaged), or the first
        alone where the model was trained to predict with it (``predict_with="first"``)."""
        return self.config.predictors(self.nets)

    def to(self, device) -> LoadedModel:
        for n in self.nets:
            n.to(device).eval()
        return self


def model_payload(states: list[dict], config: TrainConfig, task: Task) -> dict:
    """A model file's content from the networks' (CPU) state dicts."""
    return {
        "format": MODEL_FORMAT,
        "version": VERSION,
        "config": json.dumps(config.to_dict()),
        "in_channels": int(task.in_channels),
        "task": json.dumps(task.to_dict()),
        "nets": states,
    }


def save_model(path: str | Path, model: LoadedModel) -> Path:
    states = [{k: v.detach().cpu() for k, v in n.state_dict().items()} for n in model.nets]
    return save_file(path, model_payload(states, model.config, model.task))


def _expected_shapes(task: Task, cfg: TrainConfig) -> dict[str, tuple]:
    """Every tensor's shape in the network the config describes, without allocating it."""
    with torch.device("meta"):
        net = UNet(task.in_channels, task.n_outputs, cfg.depth, cfg.width, task.spatial_dims, task.pools or None)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _task_of(data: dict, states: list) -> Task:
    if "task" in data:
        return Task.from_dict(json.loads(data["task"]))
    # files written before tasks were recorded are one class, 2D
    if "in_channels" in data:
        return Task(int(data["in_channels"]))
    return Task(int(states[0]["down.0.0.weight"].shape[1]))


def is_package(path: str | Path) -> bool:
    """Whether ``path`` is a bioimage.io model package (a zip, or a folder with rdf.yaml)."""
    path = Path(path)
    return path.suffix.lower() == ".zip" or (path.is_dir() and (path / "rdf.yaml").is_file())


def _package_model_file(path: Path, folder: Path) -> Path:
    """Our model file inside a bioimage.io package that napari-hybridseg exported (from a
    zip: unpacked into ``folder`` in pieces, after its declared size is checked); a
    one-line refusal for any other package.  Nothing in the package is executed."""
    import yaml

    rdf = None
    try:
        if path.is_dir():
            rdf = yaml.safe_load((path / "rdf.yaml").read_text(encoding="utf-8"))
            _refuse_foreign(path, rdf)
            inner = path / PACKAGE_ATTACHMENT
            if not inner.is_file():
                raise FileNotFoundError(f"no {inner}")
            return inner
        with zipfile.ZipFile(path) as zf:
            rdf = yaml.safe_load(zf.read("rdf.yaml").decode("utf-8"))
            _refuse_foreign(path, rdf)
            info = zf.getinfo(PACKAGE_ATTACHMENT)
            if info.file_size > MAX_MODEL_BYTES:
                raise ModelFileError(
                    f"{path}: its {PACKAGE_ATTACHMENT} declares {info.file_size:,} bytes, larger than "
                    f"any model ({MAX_MODEL_BYTES:,}); not unpacked"
                )
            inner = folder / PACKAGE_ATTACHMENT
            with zf.open(info) as src, open(inner, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            return inner
    except ModelFileError:
        raise
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, yaml.YAMLError) as exc:
        what = "lacks its " + PACKAGE_ATTACHMENT if isinstance(rdf, dict) else "not a bioimage.io model package"
        raise ModelFileError(f"{path}: {what} ({reason(exc)})") from None


def _refuse_foreign(path: Path, rdf) -> None:
    """A one-line refusal for a package napari-hybridseg did not export."""
    if isinstance(rdf, dict) and isinstance(rdf.get("config"), dict) and "napari-hybridseg" in rdf["config"]:
        return
    raise ModelFileError(
        f"{path}: a bioimage.io model that napari-hybridseg did not export; run it with bioimageio.core "
        "or the tool it came from"
    )


def load_model(path: str | Path) -> LoadedModel:
    """Read a model file, the networks of a checkpoint (to continue a run that was cut
    short), or a bioimage.io package that napari-hybridseg exported (its own model file
    inside it; no code from the package runs).  Config, task and weights are checked
    against each other before a network is built, so a small file cannot make it
    allocate a huge one."""
    if is_package(path):
        with tempfile.TemporaryDirectory() as tmp:
            inner = _package_model_file(Path(path), Path(tmp))
            try:
                return load_model(inner)
            except ModelFileError as exc:  # named by the package, not by a file that is gone
                message = str(exc).removeprefix(f"{inner}: ").replace(str(inner), PACKAGE_ATTACHMENT)
                raise ModelFileError(f"{path}: its {PACKAGE_ATTACHMENT}: {message}") from None
    data = load_file(path, (MODEL_FORMAT, CHECKPOINT_FORMAT))
    try:
        cfg = TrainConfig.from_dict(json.loads(data["config"]))
        states = data["nets"]
        if not isinstance(states, list) or not 1 <= len(states) <= 2:
            raise ModelFileError(f"{path}: holds no networks (or more than two)")
        task = _task_of(data, states)
        expected = _expected_shapes(task, cfg)
        for state in states:
            if not isinstance(state, dict) or {k: tuple(v.shape) for k, v in state.items()} != expected:
                raise ModelFileError(f"{path}: the weights do not match the network its config describes")
        nets = []
        for state in states:
            net = model_for(task, cfg)
            net.load_state_dict(state)
            nets.append(net.eval())
    except ModelFileError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise ModelFileError(f"{path}: damaged model file ({reason(exc)})") from None
    return LoadedModel(nets, cfg, task)
