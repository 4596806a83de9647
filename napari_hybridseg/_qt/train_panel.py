"""The *Train* panel: method and options, start/pause/stop, progress and the loss curve."""

from __future__ import annotations

import json
import math

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from ..config import DII_BOX_TARGETS, INTENSITIES, NETWORKS, PRESETS, TrainConfig
from ..methods import METHODS
from .loss_plot import LossPlot
from .panels import combo, hrow

AUTO_WEIGHT = -0.1  # the co-regularisation spin box's "auto", one step below 0
SETTINGS_KEY = "train_panel"  # the panel's choices in the QSettings it is given, as JSON


def _value(w):
    if isinstance(w, QComboBox):
        return w.currentText()
    return w.isChecked() if isinstance(w, QCheckBox) else w.value()


def _changed(w):
    """The signal ``w`` emits when the user changes it."""
    if isinstance(w, QComboBox):
        return w.currentTextChanged
    return w.toggled if isinstance(w, QCheckBox) else w.valueChanged


def _set_value(w, value) -> None:
    """Set ``w`` to a remembered ``value``; one of the wrong type, or a choice ``w`` no
    longer offers, leaves it as it is."""
    if isinstance(w, QComboBox):
        if isinstance(value, str) and w.findText(value) >= 0:
            w.setCurrentText(value)
    elif isinstance(w, QCheckBox):
        if isinstance(value, bool):
            w.setChecked(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        # clamped to the spin box's range here: Qt's own clamping comes after a conversion
        # that overflows on a huge value
        w.setValue(type(w.value())(min(max(value, w.minimum()), w.maximum())))


class TrainPanel(QGroupBox):
    """Method, steps, device; start, pause, stop; progress and the loss curve."""

    def __init__(self, parent=None, settings=None) -> None:
        """``settings``: a ``QSettings`` that keeps the panel's choices between sessions
        (restored here, stored on every change); ``None``: the defaults, not kept."""
        super().__init__("2. Train", parent)
        d = TrainConfig()
        self.method = combo(METHODS, d.method, "\n".join(f"{m.name}: {m.description}" for m in METHODS.values()))
        self.box_check = combo(
            DII_BOX_TARGETS,
            d.dii_box_target,
            "How the learned weights judge a box, against the full masks:\n"
            "ellipse: the ellipse inscribed in the box is object (rounded objects: nuclei, cells, lesions)\n"
            "extent: the object reaches every row and column of the box (elongated or tilted objects)\n"
            "filled: the whole box is object (the paper's choice)\n"
            "same: the loss the network learns the box from",
        )
        self.cr_weight = QDoubleSpinBox()
        # its minimum reads "auto": the weight the network calls for (lambda_cr None)
        self.cr_weight.setRange(AUTO_WEIGHT, 10.0)
        self.cr_weight.setSpecialValueText("auto")
        self.cr_weight.setSingleStep(0.1)
        self.cr_weight.setDecimals(2)
        self.cr_weight.setValue(AUTO_WEIGHT if d.lambda_cr is None else d.lambda_cr)
        self.cr_weight.setToolTip(
            "How strongly the two networks of dcr and dii+dcr teach each other (lambda_cr; 1 in the paper).\n"
            "auto: 1 for a 2D network, 0.1 for a 3D one (a 3D network trained on a few masked slices lost\n"
            "its smallest structure at 1). Lower it if a structure vanishes from the predictions while the\n"
            "full masks show it."
        )
        self.paper = QCheckBox("as in the paper")
        self.paper.setToolTip(
            "The paper's settings (Pan et al., AAAI 2022): dii+dcr, one weight per weak image, filled boxes\n"
            "judged by their own loss, classifier weights only at its own logits, weights' learning rate 0.1,\n"
            "prediction from the first network. Off: this tool's defaults (a weight per annotation, judged\n"
            "against the boxes and strokes the full masks imply; boxes that do not teach rectangles; both\n"
            "networks predict)."
        )
        self.paper.toggled.connect(self._paper_toggled)
        self.method.currentTextChanged.connect(self._method_changed)
        self.network = combo(
            NETWORKS, d.network, "2d: images and the slices of volumes; 3d: whole volumes (slower); auto: 2d"
        )
        self.intensity = combo(
            INTENSITIES,
            d.intensity,
            "How image intensities are scaled for the network:\n"
            "percentile: each image from its 1st to 99.8th percentile (microscopy, photographs)\n"
            "zscore: each image to mean 0, spread 1 (MR)\n"
            "ct: Hounsfield units clipped and scaled by the structures in the full masks (CT)\n"
            "auto: ct for scans in Hounsfield units, zscore for other NIfTI scans, else percentile",
        )
        self.steps = QSpinBox()
        self.steps.setRange(10, 1_000_000)
        self.steps.setSingleStep(100)
        self.steps.setValue(d.steps)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device_label = QLabel("")
        self.continue_box = QCheckBox("continue from the current model")
        self.separate_process = QCheckBox("train in a separate process")
        self.separate_process.setChecked(True)
        self.separate_process.setToolTip(
            "A crash or an out-of-memory error of the training then cannot take napari (and your unsaved\n"
            "annotations) down with it. Off: training runs in a thread of napari, which starts a few seconds faster."
        )
        self.live = QCheckBox("live preview every")
        self.live.setChecked(True)
        self.every = QSpinBox()
        self.every.setRange(1, 100_000)
        self.every.setValue(20)
        self.every.setSuffix(" steps")
        self.start_btn = QPushButton("Start")
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setCheckable(True)
        self.stop_btn = QPushButton("Stop")
        self.attach_btn = QPushButton("Attach to run…")
        self.attach_btn.setToolTip(
            "Follow a run training elsewhere (napari-hybridseg train PROJECT --out RUN --follow-project):\n"
            "its loss, weights and previews show here; saved edits, pins, pause and stop reach it"
        )
        self.predict_btn = QPushButton("Predict once")
        self.predict_btn.setToolTip("Predict the visible image with the current model")
        for b in (self.pause_btn, self.stop_btn):
            b.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m steps")
        self.loss_plot = LossPlot()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        form = QFormLayout()
        form.addRow("method", hrow(self.method, self.paper))
        form.addRow("boxes judged by", self.box_check)
        form.addRow("networks teach each other", self.cr_weight)
        form.addRow("network", self.network)
        form.addRow("intensity", self.intensity)
        form.addRow("steps", self.steps)
        form.addRow("device", hrow(self.device, self.device_label))
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(hrow(self.continue_box, self.separate_process))
        lay.addLayout(hrow(self.live, self.every))
        lay.addLayout(hrow(self.start_btn, self.pause_btn, self.stop_btn, self.predict_btn))
        lay.addWidget(self.attach_btn)
        lay.addWidget(self.progress)
        lay.addWidget(self.loss_plot)
        lay.addWidget(self.message)
        self._settings = settings
        if settings is not None:
            self._restore()
            for w in self._remembered().values():
                _changed(w).connect(self._store)

    def _remembered(self) -> dict:
        """The choices kept between sessions, by name; the preset last, so that it holds
        the options it sets when it is on."""
        return {
            "method": self.method,
            "dii_box_target": self.box_check,
            "lambda_cr": self.cr_weight,
            "network": self.network,
            "intensity": self.intensity,
            "steps": self.steps,
            "device": self.device,
            "separate_process": self.separate_process,
            "live": self.live,
            "every": self.every,
            "paper": self.paper,
        }

    def _store(self, *_) -> None:
        state = {name: _value(w) for name, w in self._remembered().items()}
        self._settings.setValue(SETTINGS_KEY, json.dumps(state))
        self._settings.sync()

    def _restore(self) -> None:
        try:
            state = json.loads(self._settings.value(SETTINGS_KEY, "{}") or "{}")
        except (TypeError, ValueError):
            return  # unreadable: the defaults
        if isinstance(state, dict):
            for name, w in self._remembered().items():
                if name in state:
                    _set_value(w, state[name])

    def set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.attach_btn.setEnabled(not running)
        self.pause_btn.setEnabled(running)
        self.stop_btn.setEnabled(running)
        if not running:
            self.pause_btn.setChecked(False)

    def config(self, steps: int | None = None) -> TrainConfig:
        """The training options as set here (``steps``: instead of the spin box's)."""
        cfg = TrainConfig(
            method=self.method.currentText(),
            dii_box_target=self.box_check.currentText(),
            network=self.network.currentText(),
            intensity=self.intensity.currentText(),
            steps=int(steps if steps is not None else self.steps.value()),
            device=self.device.currentText(),
            lambda_cr=None if self.cr_weight.value() < 0 else float(self.cr_weight.value()),
        )
        return cfg.with_preset("paper") if self.paper.isChecked() else cfg

    def _method_changed(self, name: str) -> None:
        """Enable the options that ``name`` uses and the paper's preset leaves free."""
        free = not self.paper.isChecked()
        self.box_check.setEnabled(free and METHODS[name].learns_weights)
        self.cr_weight.setEnabled(free and METHODS[name].co_regularises)

    def _paper_toggled(self, on: bool) -> None:
        """Show the paper's method, box judgement and co-regularisation weight while the
        preset holds them."""
        if on:
            self.method.setCurrentText(PRESETS["paper"]["method"])
            self.box_check.setCurrentText(PRESETS["paper"]["dii_box_target"])
            self.cr_weight.setValue(PRESETS["paper"]["lambda_cr"])
        self.method.setEnabled(not on)
        self._method_changed(self.method.currentText())
