"""Dice and IoU of predicted masks against ground truth (foreground vs background)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import AnnotationError
from .images import IMAGE_SUFFIXES, read_image, strip_suffix


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Binary Dice and IoU of ``pred > 0`` against ``truth > 0`` (1.0 when both are empty)."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    inter = np.logical_and(p, t).sum()
    total = p.sum() + t.sum()
    union = np.logical_or(p, t).sum()
    dice = 1.0 if total == 0 else 2.0 * inter / total
    iou = 1.0 if union == 0 else inter / union
    return float(dice), float(iou)


def _index(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: folder not found")
    return {
        strip_suffix(p): p
        for p in sorted(folder.iterdir())
        if p.is_file() and any(p.name.lower().endswith(s) for s in IMAGE_SUFFIXES)
    }


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path) -> dict:
    """Per-image and mean Dice/IoU for every ground-truth file that has a prediction."""
    preds, truths = _index(Path(pred_dir)), _index(Path(gt_dir))
    common = sorted(set(preds) & set(truths))
    if not common:
        raise AnnotationError(f"{pred_dir}: no prediction matches a file name in {gt_dir}")
    per_image = {}
    for name in common:
        pred, _ = read_image(preds[name])
        truth, _ = read_image(truths[name])
        if pred.shape != truth.shape:
            raise AnnotationError(f"{preds[name]}: shape {pred.shape} differs from ground truth {truth.shape}")
        dice, iou = dice_iou(pred, truth)
        per_image[name] = {"dice": round(dice, 6), "iou": round(iou, 6)}
    return {
        "images": per_image,
        "mean": {
            "dice": round(float(np.mean([v["dice"] for v in per_image.values()])), 6),
            "iou": round(float(np.mean([v["iou"] for v in per_image.values()])), 6),
        },
        "missing_predictions": sorted(set(truths) - set(preds)),
    }
