"""The learned weight of every weak instance: the single owner of instance keys,
their values, the optimiser that moves them, pins, and carrying them across edits."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable

import torch

from ..data.targets import InstanceRecord
from ..errors import DivergedError
from ..protocol import InstanceKey, InstanceWeight


def _cell(text: str) -> str:
    """A text cell that a spreadsheet shows as text: a leading ``= + - @`` would start a
    formula, so it gets a ``'`` in front (the usual spreadsheet escape)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class InstanceWeights:
    """``gamma`` in [0, 1] for every weak instance, moved by Adam on ``-g_S . g_k``.

    Instances are addressed by :class:`~napari_hybridseg.protocol.InstanceKey`;
    their row in ``gamma`` is an internal detail.  Pinned instances (the user says
    "trust" or "ignore") keep the pinned value; a pin on a key that is not (yet)
    present waits for it.
    """

    def __init__(self, instances: Iterable[InstanceRecord], device="cpu", pins: dict | None = None) -> None:
        self.records = list(instances)
        self.index = {r.key: i for i, r in enumerate(self.records)}
        self.gamma = torch.nn.Parameter(torch.ones(len(self.records), device=device))
        self.opt = torch.optim.Adam([self.gamma], lr=0.1)
        self.pins: dict[InstanceKey, float] = {}
        self.updates = 0
        for key, value in (pins or {}).items():
            self.pin(key, value)

    def __len__(self) -> int:
        return len(self.records)

    def values(self) -> torch.Tensor:
        return self.gamma.detach()

    def pin(self, key, value: float | None) -> None:
        key = InstanceKey(*key)
        if value is None:
            self.pins.pop(key, None)
            return
        self.pins[key] = float(min(1.0, max(0.0, value)))
        self._apply_pins()

    def _pinned_rows(self) -> dict[int, float]:
        return {self.index[k]: v for k, v in self.pins.items() if k in self.index}

    def _apply_pins(self) -> None:
        with torch.no_grad():
            for row, value in self._pinned_rows().items():
                self.gamma[row] = value

    def step(self, hypergrad: torch.Tensor, lr: float) -> None:
        """One Adam step with ``hypergrad = dL_S/dgamma``, then clamp to [0, 1]."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        grad = hypergrad.detach().to(self.gamma).clone()
        if not torch.isfinite(grad).all():
            raise DivergedError("the weight update is not finite (the networks diverged); lower the learning rate")
        for row in self._pinned_rows():
            grad[row] = 0.0
        self.gamma.grad = grad
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.gamma.clamp_(0.0, 1.0)
        self._apply_pins()
        self.updates += 1

    def carried_to(self, instances: Iterable[InstanceRecord]) -> InstanceWeights:
        """Weights for a new set of instances: an unedited instance (same key and
        signature) keeps its weight, new or edited ones start at 1, pins stay."""
        new = InstanceWeights(instances, self.gamma.device)
        new.pins = dict(self.pins)
        new._carry({r.key: (r.signature, float(g)) for r, g in zip(self.records, self.values().cpu().tolist())})
        new._apply_pins()
        return new

    def _carry(self, previous: dict[InstanceKey, tuple[str, float]]) -> None:
        with torch.no_grad():
            for row, record in enumerate(self.records):
                prev = previous.get(record.key)
                if prev is not None and prev[0] == record.signature:
                    self.gamma[row] = prev[1]

    def table(self) -> list[InstanceWeight]:
        values = self.values().cpu().tolist()
        pinned = self._pinned_rows()
        return [InstanceWeight(r.key, float(values[i]), i in pinned) for i, r in enumerate(self.records)]

    def csv(self) -> str:
        """``weights.csv``: ``image,instance,kind,weight``."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["image", "instance", "kind", "weight"])
        writer.writerows([_cell(w.image), _cell(w.instance), w.kind, f"{w.weight:.6f}"] for w in self.table())
        return out.getvalue()

    # -- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "weights": {"gamma": self.values().clone(), "opt": self.opt.state_dict(), "updates": self.updates},
            "instances": json.dumps([[*r.key, r.signature] for r in self.records]),
            "pins": json.dumps([[*k, v] for k, v in self.pins.items()]),
        }

    def _with_box_classes(self, saved: list[InstanceRecord]) -> list[InstanceRecord]:
        """Box signatures of checkpoints written before they held the class (``z,y0,x0,y1,x1``)
        read as those of the same boxes now, when all else in them agrees."""
        now = {r.key: r.signature for r in self.records}
        out = []
        for r in saved:
            current = now.get(r.key, "")
            old = r.key.kind == "box" and r.signature.count(",") == 4
            out.append(InstanceRecord(r.key, current) if old and current.rsplit(",", 1)[0] == r.signature else r)
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint; if the annotations changed since, carry weights over by key."""
        saved = [InstanceRecord(InstanceKey(*row[:3]), row[3]) for row in json.loads(state["instances"])]
        saved = self._with_box_classes(saved)
        saved_pins = {InstanceKey(*p[:3]): float(p[3]) for p in json.loads(state.get("pins", "[]"))}
        self.pins = {**saved_pins, **self.pins}  # pins given now win over the checkpoint's
        weights = state["weights"]
        if saved == self.records:
            with torch.no_grad():
                self.gamma.copy_(weights["gamma"])
            self.opt.load_state_dict(weights["opt"])
            self.updates = int(weights["updates"])
        else:
            self._carry({r.key: (r.signature, float(g)) for r, g in zip(saved, weights["gamma"].tolist())})
        self._apply_pins()
