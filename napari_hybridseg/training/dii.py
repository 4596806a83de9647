"""Dynamic instance indicator (DII): how the weight of each weak annotation moves.

With the inverse Hessian replaced by the identity, the hypergradient of the
strong-set loss with respect to weak instance ``k``'s weight is
``-g_S . g_k`` (Pan et al., AAAI 2022, Algorithm 1), where ``g_S`` is the gradient
of the mean strong loss and ``g_k`` that of instance ``k``'s summed loss, both
taken with respect to the final 1x1 classifier only.  For that layer the
gradient of a per-pixel loss is ``dL/dz_p (outer) [f_p, 1]`` (features ``f_p`` and
the bias input), so ``g_k`` for *all* instances is one scatter-add of per-pixel
outer products over the instance-id map, after one no-grad forward pass.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import TrainConfig
from ..data.targets import TrainingSample, TrainingSet
from ..data.tiling import Tiling
from ..losses import affinity_edges, box_losses, ce_logit_grad, crop_boxes, extent_claim_grad
from .distributed import ALONE, Distributed

DII_TILE = {2: 1024, 3: 128}  # pixels per axis of one no-grad pass, for 2D and 3D samples


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
    g = grads.view(grads.shape[0], n_outputs, -1)
    w, b = g[..., :-1], g[..., -1]
    if mode == "weight+bias":
        return grads
    if mode == "weight":
        return w.reshape(grads.shape[0], -1)
    if mode == "centred":
        if mean_feature is None:
            raise ValueError("centred gradients need the mean feature")
        return (w - b[..., None] * mean_feature).reshape(grads.shape[0], -1)
    raise ValueError(f"unknown gradient space {mode!r}")


class DiiScorer:
    """The hypergradient ``-g_S . g_k`` of every weak instance of a training set.

    Whole samples are passed through the networks in tiles of the one tiler; each
    pixel counts in exactly one tile.  Colour affinities of the weak tiles (used when
    boxes are judged by the training loss) are computed once and kept.
    """

    def __init__(
        self, cfg: TrainConfig, tset: TrainingSet, n_instances: int, multiple: int, device, dist: Distributed = ALONE
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

    def _to(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)

    def _tiles(self, s: TrainingSample):
        """``(tile index, image, target, instance, boxmap, boxcore)`` windows of one
        sample; pixels outside the tile's core are unassigned (-1)."""
        tiling = Tiling(s.spatial_shape, DII_TILE[len(s.spatial_shape)], 0, self.multiple, self.patch_side)
        image = tiling.pad(s.image)
        maps = [tiling.pad(a, -1) if a is not None else None for a in (s.target, s.instance, s.boxmap)]
        core = tiling.pad(s.boxcore, 0) if s.boxcore is not None else None
        for ti, tile in enumerate(tiling.tiles):
            own = np.zeros(tiling.tile_shape, bool)
            own[tile.core_in_window()] = True
            tgt, ins, box = (np.where(own, m[tile.window], -1) if m is not None else None for m in maps)
            yield ti, image[(slice(None), *tile.window)], tgt, ins, box, core[tile.window] if core is not None else None

    @torch.no_grad()
    def _features(self, net, img: np.ndarray) -> torch.Tensor:
        return net.features(self._to(img[None]).to(net.classifier.weight.dtype))

    @torch.no_grad()
    def strong_gradient(self, net) -> tuple[torch.Tensor, torch.Tensor]:
        """``g_S``, the gradient of the mean strong cross-entropy w.r.t. the classifier
        (weight and bias), and the mean strong feature."""
        net.eval()
        total = max(1, sum(int((s.target >= 0).sum()) for s in self.tset.strong))
        dtype = net.classifier.weight.dtype
        g = torch.zeros(net.n_outputs * (net.n_features + 1), device=self.device, dtype=dtype)
        fsum = torch.zeros(net.n_features, device=self.device, dtype=dtype)
        for s in self.dist.shard(self.tset.strong):  # each rank its share; the sums are summed
            for _, img, tgt, *_ in self._tiles(s):
                feats = self._features(net, img)
                t = self._to(tgt)[None].long()
                grad = ce_logit_grad(net.classifier(feats), t) / total
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
            return ce_logit_grad(z, torch.where(claim, self.box_class[br.clamp(min=0)], -1))
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
    def weak_gradients(self, net) -> torch.Tensor:
        """``g_k`` for every weak instance: ``(n_instances, K * (F + 1))``, one forward per tile
        (under several ranks: the part from this rank's share of the weak samples)."""
        net.eval()
        dtype = net.classifier.weight.dtype
        out = torch.zeros(self.n, net.n_outputs * (net.n_features + 1), device=self.device, dtype=dtype)
        for si, s in self.dist.shard(list(enumerate(self.tset.weak))):
            for ti, img, tgt, ins, box, core in self._tiles(s):
                feats = self._features(net, img)
                z = net.classifier(feats)
                grad = ce_logit_grad(z, self._to(tgt)[None].long())
                if box is not None and (box >= 0).any():
                    grad = grad + self._box_claim_grad(si, ti, img, z, box, core)
                out += classifier_grads(feats, grad, self._to(ins)[None].long(), self.n)
        return out

    @torch.no_grad()
    def hypergradient(self, nets) -> torch.Tensor:
        """``dL_S/dgamma_k = -g_S . g_k`` for every weak instance, averaged over the networks."""
        hyper = torch.zeros(self.n, device=self.device)
        space = self.cfg.dii_space
        for net in nets:
            g_s, mean_feature = self.strong_gradient(net)
            g_k = gradient_space(self.weak_gradients(net), net.n_outputs, space, mean_feature)
            hyper -= g_k @ gradient_space(g_s[None], net.n_outputs, space, mean_feature)[0]
        # a dot product is linear: the ranks' parts add up to the whole, identical on every rank
        return self.dist.sum_(hyper) / len(nets)
