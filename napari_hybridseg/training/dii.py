"""Dynamic instance indicator (DII): how the weight of each weak annotation moves.

With the inverse Hessian replaced by the identity, the hypergradient of the
strong-set loss with respect to weak instance ``k``'s weight is
``-g_S . g_k`` (Pan et al., AAAI 2022, Algorithm 1), where ``g_S`` is the gradient
of the mean strong loss and ``g_k`` that of instance ``k``'s summed loss, both
taken with respect to the final 1x1 classifier only.  For that layer the
gradient of a per-pixel loss is ``dL/dz_p (outer) [f_p, 1]`` (features ``f_p`` and
the bias input), so ``g_k`` for *all* instances is one scatter-add of per-pixel
outer products over the instance-id map, after one no-grad forward pass.

Two departures from the paper, both defaults (see ``TrainConfig``): the cross-entropy
gradients are taken at zero logits (``dii_logits``), so that the evidence does not turn
backwards once the classifier has fit the full masks, and a weak instance's score per
pixel is measured against controls, the annotations the full masks imply
(``dii_reference``, :mod:`napari_hybridseg.data.controls`,
:func:`napari_hybridseg.training.calibration.calibrated`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import TrainConfig
from ..data.controls import build_controls
from ..data.targets import TrainingSample, TrainingSet
from ..data.tiling import Tiling
from ..losses import affinity_edges, box_losses, ce_logit_grad, crop_boxes, extent_claim_grad
from .box_evidence import (
    BOX_MARGIN,
    ClaimPixels,
    at_quantile,
    box_quantiles,
    claim_mask,
    claim_shares,
    quantile_evidence,
)
from .calibration import calibrated, instance_groups
from .classifier import classifier_grads, gradient_space
from .distributed import ALONE, Distributed

DII_TILE = {2: 1024, 3: 128}  # pixels per axis of one no-grad pass, for 2D and 3D samples


def _mean_where_any(acc: torch.Tensor) -> torch.Tensor:
    """``acc[0] / acc[1]`` where ``acc[1] > 0``, NaN elsewhere."""
    return torch.where(acc[1] > 0, acc[0] / acc[1].clamp(min=1), torch.full_like(acc[0], float("nan")))


def _pixel_counts(tset: TrainingSet, n: int) -> np.ndarray:
    """Pixels of every weak instance."""
    counts = np.zeros(n, np.float32)
    for s in tset.weak:
        ins = s.instance[s.instance >= 0]
        counts += np.bincount(ins, minlength=n)[:n]
    return counts


class DiiScorer:
    """The hypergradient ``-g_S . g_k`` of every weak instance of a training set.

    Whole samples are passed through the networks in tiles of the one tiler; each
    pixel counts in exactly one tile.  Colour affinities of the weak tiles (used when
    boxes are judged by the training loss) are computed once and kept.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        tset: TrainingSet,
        n_instances: int,
        multiple: int,
        device,
        dist: Distributed = ALONE,
        controls: bool = True,
    ) -> None:
        self.cfg = cfg
        self.dist = dist
        self.tset = tset
        self.n = n_instances
        self.multiple = multiple
        # tiles pad a narrow image as the patch sampler does, so g_k sees the training layout
        self.patch_side = cfg.patch_side(tset.task.spatial_dims)
        self.device = torch.device(device)
        self.box_instance = self._to(tset.box_instance).long()
        self.box_class = self._to(tset.box_class).long()
        self._edges: dict[tuple[int, int], torch.Tensor] = {}
        self.pixels = torch.from_numpy(_pixel_counts(tset, n_instances)).to(self.device).clamp(min=1)
        self.groups = instance_groups(tset, n_instances)
        self.strong_pixels = max(1, sum(int((s.target >= 0).sum()) for s in tset.strong))
        self.controls = control_scorer = None
        if controls and cfg.dii_reference == "controls" and cfg.granularity == "object":
            self.controls = build_controls(tset, cfg, cfg.dii_box_target == "ellipse")
        if self.controls is not None:
            ctrl = self.controls.tset
            control_scorer = DiiScorer(cfg, ctrl, len(ctrl.instances), multiple, device, dist, controls=False)
        self.control_scorer = control_scorer
        # dii_box_evidence "quantile" or "both": per instance, the quantile of its claim that scores a box
        self.box_q = None
        pixel_claims = cfg.box_target == "projection" and cfg.dii_box_target in ("ellipse", "filled")
        if control_scorer is not None and cfg.dii_box_evidence != "mean" and pixel_claims:
            ctrl = self.controls.tset
            shares = claim_shares(ctrl.weak, self.controls.strong_targets, ctrl.box_instance, ctrl.box_class)
            self.box_q, control_scorer.box_q = (box_quantiles(sc, shares) for sc in (self, control_scorer))
        self.box_margin = BOX_MARGIN if self.box_q is not None else None  # box groups' margin, if not the rule's

    def _to(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)

    def _tiles(self, s: TrainingSample, extra: np.ndarray | None = None):
        """``(tile index, image, target, instance, boxmap, boxcore, extra)`` windows of one
        sample; pixels outside the tile's core are unassigned (-1).  ``extra`` is one more
        label map windowed like the target (a control's full-mask target)."""
        tiling = Tiling(s.spatial_shape, DII_TILE[len(s.spatial_shape)], 0, self.multiple, self.patch_side)
        image = tiling.pad(s.image)
        maps = [tiling.pad(a, -1) if a is not None else None for a in (s.target, s.instance, s.boxmap, extra)]
        core = tiling.pad(s.boxcore, 0) if s.boxcore is not None else None
        for ti, tile in enumerate(tiling.tiles):
            own = np.zeros(tiling.tile_shape, bool)
            own[tile.core_in_window()] = True
            tgt, ins, box, ext = (np.where(own, m[tile.window], -1) if m is not None else None for m in maps)
            img = image[(slice(None), *tile.window)]
            yield ti, img, tgt, ins, box, core[tile.window] if core is not None else None, ext

    def _judged(self, z: torch.Tensor) -> torch.Tensor:
        """The logits at which cross-entropy gradients are taken (``dii_logits``): the
        classifier's own, or zero, i.e. the gradients of a classifier that has not yet
        fit anything, on the features the networks have learnt."""
        return torch.zeros_like(z) if self.cfg.dii_logits == "zero" else z

    @torch.no_grad()
    def _features(self, net, img: np.ndarray) -> torch.Tensor:
        return net.features(self._to(img[None]).to(net.classifier.weight.dtype))

    @torch.no_grad()
    def strong_gradient(self, net) -> tuple[torch.Tensor, torch.Tensor]:
        """``g_S``, the gradient of the mean strong cross-entropy w.r.t. the classifier
        (weight and bias), and the mean strong feature."""
        net.eval()
        total = self.strong_pixels
        dtype = net.classifier.weight.dtype
        g = torch.zeros(net.n_outputs * (net.n_features + 1), device=self.device, dtype=dtype)
        fsum = torch.zeros(net.n_features, device=self.device, dtype=dtype)
        for s in self.dist.shard(self.tset.strong):  # each rank its share; the sums are summed
            for _, img, tgt, *_ in self._tiles(s):
                feats = self._features(net, img)
                t = self._to(tgt)[None].long()
                grad = ce_logit_grad(self._judged(net.classifier(feats)), t) / total
                g += classifier_grads(feats, grad, torch.where(t >= 0, 0, -1), 1)[0]
                fsum += feats.movedim(1, -1)[t >= 0].sum(0)
        return self.dist.sum_(g), self.dist.sum_(fsum) / total

    def _box_claim_grad(self, si: int, ti: int, img, z: torch.Tensor, boxmap: np.ndarray, core) -> torch.Tensor:
        """The gradient of what the boxes of one tile assert, per ``dii_box_target``."""
        how = self.cfg.dii_box_target
        br = self._to(boxmap)[None].long()
        if how in ("filled", "ellipse"):
            # what the box asserts: every pixel of it is its class (the paper's target), or,
            # for "ellipse", every pixel but the corners that a tight box around a rounded
            # object leaves to the background
            claim = br >= 0 if how == "filled" else self._to(core)[None] & (br >= 0)
            return ce_logit_grad(self._judged(z), torch.where(claim, self.box_class[br.clamp(min=0)], -1))
        if how == "extent":
            return extent_claim_grad(z, br, self.box_class)
        # "same": the loss the networks train on
        if (si, ti) not in self._edges:
            self._edges[(si, ti)] = affinity_edges(self._to(img)[None], self.cfg.affinity_threshold)
        local, n_boxes, _, cls = crop_boxes(br, self.box_instance, self.box_class)
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            loss = box_losses(zg, local, n_boxes, self._edges[(si, ti)], self.cfg.pairwise_weight, cls).sum()
            (grad,) = torch.autograd.grad(loss, zg)
        return grad

    @torch.no_grad()
    def weak_gradients(self, net, own_targets: list[np.ndarray] | None = None, claims=None, mean_feature=None):
        """``g_k`` for every weak instance: ``(n_instances, K * (F + 1))``, one forward per tile
        (under several ranks: the part from this rank's share of the weak samples).

        With ``own_targets`` (one label map per weak sample: controls' full masks), also
        the unnormalised strong-loss gradient over each instance's own pixels.  With
        ``claims`` (a :class:`ClaimPixels`), the boxes' claimed pixels are kept in it, in
        the layout of ``dii_space`` (``mean_feature`` for ``centred``)."""
        net.eval()
        dtype = net.classifier.weight.dtype
        size = (self.n, net.n_outputs * (net.n_features + 1))
        out = torch.zeros(size, device=self.device, dtype=dtype)
        own = torch.zeros(size, device=self.device, dtype=dtype) if own_targets is not None else None
        extras = own_targets or [None] * len(self.tset.weak)
        for si, (s, extra) in self.dist.shard(list(enumerate(zip(self.tset.weak, extras)))):
            for ti, img, tgt, ins, box, core, ext in self._tiles(s, extra):
                feats = self._features(net, img)
                z = net.classifier(feats)
                grad = ce_logit_grad(self._judged(z), self._to(tgt)[None].long())
                if box is not None and (box >= 0).any():
                    grad = grad + self._box_claim_grad(si, ti, img, z, box, core)
                index = self._to(ins)[None].long()
                out += classifier_grads(feats, grad, index, self.n)
                if claims is not None and box is not None:
                    claim = self._to(claim_mask(box, core, ins))[None]
                    claims.add(claim, index, feats, grad, self.cfg.dii_space, mean_feature)
                if own is not None:
                    own_grad = ce_logit_grad(self._judged(z), self._to(ext)[None].long())
                    own += classifier_grads(feats, own_grad, index, self.n)
        return out if own is None else (out, own)

    @torch.no_grad()
    def _evidence(self, nets):
        """``-g_S . g_k`` summed over each weak instance's pixels, averaged over the
        networks, and the same for the controls (``None`` without them).  A control is
        compared with the strong gradient less its own pixels' part, which it would
        otherwise agree with by construction.  With ``box_q``, also each box's (and
        control box's) evidence at that quantile of its claimed pixels (NaN for others;
        ``box_q`` of shape ``(n, m)``: at each of ``m`` quantiles)."""
        weak = torch.zeros(self.n, device=self.device)
        ctrl = torch.zeros(self.control_scorer.n, device=self.device) if self.control_scorer else None
        space, quantiles = self.cfg.dii_space, self.box_q is not None
        # per box: the summed quantile evidence over the networks, and how many gave one
        scorers = (self, self.control_scorer)
        at_q = [torch.zeros(2, *sc.box_q.shape, device=self.device) if quantiles else None for sc in scorers]
        for net in nets:
            g_s, mean_feature = self.strong_gradient(net)

            def mapped(g, net=net, mean_feature=mean_feature):
                return gradient_space(g, net.n_outputs, space, mean_feature)

            g_s = mapped(g_s[None])
            k = net.n_outputs
            # the weak boxes' pixels are read against g_S as they come; the controls' need their own part
            claims = [ClaimPixels(towards=g_s[0].view(k, -1)), ClaimPixels()] if quantiles else [None, None]
            weak -= mapped(self.weak_gradients(net, None, claims[0], mean_feature)) @ g_s[0]
            if ctrl is not None:
                targets = self.controls.strong_targets
                g_c, own = self.control_scorer.weak_gradients(net, targets, claims[1], mean_feature)
                towards_ctrl = g_s - mapped(own) / self.strong_pixels
                ctrl -= (mapped(g_c) * towards_ctrl).sum(1)
            if quantiles:
                towards = (g_s[0].view(k, -1), towards_ctrl.view(len(towards_ctrl), k, -1))
                for acc, c, q, t in zip(at_q, claims, (self.box_q, self.control_scorer.box_q), towards):
                    value = quantile_evidence(*c.evidence(t), q)
                    acc += torch.stack([value.nan_to_num(0.0), (~value.isnan()).to(value)])
        # a dot product is linear: the ranks' parts add up to the whole, identical on every rank
        weak = self.dist.sum_(weak) / len(nets)
        ctrl = self.dist.sum_(ctrl) / len(nets) if ctrl is not None else None
        # each box lies in one rank's share: summed, the others add nothing
        at_q = [None if a is None else _mean_where_any(self.dist.sum_(a)) for a in at_q]
        return weak, ctrl, *at_q

    def _dot_products(self, nets) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The sums of :meth:`_evidence` (weak, controls)."""
        return self._evidence(nets)[:2]

    def per_pixel(self, nets):
        """``(weak, controls, weak at box_q, controls at box_q)``: :meth:`_evidence` with the
        sums per pixel of each instance (the last two ``None`` without ``box_q``)."""
        weak, ctrl, weak_q, ctrl_q = self._evidence(nets)
        ctrl = ctrl / self.control_scorer.pixels if ctrl is not None else None
        return weak / self.pixels, ctrl, weak_q, ctrl_q

    def scores(self, nets) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`per_pixel` (weak, controls); with ``dii_box_evidence="quantile"``, a box's
        is that of its claim's pixel at ``box_q``."""
        weak, ctrl, weak_q, ctrl_q = self.per_pixel(nets)
        if weak_q is not None and self.cfg.dii_box_evidence == "quantile":
            return at_quantile(weak, weak_q), at_quantile(ctrl, ctrl_q)
        return weak, ctrl

    def judged(self, weak, ctrl, weak_q=None, ctrl_q=None) -> torch.Tensor:
        """Per-pixel scores measured against the controls' (:func:`calibrated`): a box's
        by the mean, by its claim's pixel at ``box_q`` (``weak_q``, ``ctrl_q``; past
        ``box_margin``), or, with ``dii_box_evidence="both"``, the lower of the two."""
        how = self.cfg.dii_box_evidence

        def rule(w, c, **margins):
            return calibrated(w, self.groups, c, self.control_scorer.groups, own=self.cfg.dii_own_quantile, **margins)

        if weak_q is None or how == "mean":
            return rule(weak, ctrl)
        by_quantile = rule(at_quantile(weak, weak_q), at_quantile(ctrl, ctrl_q), box_margin=self.box_margin)
        return by_quantile if how == "quantile" else torch.minimum(rule(weak, ctrl), by_quantile)

    def hypergradient(self, nets) -> torch.Tensor:
        """``dL_S/dgamma_k = -g_S . g_k`` for every weak instance; with controls
        (``dii_reference``), its score per pixel measured against its controls' (:meth:`judged`)."""
        if self.control_scorer is None:
            return self._dot_products(nets)[0]
        return self.judged(*self.per_pixel(nets))
