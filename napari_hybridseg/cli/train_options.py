"""``napari-hybridseg train``'s options, and the training config they make."""

from __future__ import annotations

from pathlib import Path

from .common import Given, add_max_voxels


def _quantile_or_off(value: str) -> float | None:
    return None if value.strip().lower() in ("off", "none") else float(value)


def add_train(sub) -> None:
    from ..config import (
        BOX_TARGETS,
        DII_BOX_EVIDENCE,
        DII_BOX_TARGETS,
        DII_LOGITS,
        DII_REFERENCES,
        GRANULARITIES,
        INTENSITIES,
        NETWORKS,
        PRESETS,
        TrainConfig,
    )
    from ..methods import METHODS

    d = TrainConfig.__dataclass_fields__
    p = sub.add_parser("train", help="train on a project folder", description="Train on a project folder.")
    p.add_argument("project", type=Path, help="project folder (images/, strong/, boxes/, scribbles/)")
    p.add_argument(
        "--out", type=Path, required=True, help="run folder for model, config.json, metrics.jsonl, weights.csv"
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="paper: the paper's settings (dii+dcr, one weight per weak image, filled boxes judged by their own "
        "loss, classifier weights only, weights' learning rate 0.1, prediction from the first network); options "
        "given beside it win",
    )
    p.add_argument(
        "--method",
        action=Given,
        choices=list(METHODS),
        default=d["method"].default,
        help="dii: learned weight per weak annotation; dcr: two networks teaching each other (default: %(default)s)",
    )
    p.add_argument(
        "--box-target",
        action=Given,
        choices=BOX_TARGETS,
        default=d["box_target"].default,
        help="projection: the object touches every row and column of its box; filled: the box is the mask "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--granularity",
        action=Given,
        choices=GRANULARITIES,
        default=d["granularity"].default,
        help="one weight per annotation (object) or per weak image (default: %(default)s)",
    )
    p.add_argument(
        "--background-tile",
        action=Given,
        type=int,
        default=d["background_tile"].default,
        help="the background of an exhaustively boxed image in regions of about this many pixels a side, each "
        "with its own weight; 0: one region per image (default: %(default)s)",
    )
    p.add_argument(
        "--steps",
        action=Given,
        type=int,
        default=d["steps"].default,
        help="total training steps (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size", action=Given, type=int, default=d["batch_size"].default, help="(default: %(default)s)"
    )
    p.add_argument(
        "--patch-size", action=Given, type=int, default=d["patch_size"].default, help="pixels (default: %(default)s)"
    )
    p.add_argument(
        "--network",
        action=Given,
        choices=NETWORKS,
        default=d["network"].default,
        help="2d: images and the slices of volumes; 3d: whole volumes, pooled in-plane while slices are thick; "
        "auto: 2d (default: %(default)s)",
    )
    p.add_argument(
        "--intensity",
        action=Given,
        choices=INTENSITIES,
        default=d["intensity"].default,
        help="percentile: each image by its percentiles (microscopy); zscore: each image to mean 0, sd 1 (MR); "
        "ct: clipped and scaled by the full masks' foreground (Hounsfield units); auto: project.json's "
        "'intensity', else ct for scans in HU, zscore for other NIfTI, percentile otherwise (default: %(default)s)",
    )
    p.add_argument(
        "--patch-size-3d",
        action=Given,
        type=int,
        default=d["patch_size_3d"].default,
        help="voxels a side of a 3D network's training patch (default: %(default)s)",
    )
    p.add_argument(
        "--width", action=Given, type=int, default=d["width"].default, help="U-Net base channels (default: %(default)s)"
    )
    p.add_argument(
        "--depth", action=Given, type=int, default=d["depth"].default, help="U-Net poolings (default: %(default)s)"
    )
    p.add_argument(
        "--lr", action=Given, type=float, default=d["lr"].default, help="AdamW learning rate (default: %(default)s)"
    )
    p.add_argument(
        "--dii-box-target",
        action=Given,
        choices=DII_BOX_TARGETS,
        default=d["dii_box_target"].default,
        help="how DII judges a box: by the claim that its pixels are object (filled), that the ellipse "
        "inscribed in it is (ellipse), that the object reaches each of its rows and columns (extent), or by "
        "the training loss (same) (default: %(default)s)",
    )
    p.add_argument(
        "--dii-box-slack",
        action=Given,
        type=float,
        default=d["dii_box_slack"].default,
        help="pixels a box may be drawn loose on each side and still be judged as a tight one, with "
        "--dii-box-target ellipse (at most a quarter of the box's side) (default: %(default)s)",
    )
    p.add_argument(
        "--dii-box-evidence",
        action=Given,
        choices=DII_BOX_EVIDENCE,
        default=d["dii_box_evidence"].default,
        help="how a box's claimed pixels are summed up: the mean of their evidence; the evidence at the "
        "quantile of its claim that a tight box's object covers, halved, lowered past a wider margin (quantile); "
        "or a box lowered only where both read it worse than the full masks' boxes (both) (default: %(default)s)",
    )
    p.add_argument(
        "--dii-reference",
        action=Given,
        choices=DII_REFERENCES,
        default=d["dii_reference"].default,
        help="what an annotation's evidence is measured against: the boxes, strokes and background regions "
        "that the full masks imply (controls), or nothing, the raw hypergradient (none) (default: %(default)s)",
    )
    p.add_argument(
        "--dii-logits",
        action=Given,
        choices=DII_LOGITS,
        default=d["dii_logits"].default,
        help="logits at which DII's gradients are taken: zero (a classifier that has fit nothing, on the learnt "
        "features; stays meaningful however well the networks fit) or trained (the paper) (default: %(default)s)",
    )
    p.add_argument(
        "--dii-own-quantile",
        action=Given,
        type=_quantile_or_off,
        default=d["dii_own_quantile"].default,
        help="lower an annotation only where it also scores worse than this quantile of its own kind and "
        "class (0.5: most of your annotations are taken to be right), or off (default: %(default)s)",
    )
    p.add_argument(
        "--lambda-cr",
        action=Given,
        type=float,
        default=d["lambda_cr"].default,
        help="weight of the co-regularisation term, by which the two networks teach each other (dcr, dii+dcr); "
        "lower it if a small structure vanishes from both networks' predictions (default: 1, the paper's, for a "
        "2D network; 0.1 for a 3D one)",
    )
    p.add_argument(
        "--cr-rampup",
        action=Given,
        type=float,
        default=d["cr_rampup"].default,
        help="share of the steps over which the co-regularisation term rises from 0 to --lambda-cr; 0: from "
        "the first step (default: %(default)s)",
    )
    p.add_argument(
        "--dii-warmup",
        action=Given,
        type=int,
        default=None,
        help="steps before the first weight update (default: two epochs, at least a sixth of the run)",
    )
    p.add_argument(
        "--dii-interval",
        action=Given,
        type=int,
        default=None,
        help="steps between weight updates (default: an epoch, longer if updates would take over ~10%% of the time)",
    )
    p.add_argument(
        "--dii-lr",
        action=Given,
        type=float,
        default=None,
        help="base learning rate of the weights (default: 0.1, raised in short runs so that a weight can "
        "fall from 1 to 0 over the scheduled updates)",
    )
    p.add_argument(
        "--device", action=Given, default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"
    )
    p.add_argument("--seed", action=Given, type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--force",
        action="store_true",
        help="write into OUT even if it holds other files or a finished run (they are replaced or kept, never read)",
    )
    p.add_argument("--init-model", type=Path, default=None, help="start from a saved model.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--follow-project",
        action="store_true",
        help="let napari follow this run (Attach to run...): events go to OUT/events.jsonl, annotations saved "
        "into PROJECT reach the run, and OUT/control.json pauses, stops or pins",
    )
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        metavar="N",
        help="train with N processes (one per GPU; gloo on the CPU) through torchrun; the batch is split "
        "between them (default: %(default)s)",
    )
    add_max_voxels(p)


def config_from_args(args, resumed=None):
    """The :class:`~napari_hybridseg.config.TrainConfig` of parsed ``train`` options,
    a preset applied under the options given beside it.  ``resumed``: the config of the
    run being resumed, which the options given on this command line (and a preset) change
    and the others leave as they were."""
    from ..config import TrainConfig

    cfg = TrainConfig(
        method=args.method,
        box_target=args.box_target,
        granularity=args.granularity,
        background_tile=args.background_tile,
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        patch_size_3d=args.patch_size_3d,
        network=args.network,
        intensity=args.intensity,
        width=args.width,
        depth=args.depth,
        lr=args.lr,
        dii_warmup=args.dii_warmup,
        dii_interval=args.dii_interval,
        dii_lr=args.dii_lr,
        dii_box_target=args.dii_box_target,
        dii_box_slack=args.dii_box_slack,
        dii_box_evidence=args.dii_box_evidence,
        dii_reference=args.dii_reference,
        dii_logits=args.dii_logits,
        dii_own_quantile=args.dii_own_quantile,
        lambda_cr=args.lambda_cr,
        cr_rampup=args.cr_rampup,
        device=args.device,
        seed=args.seed,
    )
    given = getattr(args, "given", set())
    if resumed is not None:
        cfg = TrainConfig.from_dict({**resumed.to_dict(), **{k: v for k, v in cfg.to_dict().items() if k in given}})
    return cfg if args.preset is None else cfg.with_preset(args.preset, keep=given)
