"""Training configuration: a validated dataclass that serialises to ``config.json``."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .devices import DEVICES
from .errors import ConfigError
from .intensity import SETTINGS as INTENSITIES
from .methods import METHODS

BOX_TARGETS = ("filled", "projection")
GRANULARITIES = ("object", "image")
DII_SPACES = ("centred", "weight", "weight+bias")
DII_BOX_TARGETS = ("filled", "ellipse", "extent", "same")
DII_BOX_EVIDENCE = ("mean", "quantile", "both")
DII_REFERENCES = ("none", "controls")
DII_LOGITS = ("trained", "zero")
NETWORKS = ("auto", "2d", "3d")
PREDICT_WITH = ("mean", "first")
# Settings that reproduce the paper (Pan et al., AAAI 2022, and its authors' code): one
# weight per weak image, filled boxes judged by the loss they train, classifier weights
# only, weights' learning rate 0.1, prediction from the first network
PRESETS = {
    "paper": {
        "method": "dii+dcr",
        "granularity": "image",
        "box_target": "filled",
        "dii_box_target": "same",
        "dii_box_evidence": "mean",
        "dii_space": "weight",
        "dii_reference": "none",
        "dii_logits": "trained",
        "dii_lr": 0.1,
        "lambda_cr": 1.0,
        "cr_rampup": 0.0,
        "predict_with": "first",
    }
}


# Plausible ranges: anything outside is a typo, and some values would exhaust memory
# before a single step.
BOUNDS = {
    "steps": (1, 10**8),
    "batch_size": (1, 512),
    "patch_size": (8, 1024),
    "patch_size_3d": (8, 512),
    "width": (1, 256),
    "depth": (1, 7),
    "lr": (1e-12, 1e38),
    "weight_decay": (0, 1e3),
    "lambda_cr": (0, 1e3),
    "pairwise_weight": (0, 1e3),
    "affinity_threshold": (0, 1),
    "checkpoint_every": (1, 10**8),
    "log_every": (1, 10**8),
    "background_tile": (0, 10**6),
    "dii_box_slack": (0, 10**6),
    "dii_own_quantile": (0, 1),
}
MAX_CHANNELS = 4096
# the field annotations of TrainConfig and the values each admits (bool is no number here)
_TYPES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "int | None": (int, type(None)),
    "float | None": (int, float, type(None)),
}


@dataclass
class TrainConfig:
    """All options of a training run.

    Attributes
    ----------
    method
        ``strong-only`` (weak labels ignored), ``naive`` (weak as strong, weights fixed
        at 1), ``dii`` (one network, learned weights), ``dcr`` (two networks,
        weights fixed at 1), ``dii+dcr`` (two networks, learned weights).
    box_target
        ``projection``: BoxInst-style projection and colour-affinity terms inside each
        box, which place the object without teaching rectangles; ``filled``: the whole
        box is foreground (the paper's choice).
    granularity
        ``object``: one weight per box, per connected scribble stroke and per
        boxed image's background; ``image``: one weight per weak image (the paper).
    background_tile
        With ``object`` granularity, the background of an exhaustively boxed image is
        cut into regions of about this many pixels a side, each with its own weight, so
        that one missed or misplaced object silences only its region (0: one region per
        image; see :mod:`napari_hybridseg.annotations.regions`).  Keep it to a few
        object widths: in a region many times its size, a missed object's disagreement
        is outweighed by the background around it, and the region keeps its weight.
    network, patch_size, patch_size_3d
        ``2d`` trains on 2D images and the slices of volumes, in patches of
        ``patch_size`` pixels a side; ``3d`` on whole volumes, in cubes of
        ``patch_size_3d`` voxels a side, pooling in-plane only while slices are thick
        (see :func:`napari_hybridseg.task.pool_kernels`); ``auto`` (default) picks 2D
        (see BENCHMARKS.md for why).
    intensity
        The normalisation of the images (see :mod:`napari_hybridseg.intensity`):
        ``percentile``, ``zscore`` (MR), ``ct`` (Hounsfield units, clipped and scaled by
        the full masks' foreground), or ``auto`` (default): the project's own setting in
        ``project.json``, else chosen from the images.
    predict_with
        ``mean`` (default): predictions average both networks' probabilities (and their
        disagreement is shown); ``first``: the first network alone, as the paper does.
    dii_space
        Which classifier gradients the weight update compares (see
        :func:`napari_hybridseg.training.dii.gradient_space`): ``centred`` (default),
        ``weight`` or ``weight+bias``.
    dii_box_target
        Which box loss's gradient the weight update compares with the strong data:
        ``filled`` (every box pixel foreground, the paper's target) tests what a box
        asserts, that its pixels are mostly object; ``ellipse`` (default) tests the same
        claim on the ellipse inscribed in the box only, leaving out the corners that a
        tight box around a rounded object gives to the background; ``extent`` tests the
        claim that the object reaches every row and column of the box (the projection
        target's assumption, scored with a log loss; see
        :func:`napari_hybridseg.losses.extent_claim_grad`), which holds for objects of
        any shape, elongated and tilted ones included; ``same`` uses the loss the
        networks train on.  With the projection target the two differ: a projection
        gradient only raises the most object-like pixel of each row and column of the
        box, which agrees with the strong data whether or not the box is right, so a
        box 2-3x too large keeps its weight (see BENCHMARKS.md).
    dii_box_slack
        Pixels a box may leave around its object on each side and still make a tight
        box's claim, with ``dii_box_target="ellipse"``: the ellipse is inscribed in the
        box less that margin (at most a quarter of each side).  0 (default); on thin,
        tilted objects a slack leaves too little of the box to judge (see BENCHMARKS.md).
    dii_box_evidence
        How a box's claimed pixels are summed up: ``mean`` of their evidence;
        ``quantile``, the evidence of the pixel at half the share of a control box's claim
        that its object covers, lowered past a wider margin than other annotations (see
        :mod:`napari_hybridseg.training.box_evidence`); or ``both`` (default), lowered only
        where the mean and the quantile both read it worse than its controls; where boxes
        claim pixels (``controls``, ``projection`` boxes, ``ellipse`` or ``filled``; else
        the mean).
    dii_reference
        What a weak annotation's evidence is measured against (see
        :func:`napari_hybridseg.training.calibration.calibrated`): ``controls``, the
        annotations that the full masks imply (each object's tight box and a stroke
        along its core, the background outside the boxes in regions), scored the same
        way; an annotation is lowered only where it scores clearly worse, per pixel,
        than nearly all of its kind and class (default).  ``none``: the raw
        hypergradient (the paper).
    dii_logits
        The logits at which DII's cross-entropy gradients are taken: ``trained``, the
        classifier's own (the paper), or ``zero`` (default), those of a classifier that
        has not yet fit anything, on the features the networks have learnt.  With ``trained``
        the evidence turns backwards once the networks fit the strong data (its
        gradient is then only the residual errors, whose direction says little about a
        weak annotation); with ``zero`` it asks whether an annotation labels its pixels
        as the full masks label pixels that look alike, at any point of the training.
    dii_own_quantile
        With ``controls``, a group (kind and class) of at least three annotations also
        sets a floor: an annotation is lowered only where it scores worse than this
        quantile of its own group as well (0.5, default: most of a user's annotations
        are taken to be right, so controls that the networks fit better than anything
        unseen cannot switch off all of them); ``None``: the controls alone.
    lambda_cr, cr_rampup
        Weight of the co-regularisation term, and the share of the run over which
        it rises from 0 along ``exp(-5 (1 - t)^2)`` (the ramp-up of Laine and Aila,
        ICLR 2017); 0, the default, applies ``lambda_cr`` from the first step.
        ``None`` (default) picks the weight by the network: the paper's 1 for a 2D
        network, 0.1 for a 3D one (:func:`napari_hybridseg.training.dcr.lambda_cr_for`).
        Trained from a few masked slices, a 3D network at weight 1 lost its smallest
        structures and fell below one trained on the masks alone; at 0.1 it kept more of
        them and stayed above (BENCHMARKS.md, section 6).
    dii_warmup, dii_interval
        Steps before the first weight update and between updates; ``None`` picks
        them from the epoch length (see :func:`napari_hybridseg.training.schedule.plan_dii`).
    dii_lr
        Base learning rate of the weights (Adam, poly decay); ``None`` picks the
        paper's 0.1, or more when the run has too few updates for a weight to reach 0
        (see :func:`napari_hybridseg.training.schedule.dii_learning_rate`).
    """

    method: str = "dii+dcr"
    box_target: str = "projection"
    granularity: str = "object"
    background_tile: int = 48
    steps: int = 600
    batch_size: int = 8
    patch_size: int = 128
    patch_size_3d: int = 64
    network: str = "auto"
    intensity: str = "auto"
    predict_with: str = "mean"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    depth: int = 3
    width: int = 16
    seed: int = 0
    device: str = "auto"
    dii_lr: float | None = None
    dii_warmup: int | None = None
    dii_interval: int | None = None
    dii_space: str = "centred"
    dii_box_target: str = "ellipse"
    dii_box_slack: float = 0.0
    dii_box_evidence: str = "both"
    dii_reference: str = "controls"
    dii_logits: str = "zero"
    dii_own_quantile: float | None = 0.5
    lambda_cr: float | None = None
    cr_rampup: float = 0.0
    pairwise_weight: float = 1.0
    affinity_threshold: float = 0.3
    strong_per_batch: float = 0.25
    checkpoint_every: int = 100
    log_every: int = 10
    augment: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            allowed = _TYPES[f.type]
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                kind = f.type.replace(" | None", " or null")
                raise ConfigError(f"{f.name} must be a {kind}; got {value!r}")

        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

        choice("method", tuple(METHODS))
        choice("box_target", BOX_TARGETS)
        choice("granularity", GRANULARITIES)
        choice("dii_space", DII_SPACES)
        choice("dii_box_target", DII_BOX_TARGETS)
        choice("dii_box_evidence", DII_BOX_EVIDENCE)
        choice("dii_reference", DII_REFERENCES)
        choice("dii_logits", DII_LOGITS)
        choice("network", NETWORKS)
        choice("intensity", INTENSITIES)
        choice("predict_with", PREDICT_WITH)
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be one of {', '.join(DEVICES)} or cuda:N; got {self.device!r}")
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if value is None:  # an optional field left to its rule (its type check above allowed it)
                continue
            if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
                raise ConfigError(f"{name} must be between {low:g} and {high:g}; got {value!r}")
        if self.width * 2**self.depth > MAX_CHANNELS:
            raise ConfigError(
                f"width * 2**depth must be at most {MAX_CHANNELS} (the deepest layer's channels); "
                f"got {self.width} * 2**{self.depth}"
            )
        for name in ("patch_size", "patch_size_3d"):
            side = getattr(self, name)
            if side % (2**self.depth) or side < 2**self.depth * (4 if name == "patch_size" else 2):
                raise ConfigError(
                    f"{name} {side} must be a multiple of 2**depth = {2**self.depth} "
                    f"and at least {2**self.depth * (4 if name == 'patch_size' else 2)}"
                )
        if not 0.0 <= self.cr_rampup <= 1.0:
            raise ConfigError(f"cr_rampup must be in [0, 1]; got {self.cr_rampup}")
        if not 0.0 < self.strong_per_batch <= 1.0:
            raise ConfigError("strong_per_batch must be in (0, 1]")
        for name in ("dii_warmup", "dii_interval"):
            value = getattr(self, name)
            if value is not None and value < (1 if name == "dii_interval" else 0):
                raise ConfigError(f"{name} must be positive; got {value}")
        if self.dii_lr is not None and not (math.isfinite(self.dii_lr) and self.dii_lr > 0):
            raise ConfigError(f"dii_lr must be > 0; got {self.dii_lr}")

    def patch_side(self, spatial_dims: int) -> int:
        """The side of a training patch: ``patch_size`` for 2D samples, ``patch_size_3d``
        for volumes seen by a 3D network."""
        return self.patch_size_3d if spatial_dims == 3 else self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)

    def predictors(self, nets: list) -> list:
        """Of the trained ``nets``, those that predict (see ``predict_with``)."""
        return nets[:1] if self.predict_with == "first" else nets

    def with_preset(self, name: str, keep=()) -> TrainConfig:
        """This config with preset ``name``'s settings (:data:`PRESETS`), except the
        fields named in ``keep`` (options the user gave beside the preset)."""
        if name not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")
        return replace(self, **{k: v for k, v in PRESETS[name].items() if k not in keep})

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        from .atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg})") from None
