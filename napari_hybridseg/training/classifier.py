"""The gradients of the final 1x1 classifier, per instance, that DII's dot products use.

For that layer the gradient of a per-pixel loss is ``dL/dz_p (outer) [f_p, 1]`` (features
``f_p`` and the bias input), so the gradients of all instances are one scatter-add of
per-pixel outer products over the instance-id map.
"""

from __future__ import annotations

import torch


def classifier_grads(features: torch.Tensor, grad_logits: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Per-instance gradients of the 1x1 classifier ``(weight, bias)``.

    Parameters
    ----------
    features
        ``(B, F, *S)`` classifier inputs.
    grad_logits
        ``(B, K, *S)`` derivative of the loss with respect to the logits.
    index
        ``(B, *S)`` long: the instance each pixel's loss belongs to, -1 for none.
    n
        Number of instances.

    Returns
    -------
    ``(n, K * (F + 1))``: row ``k`` is instance ``k``'s gradient, weight ``(K, F)``
    then bias ``(K,)`` per class, i.e. the layout of
    ``torch.cat([W.flatten(1), b[:, None]], 1).flatten()``.
    """
    sel = index >= 0
    f = features.movedim(1, -1)[sel]  # (N, F)
    g = grad_logits.movedim(1, -1)[sel]  # (N, K)
    f = torch.cat([f, f.new_ones(f.shape[0], 1)], dim=1)
    outer = (g[:, :, None] * f[:, None, :]).reshape(f.shape[0], -1)
    out = outer.new_zeros(n, outer.shape[1])
    return out.index_add_(0, index[sel], outer)


def gradient_space(grads: torch.Tensor, n_outputs: int, mode: str, mean_feature: torch.Tensor | None = None):
    """Map gradients from :func:`classifier_grads` into the space the dot products use.

    ``"weight+bias"``: the classifier's weight and bias, as computed.
    ``"weight"``: the weight only.
    ``"centred"``: the weight of the same layer written as ``W (f - mu) + b'`` with
    ``mu`` the mean strong feature, i.e. ``dW - db (outer) mu``.  Features after a
    ReLU are all non-negative, so raw dot products between pixel gradients are
    dominated by how well calibrated the network is overall; centring makes them
    compare what each annotation teaches about pixels that look like its own.
    """
    g = grads.view(grads.shape[0], n_outputs, grads.shape[1] // n_outputs)
    w, b = g[..., :-1], g[..., -1]
    if mode == "weight+bias":
        return grads
    if mode == "weight":
        return w.reshape(grads.shape[0], w.shape[1] * w.shape[2])
    if mode == "centred":
        if mean_feature is None:
            raise ValueError("centred gradients need the mean feature")
        return (w - b[..., None] * mean_feature).reshape(grads.shape[0], w.shape[1] * w.shape[2])
    raise ValueError(f"unknown gradient space {mode!r}")
