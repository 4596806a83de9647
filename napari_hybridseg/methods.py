"""The training methods, each decided once: what it trains and from which labels.

A method is a :class:`Method` object that the training loop reads; nothing else
tests the method's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Method:
    """Attributes
    ----------
    name
        As in ``config.json`` and ``--method``.
    n_networks
        2 for dynamic co-regularisation (DCR), else 1.
    uses_weak
        Whether boxes and scribbles are trained on at all.
    learns_weights
        Whether the dynamic instance indicator (DII) moves each weak instance's weight;
        otherwise every weight stays 1 (or where the user pinned it).
    """

    name: str
    n_networks: int
    uses_weak: bool
    learns_weights: bool
    description: str

    @property
    def co_regularises(self) -> bool:
        return self.n_networks == 2


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("strong-only", 1, False, False, "full masks only; boxes and scribbles are ignored"),
        Method("naive", 1, True, False, "weak labels used as if they were exact, every weight 1"),
        Method("dii", 1, True, True, "one network, a learned weight per weak annotation"),
        Method("dcr", 2, True, False, "two networks teaching each other, every weight 1"),
        Method("dii+dcr", 2, True, True, "two networks teaching each other, learned weights (recommended)"),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {name!r}") from None
