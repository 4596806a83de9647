"""The training engine: hybrid supervision with DII and DCR, as a generator of events.

``Trainer.run()`` yields typed events (:mod:`napari_hybridseg.events`).  Other
threads steer it through thread-safe calls that take effect between steps:
:meth:`Trainer.pause`, :meth:`Trainer.resume`, :meth:`Trainer.stop`,
:meth:`Trainer.update_project`, :meth:`Trainer.pin` and
:meth:`Trainer.request_preview`.  No napari, no Qt.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from . import events as ev
from .annotations import Project
from .atomic import atomic_write_text
from .config import TrainConfig, resolve_device
from .dcr import cross_pseudo_loss, cutmix_masks, mix
from .dii import InstanceWeights, classifier_grads, gradient_space, poly_lr
from .errors import ConfigError, ModelFileError
from .losses import affinity_edges, box_losses, extent_claim_grad, pixel_ce
from .modelfile import CHECKPOINT_FORMAT, VERSION, load_file, load_model, save_file, save_model
from .networks import UNet, create_model
from .predict import predict_slice
from .sampling import Batch, PatchSampler
from .targets import Instance, TrainSlice, build_training_set

DII_TILE = 1024


def _compact_boxes(boxrect: torch.Tensor, box_instance: torch.Tensor):
    """Renumber the boxes present in ``boxrect`` 0..n-1; return (map, n, instance per box)."""
    present = boxrect >= 0
    if not present.any():
        return boxrect, 0, box_instance[:0]
    # a lookup table instead of torch.unique: no sort of every box pixel
    uniq = torch.nonzero(torch.bincount(boxrect[present]))[:, 0]
    table = torch.full((len(box_instance) + 1,), -1, dtype=boxrect.dtype, device=boxrect.device)
    table[uniq] = torch.arange(len(uniq), dtype=boxrect.dtype, device=boxrect.device)
    local = table[boxrect]  # -1 reads the spare last entry, -1
    return local, int(uniq.numel()), box_instance[uniq]


class Trainer:
    """Train one or two U-Nets on a project's strong and weak annotations.

    Parameters
    ----------
    project
        The annotations (strong masks, boxes, scribbles).
    config
        Training options.
    run_dir
        Where the model, ``config.json``, ``metrics.jsonl``, ``weights.csv`` and
        checkpoints go; ``None`` keeps everything in memory.
    resume
        Continue from ``run_dir/checkpoint.pt`` (same networks, optimisers, weights
        and random state; ``config.steps`` is the new total).
    init_model
        Start the networks from a saved model ("continue from the current model").
    """

    def __init__(
        self,
        project: Project,
        config: TrainConfig | None = None,
        run_dir: str | Path | None = None,
        resume: bool = False,
        init_model: str | Path | None = None,
    ) -> None:
        self.cfg = config or TrainConfig()
        self.device = resolve_device(self.cfg.device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.step = 0
        self.elapsed = 0.0
        self._commands: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._preview: tuple[str, int | None] | None = None
        self.preview_every = 0
        self._pins: dict[tuple[str, str, str], float] = {}
        self._edge_cache: dict[tuple[int, int], torch.Tensor] = {}  # (weak slice, tile) -> affinities
        self.tset = build_training_set(project, self.cfg)
        torch.manual_seed(self.cfg.seed)
        n_nets = 2 if self.cfg.uses_dcr else 1
        self.nets: list[UNet] = [
            create_model(self.tset.in_channels, self.cfg.depth, self.cfg.width, seed=self.cfg.seed * 1000 + k).to(
                self.device
            )
            for k in range(n_nets)
        ]
        if init_model is not None:
            self._init_from(init_model)
        self.opt = torch.optim.AdamW(
            [p for n in self.nets for p in n.parameters()], lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )
        self.weights = InstanceWeights(len(self.tset.instances), device=self.device)
        self.rng = np.random.default_rng(self.cfg.seed)
        self._make_sampler()
        self.use_amp = self.device.type == "cuda"
        if resume:
            if self.run_dir is None:
                raise ConfigError("resume needs a run folder")
            self.load_checkpoint(self.run_dir / "checkpoint.pt")

    # -- set-up ---------------------------------------------------------------------------
    def _make_sampler(self) -> None:
        self.sampler = PatchSampler(
            self.tset, self.cfg.patch_size, self.cfg.batch_size, self.cfg.strong_per_batch, self.rng, self.cfg.augment
        )
        self.box_instance = torch.as_tensor(self.tset.box_instance, dtype=torch.long, device=self.device)
        self.dii_schedule = self.cfg.resolved_dii_schedule(self.sampler.steps_per_epoch(), self._amortised_interval())
        self.dii_lr = self.cfg.resolved_dii_lr(*self.dii_schedule)

    def _amortised_interval(self) -> int:
        # One DII update is one forward pass over the weak set (per network); a training
        # step is about three passes (forward and backward) over a batch, six with DCR.
        # Counted in passes, updates get a fifth of the training; counted in seconds
        # (benchmarks/cost.py) that came to 6%, since a step also pays for sampling,
        # augmentation, CutMix and the optimiser.
        weak_px = sum(s.target.size for s in self.tset.weak)
        step_px = 3 * self.cfg.batch_size * self.cfg.patch_size**2 * (2 if self.cfg.uses_dcr else 1)
        return max(1, int(np.ceil(5 * weak_px * len(self.nets) / step_px)))

    def _init_from(self, path: str | Path) -> None:
        model = load_model(path)
        if model.in_channels != self.tset.in_channels:
            raise ModelFileError(
                f"{path}: model expects {model.in_channels} channel(s), the images have {self.tset.in_channels}"
            )
        if (model.config.depth, model.config.width) != (self.cfg.depth, self.cfg.width):
            raise ModelFileError(
                f"{path}: model has depth {model.config.depth}, width {model.config.width}; "
                f"the run asks for {self.cfg.depth}, {self.cfg.width}"
            )
        for k, net in enumerate(self.nets):
            net.load_state_dict(model.nets[k % len(model.nets)].state_dict())

    @property
    def instances(self) -> list[Instance]:
        return self.tset.instances

    # -- thread-safe control --------------------------------------------------------------
    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    def update_project(self, project: Project) -> None:
        """Use new annotations from the next step: new or edited instances start at
        weight 1, removed ones are dropped, pinned weights stay."""
        self._commands.put(("project", project))

    def pin(self, key: tuple[str, str, str], value: float | None) -> None:
        """Fix an instance's weight (1 = trust, 0 = ignore); ``None`` unpins."""
        self._commands.put(("pin", (tuple(key), value)))

    def request_preview(self, image: str | None, z: int | None = None, every: int = 0) -> None:
        """Yield a :class:`PreviewEvent` for ``image`` (slice ``z``) every ``every`` steps
        (0: only once, at the next step)."""
        self._commands.put(("preview", (image, z, every)))

    def _drain_commands(self) -> Iterator:
        while True:
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "project":
                self._swap_project(arg)
                yield ev.AnnotationsUpdatedEvent(self.step, len(self.instances))
                yield self.weights_event()
            elif kind == "pin":
                key, value = arg
                if value is None:
                    self._pins.pop(key, None)
                else:
                    self._pins[key] = float(value)
                self._apply_pins()
                yield self.weights_event()
            elif kind == "preview":
                image, z, every = arg
                self._preview = (image, z) if image is not None else None
                self.preview_every = int(every)
                self._preview_pending = True

    def _apply_pins(self) -> None:
        index = {ins.key: i for i, ins in enumerate(self.instances)}
        self.weights.pinned = {}
        for key, value in self._pins.items():
            if key in index:
                self.weights.pin(index[key], value)

    def _carry_weights(self, previous: dict[tuple[str, str, str], tuple[str, float]]) -> None:
        """Keep the weight of every instance that still exists unedited (same key and
        signature); new or edited instances keep their fresh weight of 1."""
        with torch.no_grad():
            for i, ins in enumerate(self.instances):
                prev = previous.get(ins.key)
                if prev is not None and prev[0] == ins.signature:
                    self.weights.gamma[i] = prev[1]

    def _swap_project(self, project: Project) -> None:
        old = {ins.key: (ins.signature, float(g)) for ins, g in zip(self.instances, self.weights.values().cpu())}
        self.tset = build_training_set(project, self.cfg)
        self._edge_cache.clear()
        self.weights = InstanceWeights(len(self.tset.instances), device=self.device)
        self._carry_weights(old)
        self._apply_pins()
        self._make_sampler()

    # -- outputs --------------------------------------------------------------------------
    def weights_table(self) -> list[ev.InstanceWeight]:
        values = self.weights.values().cpu().tolist()
        return [
            ev.InstanceWeight(ins.image, ins.instance, ins.kind, float(values[i]), i in self.weights.pinned)
            for i, ins in enumerate(self.instances)
        ]

    def weights_event(self) -> ev.WeightsEvent:
        return ev.WeightsEvent(self.step, self.weights_table())

    def write_weights_csv(self, path: str | Path) -> None:
        lines = ["image,instance,kind,weight"]
        lines += [f"{w.image},{w.instance},{w.kind},{w.weight:.6f}" for w in self.weights_table()]
        atomic_write_text(path, "\n".join(lines) + "\n")

    def save_model(self, path: str | Path) -> Path:
        return save_model(path, self.nets, self.cfg, self.tset.in_channels)

    # -- one training step ----------------------------------------------------------------
    def _to(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr).to(self.device, non_blocking=True)

    def _pixel_weights(self, b: Batch, gamma: torch.Tensor):
        inst = self._to(b.instance)
        strong = self._to(b.strong)[:, None, None]
        g_pix = torch.cat([gamma, gamma.new_ones(1)])[inst]  # -1 (no instance) reads the 1
        w_ce = torch.where(strong, torch.ones_like(g_pix), torch.where(inst >= 0, g_pix, torch.zeros_like(g_pix)))
        if not self.cfg.uses_dcr:
            return w_ce, None
        means = []
        for i in b.slice_index:
            own = self.tset.slices[int(i)].image_instances
            means.append(gamma[torch.as_tensor(own, device=self.device)].mean() if own.size else gamma.new_ones(()))
        mean_g = torch.stack(means)[:, None, None]
        w_cr = torch.where(strong, torch.ones_like(g_pix), torch.where(inst >= 0, g_pix, mean_g.expand_as(g_pix)))
        return w_ce, w_cr * self._to(b.valid)

    def train_step(self, b: Batch) -> dict[str, float]:
        cfg = self.cfg
        for n in self.nets:
            n.train()
        x = self._to(b.image)
        t = self._to(b.target)
        gamma = self.weights.values() if cfg.uses_dii else torch.ones_like(self.weights.values())
        w_ce, w_cr = self._pixel_weights(b, gamma)
        boxmap, n_boxes, box_inst = _compact_boxes(self._to(b.boxrect), self.box_instance)
        edges = affinity_edges(x, cfg.affinity_threshold) if n_boxes else None
        n_sup = ((t >= 0) | (boxmap >= 0)).sum().clamp(min=1)
        lr = poly_lr(cfg.lr, self.step, cfg.steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        parts: dict[str, torch.Tensor] = {}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            logits = [n(x) for n in self.nets]
        seg = x.new_zeros(())
        for z in logits:
            z = z.float()
            seg = seg + (w_ce * pixel_ce(z, t)).sum() / n_sup
            if n_boxes:
                seg = seg + (gamma[box_inst] * box_losses(z, boxmap, n_boxes, edges, cfg.pairwise_weight)).sum() / n_sup
        parts["seg"] = seg
        loss = seg
        if cfg.uses_dcr:
            bsz, _, h, w = x.shape
            perm = torch.as_tensor(self.rng.permutation(bsz), device=self.device)
            m = self._to(cutmix_masks(self.rng, bsz, h, w))
            x_mix = mix(x, x[perm], m)
            pseudo = [z.detach().argmax(1) for z in logits]
            pseudo_mix = [mix(p.float(), p[perm].float(), m).round().long() for p in pseudo]
            w_mix = mix(w_cr, w_cr[perm], m)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
                mixed = [n(x_mix) for n in self.nets]
            cr = cross_pseudo_loss(mixed[0].float(), mixed[1].float(), pseudo_mix[0], pseudo_mix[1], w_mix)
            parts["cr"] = cr
            loss = loss + cfg.cr_weight(self.step) * cr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        parts["total"] = loss
        out = {k: float(v.detach()) for k, v in parts.items()}
        out["lr"] = lr
        return out

    # -- DII ------------------------------------------------------------------------------
    def _tiles(self, s: TrainSlice):
        """Full slice in tiles of at most DII_TILE, padded to the network's multiple."""
        m = 2**self.cfg.depth
        h, w = s.target.shape
        for y in range(0, h, DII_TILE):
            for x in range(0, w, DII_TILE):
                sl = (slice(y, y + DII_TILE), slice(x, x + DII_TILE))
                img = s.image[(slice(None), *sl)]
                th, tw = img.shape[-2:]
                ph, pw = -th % m, -tw % m
                pad2 = ((0, ph), (0, pw))
                img = np.pad(img, ((0, 0), *pad2), mode="symmetric") if ph or pw else img
                tgt = np.pad(s.target[sl], pad2, constant_values=-1)
                ins = np.pad(s.instance[sl], pad2, constant_values=-1)
                br = np.pad(s.boxrect[sl], pad2, constant_values=-1) if s.boxrect is not None else None
                core = np.pad(s.boxcore[sl], pad2) if s.boxcore is not None else None
                yield img, tgt, ins, br, core

    @torch.no_grad()
    def _features(self, net: UNet, img: np.ndarray) -> torch.Tensor:
        dtype = net.classifier.weight.dtype
        return net.features(torch.from_numpy(np.ascontiguousarray(img[None])).to(self.device, dtype))

    def strong_gradient(self, net: UNet) -> tuple[torch.Tensor, torch.Tensor]:
        """``g_S``, the gradient of the mean strong cross-entropy w.r.t. the classifier
        (weight and bias), and the mean strong feature."""
        net.eval()
        total = sum(int((s.target >= 0).sum()) for s in self.tset.strong)
        g, fsum = None, None
        for s in self.tset.strong:
            for img, tgt, *_ in self._tiles(s):
                feats = self._features(net, img)
                t = self._to(tgt)[None].long()
                with torch.enable_grad():
                    z = net.classifier(feats).detach().requires_grad_(True)
                    loss = pixel_ce(z, t).sum() / max(total, 1)
                    (grad,) = torch.autograd.grad(loss, z)
                index = torch.where(t >= 0, 0, -1)
                part = classifier_grads(feats, grad, index, 1)[0]
                fpart = feats.permute(0, 2, 3, 1)[t >= 0].sum(0)
                g = part if g is None else g + part
                fsum = fpart if fsum is None else fsum + fpart
        return g, fsum / max(total, 1)

    def _ce_logit_grad(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """d(summed cross-entropy)/dz in closed form: softmax minus one-hot, 0 where ignored."""
        grad = torch.softmax(z, dim=1)
        grad -= torch.nn.functional.one_hot(t.clamp(min=0), grad.shape[1]).permute(0, 3, 1, 2).to(grad)
        return grad * (t >= 0)[:, None]

    def _tile_edges(self, key: tuple[int, int], img: np.ndarray) -> torch.Tensor:
        # colour affinities depend on the image alone: computed once per tile, then reused
        if key not in self._edge_cache:
            edges = affinity_edges(self._to(np.ascontiguousarray(img))[None], self.cfg.affinity_threshold)
            self._edge_cache[key] = edges
        return self._edge_cache[key]

    def weak_gradients(self, net: UNet) -> torch.Tensor:
        """``g_k`` for every weak instance: ``(n_instances, D)``, one forward per tile."""
        net.eval()
        n = len(self.instances)
        out = None
        for si, s in enumerate(self.tset.weak):
            for ti, (img, tgt, ins, br, core) in enumerate(self._tiles(s)):
                feats = self._features(net, img)
                t = self._to(tgt)[None].long()
                inst = self._to(ins)[None].long()
                with torch.no_grad():
                    z = net.classifier(feats)
                grad = self._ce_logit_grad(z, t)
                has_boxes = br is not None and (br >= 0).any()
                if has_boxes and self.cfg.dii_box_target in ("filled", "ellipse"):
                    # what the box asserts: every pixel of it is object (the paper's target),
                    # or, for "ellipse", every pixel but the corners that a tight box around
                    # a rounded object leaves to the background
                    claim = br >= 0 if self.cfg.dii_box_target == "filled" else core
                    grad = grad + self._ce_logit_grad(z, torch.where(self._to(claim)[None], 1, -1))
                elif has_boxes and self.cfg.dii_box_target == "extent":
                    grad = grad + extent_claim_grad(z, self._to(br)[None].long())
                elif has_boxes:
                    boxmap, nb, _ = _compact_boxes(self._to(br)[None].long(), self.box_instance)
                    edges = self._tile_edges((si, ti), img)
                    with torch.enable_grad():
                        zg = z.detach().requires_grad_(True)
                        loss = box_losses(zg, boxmap, nb, edges, self.cfg.pairwise_weight).sum()
                        (box_grad,) = torch.autograd.grad(loss, zg)
                    grad = grad + box_grad
                part = classifier_grads(feats, grad, inst, n)
                out = part if out is None else out + part
        if out is None:
            out = torch.zeros(n, (net.n_features + 1) * 2, device=self.device)
        return out

    def dii_update(self) -> torch.Tensor:
        """One DII step: ``grad(gamma_k) = -g_S . g_k``, averaged over the networks."""
        hyper = torch.zeros(len(self.instances), device=self.device)
        space = self.cfg.dii_space
        for net in self.nets:
            g_s, mean_feature = self.strong_gradient(net)
            g_k = gradient_space(self.weak_gradients(net), 2, space, mean_feature)
            hyper -= g_k @ gradient_space(g_s[None], 2, space, mean_feature)[0]
        hyper /= len(self.nets)
        self.weights.step(hyper, poly_lr(self.dii_lr, self.step, self.cfg.steps))
        return hyper

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": VERSION,
            "step": self.step,
            "elapsed": self.elapsed,
            "config": json.dumps(self.cfg.to_dict()),
            "nets": [{k: v.detach().cpu() for k, v in n.state_dict().items()} for n in self.nets],
            "opt": self.opt.state_dict(),
            "weights": self.weights.state_dict(),
            "instances": json.dumps([[*ins.key, ins.signature] for ins in self.instances]),
            "pins": json.dumps([[*k, v] for k, v in self._pins.items()]),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        path = Path(path) if path is not None else self.run_dir / "checkpoint.pt"
        return save_file(path, self.checkpoint_state())

    def load_checkpoint(self, path: str | Path) -> None:
        data = load_file(path, CHECKPOINT_FORMAT)
        try:
            for net, state in zip(self.nets, data["nets"], strict=True):
                net.load_state_dict(state)
            self.opt.load_state_dict(data["opt"])
            saved = [tuple(k) for k in json.loads(data["instances"])]
            if [(*ins.key, ins.signature) for ins in self.instances] == saved:
                self.weights.load_state_dict(data["weights"])
            else:  # annotations changed since the checkpoint: carry weights over by key
                self._carry_weights({k[:3]: (k[3], float(g)) for k, g in zip(saved, data["weights"]["gamma"].tolist())})
            self._pins = {tuple(p[:3]): float(p[3]) for p in json.loads(data.get("pins", "[]"))}
            self._apply_pins()
            self.rng.bit_generator.state = json.loads(data["numpy_rng"])
            torch.set_rng_state(data["torch_rng"])
            self.step = int(data["step"])
            self.elapsed = float(data.get("elapsed", 0.0))
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ModelFileError(
                f"{path}: checkpoint does not match this run ({str(exc).splitlines()[0][:160]})"
            ) from None

    # -- the loop -------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if self.run_dir is None:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def _prepare_run_dir(self) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.save(self.run_dir / "config.json")
        metrics = self.run_dir / "metrics.jsonl"
        if metrics.exists():  # drop records past the step we resume from
            keep = []
            for line in metrics.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= self.step:
                        keep.append(line)
                except json.JSONDecodeError:
                    continue
            atomic_write_text(metrics, "".join(k + "\n" for k in keep) if self.step else "")

    def _preview_event(self) -> ev.PreviewEvent | None:
        if self._preview is None:
            return None
        name, z = self._preview
        for s in self.tset.slices:
            if s.name == name and (s.z == z or z is None or s.z is None):
                image = s.image
                break
        else:
            image = self._preview_image(name, z)
            if image is None:
                return None
        pred = predict_slice(self.nets, image, device=self.device)
        for n in self.nets:
            n.train()
        return ev.PreviewEvent(self.step, name, z, pred.probability, pred.uncertainty)

    def set_preview_source(self, getter) -> None:
        """``getter(name, z) -> (C, H, W) normalised image or None`` for unannotated images."""
        self._preview_getter = getter

    def _preview_image(self, name, z):
        getter = getattr(self, "_preview_getter", None)
        return getter(name, z) if getter is not None else None

    def run(self) -> Iterator:
        """Train, yielding events; ends with :class:`FinishedEvent` or :class:`ErrorEvent`."""
        cfg = self.cfg
        self._preview_pending = False
        try:
            self._prepare_run_dir()
            yield ev.StartedEvent(
                str(self.device),
                cfg.steps,
                self.step,
                len(self.instances),
                {"strong slices": len(self.tset.strong), "weak slices": len(self.tset.weak)},
                self.dii_schedule if cfg.uses_dii else None,
                self.dii_lr if cfg.uses_dii else None,
            )
            yield self.weights_event()
            t0 = time.perf_counter() - self.elapsed
            warmup, interval = self.dii_schedule
            while self.step < cfg.steps and not self._stop.is_set():
                yield from self._drain_commands()
                if not self._running.is_set():
                    yield ev.PausedEvent(self.step, True)
                    pause_start = time.perf_counter()
                    self._running.wait()
                    t0 += time.perf_counter() - pause_start
                    if self._stop.is_set():
                        break
                    yield ev.PausedEvent(self.step, False)
                    yield from self._drain_commands()
                losses = self.train_step(self.sampler.sample())
                self.step += 1
                self.elapsed = time.perf_counter() - t0
                if cfg.uses_dii and self.step >= warmup and (self.step - warmup) % interval == 0:
                    self.dii_update()
                    yield self.weights_event()
                    if self.run_dir is not None:
                        self.write_weights_csv(self.run_dir / "weights.csv")
                yield ev.StepEvent(self.step, cfg.steps, losses, self.elapsed, losses["lr"])
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(
                        {
                            "step": self.step,
                            **{k: round(v, 6) for k, v in losses.items()},
                            "elapsed": round(self.elapsed, 3),
                        }
                    )
                due = self.preview_every and self.step % self.preview_every == 0
                if self._preview is not None and (due or self._preview_pending):
                    self._preview_pending = False
                    pe = self._preview_event()
                    if pe is not None:
                        yield pe
                if self.run_dir is not None and self.step % cfg.checkpoint_every == 0:
                    yield ev.CheckpointEvent(self.step, str(self.save_checkpoint()))
            if self.run_dir is not None:
                self.save_checkpoint()
                self.save_model(self.run_dir / "model.pt")
                self.write_weights_csv(self.run_dir / "weights.csv")
            yield ev.FinishedEvent(
                self.step, str(self.run_dir) if self.run_dir else None, self._stop.is_set(), self.elapsed
            )
        except Exception as exc:  # surfaced as an event; the last checkpoint stays on disk
            yield ev.ErrorEvent(self.step, f"{type(exc).__name__}: {exc}", traceback.format_exc())
