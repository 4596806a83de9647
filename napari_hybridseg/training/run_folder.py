"""The run folder: ``config.json``, ``metrics.jsonl``, ``weights.csv``, ``checkpoint.pt``
and ``model.pt``, each written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_write_text
from ..config import TrainConfig
from ..modelfile import CHECKPOINT_FORMAT, VERSION, load_file, model_payload, save_file
from ..task import Task


class RunFolder:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    def prepare(self, config: TrainConfig, step: int) -> None:
        """Create the folder, write ``config.json`` and drop metrics past ``step``."""
        self.root.mkdir(parents=True, exist_ok=True)
        config.save(self.root / "config.json")
        if not self.metrics.exists():
            return
        keep = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
        atomic_write_text(self.metrics, "".join(k + "\n" for k in keep) if step else "")

    def log(self, record: dict) -> None:
        with open(self.metrics, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def write_weights(self, csv_text: str) -> None:
        atomic_write_text(self.root / "weights.csv", csv_text)

    def save_checkpoint(self, config: TrainConfig, *parts: dict) -> Path:
        payload = {"format": CHECKPOINT_FORMAT, "version": VERSION, "config": json.dumps(config.to_dict())}
        for part in parts:
            payload.update(part)
        return save_file(self.checkpoint, payload)

    def load_checkpoint(self) -> dict:
        return load_file(self.checkpoint, CHECKPOINT_FORMAT)

    def save_model(self, states: list[dict], config: TrainConfig, task: Task) -> Path:
        return save_file(self.model, model_payload(states, config, task))
