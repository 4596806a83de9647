"""A small live plot of the training loss terms (QPainter; no plotting library)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

COLORS = {"total": "#f0f0f0", "seg": "#4fc3f7", "cr": "#ffb74d"}


class LossPlot(QWidget):
    """Loss terms against step, log-scaled y axis, redrawn on demand."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.series: dict[str, list[tuple[int, float]]] = {}
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.setToolTip("Training loss (log scale): total, segmentation and co-regularisation terms")

    def clear(self) -> None:
        self.series = {}
        self.update()

    def add(self, step: int, losses: dict) -> None:
        for key, value in losses.items():
            if key in COLORS and value is not None and value > 0 and math.isfinite(value):
                self.series.setdefault(key, []).append((step, float(value)))

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.fillRect(self.rect(), QColor("#262930"))
        left, right, top, bottom = 40, 8, 8, 18
        w, h = self.width() - left - right, self.height() - top - bottom
        p.setPen(QColor("#888888"))
        p.drawRect(left, top, w, h)
        points = [pt for s in self.series.values() for pt in s]
        if len(points) < 2 or w <= 0 or h <= 0:
            p.drawText(self.rect(), Qt.AlignCenter, "loss appears here while training")
            return
        x0, x1 = min(x for x, _ in points), max(x for x, _ in points)
        ys = [math.log10(y) for _, y in points]
        y0, y1 = min(ys), max(ys)
        if y1 - y0 < 1e-6:
            y0, y1 = y0 - 0.5, y1 + 0.5
        x1 = max(x1, x0 + 1)

        def to_px(x: float, y: float) -> QPointF:
            return QPointF(left + (x - x0) / (x1 - x0) * w, top + (1 - (math.log10(y) - y0) / (y1 - y0)) * h)

        p.drawText(2, top + 10, f"{10**y1:.2g}")
        p.drawText(2, top + h, f"{10**y0:.2g}")
        p.drawText(left, self.height() - 4, f"step {x0}")
        p.drawText(left + w - 60, self.height() - 4, f"{x1}")
        legend_x = left + 6
        for key, series in self.series.items():
            pen = QPen(QColor(COLORS[key]))
            pen.setWidthF(1.5)
            p.setPen(pen)
            p.drawPolyline(QPolygonF([to_px(x, y) for x, y in series]))
            p.drawText(legend_x, top + 14, key)
            legend_x += 40
        p.end()
