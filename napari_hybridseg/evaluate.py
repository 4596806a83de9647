"""Dice and IoU of predicted masks against ground truth: foreground vs background, or
per class of a label map and their mean."""

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


def class_dice_iou(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> dict[int, tuple[float, float] | None]:
    """Dice and IoU of every class ``1..n_classes`` of two label maps; ``None`` for a class
    that neither holds (no score, rather than a perfect one that would lift the mean)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    out: dict[int, tuple[float, float] | None] = {}
    for c in range(1, n_classes + 1):
        p, t = pred == c, truth == c
        out[c] = dice_iou(p, t) if p.any() or t.any() else None
    return out


def _index(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: folder not found")
    return {
        strip_suffix(p): p
        for p in sorted(folder.iterdir())
        if p.is_file() and any(p.name.lower().endswith(s) for s in IMAGE_SUFFIXES)
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 6) if values else None


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, classes: list[str] | None = None) -> dict:
    """Per-image and mean Dice/IoU for every ground-truth file that has a prediction.

    With ``classes`` (the names of ids ``1..K``), files are label maps of class ids: each
    class is scored on its own, per image and over the images where it occurs, and
    ``mean`` is the mean over the classes."""
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
        if classes:
            scores = class_dice_iou(pred, truth, len(classes))
            per_image[name] = {
                c: None if v is None else {"dice": round(v[0], 6), "iou": round(v[1], 6)}
                for c, v in zip(classes, scores.values())
            }
            continue
        dice, iou = dice_iou(pred, truth)
        per_image[name] = {"dice": round(dice, 6), "iou": round(iou, 6)}
    if classes:
        per_class = {
            c: {m: _mean(s[c][m] if s[c] else None for s in per_image.values()) for m in ("dice", "iou")}
            for c in classes
        }
        return {
            "images": per_image,
            "classes": per_class,
            "mean": {m: _mean(v[m] for v in per_class.values()) for m in ("dice", "iou")},
            "missing_predictions": sorted(set(truths) - set(preds)),
        }
    return {
        "images": per_image,
        "mean": {
            "dice": round(float(np.mean([v["dice"] for v in per_image.values()])), 6),
            "iou": round(float(np.mean([v["iou"] for v in per_image.values()])), 6),
        },
        "missing_predictions": sorted(set(truths) - set(preds)),
    }


def read_label_table(path: str | Path) -> list[str]:
    """The class names of a 3D Slicer colour table (``labels.ctbl``), ids ``1..K`` in order."""
    names: dict[int, str] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 2 or not parts[0].isdigit():
            raise AnnotationError(f"{path}:{lineno}: expected 'ID NAME R G B A'")
        if int(parts[0]) > 0:
            names[int(parts[0])] = parts[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise AnnotationError(f"{path}: class ids must run 1..K without gaps")
    return [names[k] for k in sorted(names)]
