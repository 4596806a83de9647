"""Per-pixel losses with ``reduction="none"``-style outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per pixel.

    ``logits`` ``(B, K, *S)``, ``target`` ``(B, *S)`` long class ids with -1 ignored;
    returns ``(B, *S)``, 0 where ``target`` is -1.
    """
    loss = F.cross_entropy(logits, target.clamp(min=0), reduction="none")
    return loss * (target >= 0)


def ce_logit_grad(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``d(sum of pixel_ce)/d(logits)`` in closed form: softmax minus one-hot, 0 where ignored."""
    grad = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target.clamp(min=0), grad.shape[1]).movedim(-1, 1).to(grad)
    return (grad - onehot) * (target >= 0).unsqueeze(1)
