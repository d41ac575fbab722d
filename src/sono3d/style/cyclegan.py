"""Unpaired style transfer between synthetic and real echo views: CycleGAN (Zhu et al. 2017).

Domains: ``X`` the synthetic views (pseudo-echo or physics B-mode), ``Y`` real echo frames after
sector intake. Two generators ``G: X -> Y`` (``to-real``) and ``F: Y -> X`` (``to-synthetic``),
two discriminators ``D_Y``, ``D_X`` (:mod:`sono3d.style.networks`). Losses, as the paper's:

* least-squares adversarial: ``D`` minimises ``(D(real) - 1)^2 + D(fake)^2`` (halved), the
  generators ``(D(fake) - 1)^2``;
* cycle consistency ``lambda_cycle * (|F(G(x)) - x|_1 + |G(F(y)) - y|_1)`` with ``lambda_cycle = 10``;
* identity ``lambda_identity * lambda_cycle * (|G(y) - y|_1 + |F(x) - x|_1)`` (``0.5``);
* discriminators are shown generated images from a buffer of the last 50 (Shrivastava et al.);
* Adam (``lr = 2e-4``, ``beta1 = 0.5``), constant for the first half of the epochs, then linearly
  decayed to zero.

The sector mask: images are in ``[-1, 1]`` with ``-1`` (black) outside the fan; every generator
output is put back on its input's mask (``where(mask, G(x), -1)``), so only the fan is translated,
and the losses and discriminators never see anything outside it that the generator made. In
training each synthetic image is paired with a real one and both are cut to the intersection of
their fans, so that fan shape and depth (which the generators cannot change) tell the
discriminators nothing.

Two configs: ``paper`` (64 filters, 6 residual blocks at 128 pixels / 9 at 256, whole images,
batch 1, 200 epochs) and ``small`` for two CPU cores (16 generator / 32 discriminator filters,
training on 64x64 crops centred in the fan; the networks are convolutional, so they translate
whole views afterwards at the same pixel size).

Runs are resumable like the heart trainer's: ``RUN_DIR/checkpoint.pt`` (written atomically after
each epoch; only tensors and plain containers, read with ``torch.load(weights_only=True)``) holds
the four networks, both optimizers and schedulers, both image buffers, the history, the config and
what the run was trained on. Every draw depends on ``(seed, epoch)`` only (sample order, crops,
buffer decisions), so a resumed run ends with the same weights as an uninterrupted one. A run
killed before its first checkpoint resumes from its start with the config and seed that its
``train_log.json`` (written before the first epoch) recorded. One process trains into a run
folder at a time (:func:`sono3d.io.lock.writer_lock`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sono3d.errors import FileFormatError, InputError
from sono3d.io.atomic import atomic_path
from sono3d.io.lock import writer_lock
from sono3d.io.testing import kill_point
from sono3d.style.networks import PatchGAN, ResnetGenerator, init_weights

__all__ = ["StyleConfig", "CycleGAN", "ImagePool", "Domain", "train_cyclegan", "check_images", "load_style_run", "StyleRun",
           "translate", "cycle_losses", "CHECKPOINT", "CHECKPOINT_FORMAT", "DIRECTIONS"]

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.json"
CHECKPOINT_FORMAT = "sono3d-cyclegan-run-1"
DIRECTIONS = ("to-real", "to-synthetic")


@dataclass
class StyleConfig:
    """CycleGAN settings; ``preset("small")`` for two CPU cores, ``preset("paper")`` as published.

    Attributes
    ----------
    ngf, ndf : int
        Filters of the generators' and discriminators' first layers.
    n_blocks : int
        Residual blocks per generator (0: 6 below 256 pixels, else 9).
    crop : int
        Side of the square training crops (0: whole images); a multiple of 4.
    batch_size, epochs : int
    steps_per_epoch : int
        Optimisation steps per epoch (0: one pass over the larger domain, as in the paper).
    lr, beta1 : float
        Adam learning rate and first-moment decay.
    lambda_cycle, lambda_identity : float
        Cycle-loss weight, and the identity-loss weight as a fraction of it.
    pool_size : int
        Buffer of generated images shown to the discriminators (0: none).
    decay_start : float
        Fraction of the epochs after which the learning rate decays linearly to zero.
    """

    ngf: int = 16
    ndf: int = 32
    n_blocks: int = 6
    crop: int = 64
    batch_size: int = 1
    epochs: int = 20
    steps_per_epoch: int = 100
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    decay_start: float = 0.5

    @classmethod
    def preset(cls, name: str) -> "StyleConfig":
        presets = {
            "small": cls(),
            "paper": cls(ngf=64, ndf=64, n_blocks=0, crop=0, batch_size=1, epochs=200, steps_per_epoch=0),
            "tiny": cls(ngf=4, ndf=4, n_blocks=1, crop=32, batch_size=2, epochs=2, steps_per_epoch=2),
        }
        if name not in presets:
            raise InputError(f"unknown style config '{name}' (known: small, paper)")
        return presets[name]

    def __post_init__(self) -> None:
        for name in ("ngf", "ndf", "batch_size", "epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v}")
        for name in ("n_blocks", "crop", "steps_per_epoch", "pool_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"{name} must be a non-negative integer, got {v}")
        if self.crop % 4:
            raise InputError(f"crop must be a multiple of 4 pixels, got {self.crop}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.decay_start <= 1:
            raise InputError(f"decay_start must be in [0, 1], got {self.decay_start}")

    def blocks_for(self, size: int) -> int:
        return self.n_blocks or (6 if size < 256 else 9)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Domain:
    """One domain's images: ``images`` ``[N, H, W]`` float32 in [0, 1], ``masks`` ``[N, H, W]`` bool
    (the fan), ``names`` (where each image came from)."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]

    def __post_init__(self) -> None:
        im = np.asarray(self.images)
        if im.ndim != 3 or im.shape[0] == 0:
            raise InputError(f"a domain needs images [N, H, W] with N > 0, got shape {list(im.shape)}")
        if np.asarray(self.masks).shape != im.shape:
            raise InputError(f"masks {list(np.asarray(self.masks).shape)} do not match images {list(im.shape)}")
        if len(self.names) != im.shape[0]:
            raise InputError(f"{len(self.names)} names for {im.shape[0]} images")

    def fingerprint(self) -> str:
        """SHA-1 of the images at 8-bit precision (to check that a resumed run sees the same data)."""
        h = hashlib.sha1()
        h.update(np.asarray(self.images.shape, dtype=np.int64).tobytes())
        h.update(np.round(np.asarray(self.images, dtype=np.float32) * 255).astype(np.uint8).tobytes())
        return h.hexdigest()


class ImagePool:
    """Buffer of generated images (Shrivastava et al. 2017, as CycleGAN uses it).

    Until the buffer is full each image is stored and returned; after that, with probability 1/2 an
    image is returned while a random stored one takes its place in the output, else it passes through.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.images: list[torch.Tensor] = []

    def query(self, batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.size == 0:
            return batch
        out = []
        for img in batch.detach():
            img = img.clone()
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif rng.random() < 0.5:
                k = int(rng.integers(self.size))
                out.append(self.images[k].clone())
                self.images[k] = img
            else:
                out.append(img)
        return torch.stack(out)

    def state(self) -> torch.Tensor:
        return torch.stack(self.images) if self.images else torch.zeros(0)

    def load(self, t: torch.Tensor) -> None:
        self.images = [x.clone() for x in t] if t.numel() else []


class CycleGAN(nn.Module):
    """The four networks: ``g_xy`` (to real), ``g_yx`` (to synthetic), ``d_x``, ``d_y``."""

    def __init__(self, config: StyleConfig, size: int) -> None:
        super().__init__()
        nb = config.blocks_for(size)
        self.g_xy = ResnetGenerator(1, config.ngf, nb)
        self.g_yx = ResnetGenerator(1, config.ngf, nb)
        self.d_x = PatchGAN(1, config.ndf)
        self.d_y = PatchGAN(1, config.ndf)
        init_weights(self)

    @staticmethod
    def masked(gen: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``gen(x)`` inside the fan, black (-1) outside."""
        return torch.where(mask, gen(x), torch.full_like(x, -1.0))


def cycle_losses(model: CycleGAN, x: torch.Tensor, mx: torch.Tensor, y: torch.Tensor, my: torch.Tensor,
                 config: StyleConfig) -> dict[str, torch.Tensor]:
    """Generator losses of one batch (images in [-1, 1], masks bool ``[B, 1, h, w]``).

    Returns a dict with ``total`` (what the generators minimise), ``gan``, ``cycle``,
    ``identity``, and the generated ``fake_y``, ``fake_x`` (for the discriminators).
    """
    fake_y = model.masked(model.g_xy, x, mx)
    fake_x = model.masked(model.g_yx, y, my)
    rec_x = model.masked(model.g_yx, fake_y, mx)
    rec_y = model.masked(model.g_xy, fake_x, my)
    py, px = model.d_y(fake_y), model.d_x(fake_x)
    gan = F.mse_loss(py, torch.ones_like(py)) + F.mse_loss(px, torch.ones_like(px))
    cycle = F.l1_loss(rec_x, x) + F.l1_loss(rec_y, y)
    total = gan + config.lambda_cycle * cycle
    identity = torch.zeros(())
    if config.lambda_identity > 0:
        identity = F.l1_loss(model.masked(model.g_xy, y, my), y) + F.l1_loss(model.masked(model.g_yx, x, mx), x)
        total = total + config.lambda_identity * config.lambda_cycle * identity
    return {"total": total, "gan": gan, "cycle": cycle, "identity": identity, "fake_y": fake_y, "fake_x": fake_x}


def _d_loss(d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    pr, pf = d(real), d(fake.detach())
    return 0.5 * (F.mse_loss(pr, torch.ones_like(pr)) + F.mse_loss(pf, torch.zeros_like(pf)))


def _lr_lambda(config: StyleConfig):  # noqa: ANN202 - a schedule function
    start = int(round(config.decay_start * config.epochs))
    n_decay = config.epochs - start

    def f(epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - start) / float(n_decay + 1)

    return f


def _pair_batch(x_dom: Domain, y_dom: Domain, ix: np.ndarray, iy: np.ndarray, crop: int, rng: np.random.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images of both domains (in [-1, 1]) on one shared mask ``[B, 1, c, c]``.

    Each synthetic image is paired with a real one and both are cut to the pixels inside both fans
    (and cropped at the same place, centred on a random pixel of that intersection): the
    discriminators then cannot tell the domains apart by the fans' shapes or depths, which the
    generators could not change anyway, and would otherwise be pushed to paint over.
    """
    xs, ys, ms = [], [], []
    H, W = x_dom.images.shape[1:]
    for i, j in zip(ix, iy):
        m = x_dom.masks[i] & y_dom.masks[j]
        if not m.any():  # fans that do not overlap (other geometries): each keeps its own
            m = x_dom.masks[i]
        xi, yj = x_dom.images[i], y_dom.images[j]
        if crop and crop < min(H, W):
            rr, cc = np.nonzero(m)
            k = int(rng.integers(len(rr)))
            y0 = int(np.clip(rr[k] - crop // 2, 0, H - crop))
            x0 = int(np.clip(cc[k] - crop // 2, 0, W - crop))
            win = (slice(y0, y0 + crop), slice(x0, x0 + crop))
            m, xi, yj = m[win], xi[win], yj[win]
        xs.append(np.where(m, xi * 2.0 - 1.0, -1.0))
        ys.append(np.where(m, yj * 2.0 - 1.0, -1.0))
        ms.append(m)
    mask = torch.from_numpy(np.stack(ms)[:, None].astype(bool))
    return (torch.from_numpy(np.stack(xs)[:, None].astype(np.float32)),
            torch.from_numpy(np.stack(ys)[:, None].astype(np.float32)), mask)


def check_images(dom: Domain, what: str) -> None:
    """Refuse an image whose fan is empty or of one grey level (nothing to learn a style from)."""
    for i in range(len(dom.images)):
        inside = dom.images[i][dom.masks[i]]
        if inside.size == 0:
            raise InputError(f"{what} image {dom.names[i]}: its sector is empty")
        if np.ptp(inside) == 0:
            raise InputError(f"{what} image {dom.names[i]} is of one value ({float(inside[0]):.3g}) inside its sector")


def _check_size(size: int) -> None:
    if size % 4 or size < 16:
        raise InputError(f"style images must be at least 16 pixels and a multiple of 4, got {size}")


def train_cyclegan(real: Domain, synthetic: Domain, run_dir: str | os.PathLike[str],
                   config: StyleConfig | None = None, seed: int = 0, resume: bool = False,
                   info: dict[str, Any] | None = None, progress: bool = False,
                   stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Train (or resume) a CycleGAN between ``synthetic`` (X) and ``real`` (Y) into ``run_dir``.

    Parameters
    ----------
    real, synthetic : Domain
        Images of one size ``S x S`` (both domains).
    config : StyleConfig, optional
        Ignored on resume except ``epochs`` (which may extend the run).
    info : dict, optional
        Plain data recorded in the checkpoint and ``train_log.json`` (sources, cohort, appearance).
    stop_after_epoch : int, optional
        Stop after checkpointing this (1-based) epoch, as an interruption would.

    Returns
    -------
    dict with ``run_dir``, ``epochs_done``, ``history`` (per epoch: mean ``gan``, ``cycle``,
    ``identity``, ``d`` losses, ``lr``, ``seconds`` of wall time and ``cpu_seconds`` of this process,
    which a busy machine does not inflate), ``seconds``, ``n_real``, ``n_synthetic``.

    Raises
    ------
    InputError
        Images of different or bad sizes, an empty or one-valued fan, a folder that holds a run
        (without ``resume``), ``resume`` with nothing to resume or with other images.
        :class:`~sono3d.errors.BusyError` when another process trains into ``run_dir``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"the seed must be a non-negative integer, got {seed}")
    size = int(real.images.shape[-1])
    if real.images.shape[1:] != (size, size) or synthetic.images.shape[1:] != (size, size):
        raise InputError(f"real images {list(real.images.shape[1:])} and synthetic images "
                         f"{list(synthetic.images.shape[1:])} must be square and of one size")
    _check_size(size)
    for name, dom in (("real", real), ("synthetic", synthetic)):
        check_images(dom, name)
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise InputError(f"{run} exists and is not a folder")
    with writer_lock(run, "run folder"):
        return _train(real, synthetic, run, config, seed, resume, info, progress, stop_after_epoch)


def _started_run(run: Path) -> dict[str, Any] | None:
    """What the ``train_log.json`` of a run killed before its first checkpoint recorded (else ``None``)."""
    try:
        log = json.loads((run / LOG).read_text(encoding="utf-8"))
        return {k: log[k] for k in ("seed", "size", "config", "data", "info")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _train(real: Domain, synthetic: Domain, run: Path, config: StyleConfig | None, seed: int, resume: bool,
           info: dict[str, Any] | None, progress: bool, stop_after_epoch: int | None) -> dict[str, Any]:
    """:func:`train_cyclegan` once the images are checked and the run folder is locked."""
    size = int(real.images.shape[-1])
    ckpt = run / CHECKPOINT
    state = record = None
    if ckpt.is_file():
        if not resume:
            raise InputError(f"{run} already holds a style run; use --resume to continue it or another folder")
        state = record = _read_checkpoint(ckpt)
    elif resume:
        record = _started_run(run)  # killed before its first checkpoint: start again as recorded
        if record is None:
            raise InputError(f"{run}: no checkpoint to resume from")
    if record is not None:
        epochs = config.epochs if config is not None else None
        try:
            config = StyleConfig(**record["config"])
        except TypeError as exc:
            raise InputError(f"{run}: a style run of another sono3d version ({exc})") from None
        if epochs is not None:
            config = replace(config, epochs=epochs)
        seed = int(record["seed"])
        if int(record["size"]) != size:
            raise InputError(f"{run} was trained on {record['size']}-pixel images, these are {size}")
        for name, dom in (("real", real), ("synthetic", synthetic)):
            if record["data"][name]["fingerprint"] != dom.fingerprint():
                raise InputError(f"the {name} images differ from those {run} was trained on; resume with the same "
                                 "REAL sources and cohort")
    config = config or StyleConfig.preset("small")
    if config.crop and config.crop > size:
        config = replace(config, crop=0)

    torch.manual_seed(seed)
    model = CycleGAN(config, size)
    opt_g = torch.optim.Adam(list(model.g_xy.parameters()) + list(model.g_yx.parameters()), lr=config.lr,
                             betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(list(model.d_x.parameters()) + list(model.d_y.parameters()), lr=config.lr,
                             betas=(config.beta1, 0.999))
    sch_g = torch.optim.lr_scheduler.LambdaLR(opt_g, _lr_lambda(config))
    sch_d = torch.optim.lr_scheduler.LambdaLR(opt_d, _lr_lambda(config))
    pool_x, pool_y = ImagePool(config.pool_size), ImagePool(config.pool_size)
    history: list[dict[str, Any]] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        sch_g.load_state_dict(state["sch_g"])
        sch_d.load_state_dict(state["sch_d"])
        # a longer run than first planned: the decay follows the new length
        sch_g.lr_lambdas[0] = sch_d.lr_lambdas[0] = _lr_lambda(config)
        pool_x.load(state["pool_x"])
        pool_y.load(state["pool_y"])
        history = list(state["history"])
        start = int(state["epoch"])
    data_rec = {n: {"n": int(len(d.images)), "fingerprint": d.fingerprint(), "names": list(d.names[:2000])}
                for n, d in (("real", real), ("synthetic", synthetic))}
    info = dict(record["info"]) if record is not None else dict(info or {})
    if state is None:  # what --resume needs if the run dies before its first checkpoint
        run.mkdir(parents=True, exist_ok=True)
        _write_log(run, {"epoch": 0, "seed": int(seed), "size": size, "config": config.to_dict(), "history": [],
                         "info": info, "data": data_rec})

    nx, ny = len(synthetic.images), len(real.images)
    B = config.batch_size
    steps = config.steps_per_epoch or math.ceil(max(nx, ny) / B)
    t_start = time.perf_counter()
    for epoch in range(start, config.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        rng = np.random.default_rng([seed, epoch])
        order_x = np.concatenate([rng.permutation(nx) for _ in range(math.ceil(steps * B / nx))])
        order_y = np.concatenate([rng.permutation(ny) for _ in range(math.ceil(steps * B / ny))])
        sums = {"gan": 0.0, "cycle": 0.0, "identity": 0.0, "d": 0.0}
        model.train()
        for s in range(steps):
            x, y, mx = _pair_batch(synthetic, real, order_x[s * B:(s + 1) * B], order_y[s * B:(s + 1) * B],
                                   config.crop, rng)
            my = mx
            for p in list(model.d_x.parameters()) + list(model.d_y.parameters()):
                p.requires_grad_(False)
            losses = cycle_losses(model, x, mx, y, my, config)
            opt_g.zero_grad(set_to_none=True)
            losses["total"].backward()
            opt_g.step()
            for p in list(model.d_x.parameters()) + list(model.d_y.parameters()):
                p.requires_grad_(True)
            fy = pool_y.query(losses["fake_y"], rng)
            fx = pool_x.query(losses["fake_x"], rng)
            ld = _d_loss(model.d_y, y, fy) + _d_loss(model.d_x, x, fx)
            opt_d.zero_grad(set_to_none=True)
            ld.backward()
            opt_d.step()
            for k in ("gan", "cycle", "identity"):
                sums[k] += float(losses[k].detach())
            sums["d"] += float(ld.detach())
            kill_point("train-step")
        lr = float(opt_g.param_groups[0]["lr"])
        sch_g.step()
        sch_d.step()
        rec = {"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()}, "lr": lr,
               "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
        history.append(rec)
        _write_checkpoint(run, {
            "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "seed": int(seed), "size": size,
            "config": config.to_dict(), "model": model.state_dict(), "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(), "sch_g": sch_g.state_dict(), "sch_d": sch_d.state_dict(),
            "pool_x": pool_x.state(), "pool_y": pool_y.state(), "history": history, "data": data_rec,
            "info": info,
        })
        kill_point("train-epoch")
        if progress:
            print(f"epoch {epoch + 1}/{config.epochs}: gan {rec['gan']:.3f} cycle {rec['cycle']:.3f} "
                  f"identity {rec['identity']:.3f} d {rec['d']:.3f} ({rec['seconds']:.1f} s)", file=sys.stderr,
                  flush=True)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    return {"run_dir": str(run), "epochs_done": history[-1]["epoch"] if history else 0, "history": history,
            "seconds": time.perf_counter() - t_start, "n_real": ny, "n_synthetic": nx, "size": size,
            "steps_per_epoch": steps}


def _write_checkpoint(run: Path, ckpt: dict[str, Any]) -> None:
    with atomic_path(run / CHECKPOINT) as tmp:
        torch.save(ckpt, tmp)
    _write_log(run, ckpt)


def _write_log(run: Path, ckpt: dict[str, Any]) -> None:
    """``train_log.json``: the history, config, seed and data fingerprints, human-readable (atomically)."""
    log = {k: ckpt[k] for k in ("epoch", "seed", "size", "config", "history", "info")}
    log["data"] = {k: {"n": v["n"], "fingerprint": v["fingerprint"]} for k, v in ckpt["data"].items()}
    with atomic_path(run / LOG) as tmp:
        tmp.write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of a corrupt or foreign file
        raise FileFormatError(f"{path}: not a readable checkpoint ({' '.join(str(exc).split())[:100]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a sono3d style (CycleGAN) run checkpoint")
    return state


@dataclass
class StyleRun:
    """A trained CycleGAN in eval mode."""

    model: CycleGAN
    size: int
    epoch: int
    info: dict[str, Any]
    path: Path


def load_style_run(run_dir: str | os.PathLike[str]) -> StyleRun:
    """Load ``RUN_DIR/checkpoint.pt`` (``weights_only=True``); refuses folders of other models."""
    run = Path(run_dir)
    if not run.exists():
        raise InputError(f"{run}: no such style run folder")
    path = run / CHECKPOINT if run.is_dir() else run
    if not path.is_file():
        raise InputError(f"{run}: no {CHECKPOINT} (train a style run into this folder first)")
    state = _read_checkpoint(path)
    try:
        config = StyleConfig(**state["config"])
        model = CycleGAN(config, int(state["size"]))
        model.load_state_dict(state["model"])
    except (TypeError, KeyError, RuntimeError) as exc:
        raise InputError(f"{path}: a network this version of sono3d cannot rebuild ({str(exc)[:80]})") from None
    model.eval()
    return StyleRun(model, int(state["size"]), int(state["epoch"]), dict(state.get("info", {})),
                    run if run.is_dir() else run.parent)


def translate(run: StyleRun, images: np.ndarray, masks: np.ndarray, direction: str = "to-real",
              batch_size: int = 16) -> np.ndarray:
    """Translate images ``[N, H, W]`` (or ``[H, W]``) in [0, 1] inside their fans ``masks``.

    ``to-real`` applies ``G`` (synthetic to real style), ``to-synthetic`` applies ``F``. Pixels
    outside the mask are 0. Raises :class:`InputError` for a size other than the run's.
    """
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    im = np.asarray(images, dtype=np.float32)
    single = im.ndim == 2
    if single:
        im = im[None]
    m = np.asarray(masks, dtype=bool)
    if m.ndim == 2:
        m = np.broadcast_to(m, im.shape)
    if im.ndim != 3 or m.shape != im.shape:
        raise InputError(f"images [N, H, W] and masks of the same shape are needed, got {list(im.shape)} "
                         f"and {list(np.asarray(masks).shape)}")
    if im.shape[1:] != (run.size, run.size):
        raise InputError(f"images of {im.shape[1]}x{im.shape[2]} pixels, but the style run {run.path} was trained "
                         f"on {run.size}x{run.size}")
    gen = run.model.g_xy if direction == "to-real" else run.model.g_yx
    out = np.zeros_like(im)
    with torch.no_grad():
        for s in range(0, len(im), batch_size):
            x = torch.from_numpy(np.where(m[s:s + batch_size], im[s:s + batch_size] * 2 - 1, -1.0)[:, None])
            mk = torch.from_numpy(np.array(m[s:s + batch_size], dtype=bool)[:, None])
            y = CycleGAN.masked(gen, x.float(), mk)
            out[s:s + batch_size] = ((y[:, 0].numpy() + 1.0) / 2.0) * m[s:s + batch_size]
    return np.clip(out[0] if single else out, 0.0, 1.0)
