"""Losses: per-pixel cross-entropy and the box terms, with per-instance outputs."""

from .box import NEIGHBOURS, affinity_edges, box_losses, crop_boxes, extent_claim_grad, row_nanmedian
from .pixel import ce_logit_grad, pixel_ce

__all__ = [
    "NEIGHBOURS",
    "affinity_edges",
    "box_losses",
    "crop_boxes",
    "ce_logit_grad",
    "extent_claim_grad",
    "pixel_ce",
    "row_nanmedian",
]
