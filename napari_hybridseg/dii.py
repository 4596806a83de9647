"""Dynamic instance indicator (DII): learned weights for weak annotations.

With the inverse Hessian replaced by the identity, the hypergradient of the
strong-set loss with respect to weak instance ``k``'s weight is
``-g_S . g_k`` (Pan et al., AAAI 2022, Algorithm 1), where ``g_S`` is the gradient
of the mean strong loss and ``g_k`` that of instance ``k``'s summed loss, both
taken with respect to the final 1x1 classifier only.  For that layer the
gradient of a per-pixel loss is ``dL/dz_p (outer) [f_p, 1]`` (features ``f_p`` and
the bias input), so ``g_k`` for *all* instances is one scatter-add of per-pixel
outer products over the instance-id map, after one no-grad forward pass.
"""

from __future__ import annotations

import torch

from .config import poly_factor


def classifier_grads(features: torch.Tensor, grad_logits: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Per-instance gradients of the 1x1 classifier ``(weight, bias)``.

    Parameters
    ----------
    features
        ``(B, F, H, W)`` classifier inputs.
    grad_logits
        ``(B, C, H, W)`` derivative of the loss with respect to the logits.
    index
        ``(B, H, W)`` long: the instance each pixel's loss belongs to, -1 for none.
    n
        Number of instances.

    Returns
    -------
    ``(n, C * (F + 1))``: row ``k`` is instance ``k``'s gradient, weight ``(C, F)``
    flattened then bias ``(C,)`` appended per class, i.e. the layout of
    ``torch.cat([W, b[:, None]], 1).flatten()``.
    """
    sel = index >= 0
    f = features.permute(0, 2, 3, 1)[sel]  # (N, F)
    g = grad_logits.permute(0, 2, 3, 1)[sel]  # (N, C)
    f = torch.cat([f, f.new_ones(f.shape[0], 1)], dim=1)
    outer = (g[:, :, None] * f[:, None, :]).reshape(f.shape[0], -1)
    out = outer.new_zeros(n, outer.shape[1])
    return out.index_add_(0, index[sel], outer)


def gradient_space(grads: torch.Tensor, n_classes: int, mode: str, mean_feature: torch.Tensor | None = None):
    """Map gradients from :func:`classifier_grads` into the space the dot products use.

    ``"weight+bias"``: the classifier's weight and bias, as computed.
    ``"weight"``: the weight only.
    ``"centred"``: the weight of the same layer written as ``W (f - mu) + b'`` with
    ``mu`` the mean strong feature, i.e. ``dW - db (outer) mu``.  Features after a
    ReLU are all non-negative, so raw dot products between pixel gradients are
    dominated by how well calibrated the network is overall; centring makes them
    compare what each annotation teaches about pixels that look like its own.
    """
    g = grads.view(grads.shape[0], n_classes, -1)
    w, b = g[..., :-1], g[..., -1]
    if mode == "weight+bias":
        return grads
    if mode == "weight":
        return w.reshape(grads.shape[0], -1)
    if mode == "centred":
        if mean_feature is None:
            raise ValueError("centred gradients need the mean feature")
        return (w - b[..., None] * mean_feature).reshape(grads.shape[0], -1)
    raise ValueError(f"unknown gradient space {mode!r}")


def flat_classifier_grad(classifier: torch.nn.Conv2d) -> torch.Tensor:
    """Autograd's classifier gradient in the layout of :func:`classifier_grads`."""
    w = classifier.weight.grad.flatten(1)
    b = classifier.bias.grad[:, None]
    return torch.cat([w, b], dim=1).flatten()


def poly_lr(base: float, step: int, total: int, power: float = 0.9) -> float:
    """Polynomial decay used for the networks and the weights alike."""
    return base * poly_factor(step, total, power)


class InstanceWeights:
    """The weights ``gamma`` in [0, 1], moved by Adam on ``-g_S . g_k``.

    Pinned instances (the user says "trust" or "ignore") keep their value.
    """

    def __init__(self, n: int, lr: float = 0.1, device="cpu") -> None:
        self.gamma = torch.nn.Parameter(torch.ones(n, device=device))
        self.base_lr = lr
        self.opt = torch.optim.Adam([self.gamma], lr=lr)
        self.pinned: dict[int, float] = {}
        self.updates = 0

    def __len__(self) -> int:
        return self.gamma.numel()

    def values(self) -> torch.Tensor:
        return self.gamma.detach()

    def pin(self, index: int, value: float | None) -> None:
        if value is None:
            self.pinned.pop(index, None)
            return
        self.pinned[index] = float(min(1.0, max(0.0, value)))
        self._apply_pins()

    def _apply_pins(self) -> None:
        with torch.no_grad():
            for k, v in self.pinned.items():
                self.gamma[k] = v

    def step(self, hypergrad: torch.Tensor, lr: float) -> None:
        """One Adam step with ``hypergrad = dL_S/dgamma``, then clamp to [0, 1]."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        grad = hypergrad.detach().to(self.gamma).clone()
        for k in self.pinned:
            grad[k] = 0.0
        self.gamma.grad = grad
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.gamma.clamp_(0.0, 1.0)
        self._apply_pins()
        self.updates += 1

    def state_dict(self) -> dict:
        return {
            "gamma": self.gamma.detach().clone(),
            "opt": self.opt.state_dict(),
            "pinned_index": torch.tensor(list(self.pinned), dtype=torch.long),
            "pinned_value": torch.tensor(list(self.pinned.values()), dtype=torch.float32),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.gamma.copy_(state["gamma"])
        self.opt.load_state_dict(state["opt"])
        self.pinned = {int(k): float(v) for k, v in zip(state["pinned_index"].tolist(), state["pinned_value"].tolist())}
        self.updates = int(state["updates"])
