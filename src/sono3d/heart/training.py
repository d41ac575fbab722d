"""Training of S2MNet and of the voxel baseline, with exact resume.

``train(cohort_dir, run_dir, model_kind, config, seed, resume, device)`` writes into ``run_dir``:

* ``split.json``: the 80/10/10 split by case (from ``seed``);
* ``checkpoint.pt``: after every epoch, atomically: model, optimizer, LR schedule, epoch, the
  training and network configs, the model's kind and geometry, the template's record and the loss
  history (the format: :mod:`sono3d.heart.checkpoint`);
* ``train_log.json``: the history, human-readable.

Determinism: every draw depends on ``seed`` and the epoch only: the weights' initialisation
(``torch.manual_seed(seed)``), the order of the samples (``torch.Generator`` seeded with
``(seed, epoch)``) and the augmentation (``default_rng([seed, epoch, index])``). Nothing random is
carried from one epoch to the next except the weights and the optimizer, which the checkpoint holds,
so a run resumed from epoch ``k`` reproduces the uninterrupted run (on the same machine and thread
count).

Losses: ``s2mnet``: mean squared vertex-displacement error in mm² (over vertices and x, y, z), plus
``chamfer_weight`` times a symmetric squared Chamfer term (mm²) between predicted and target
vertices (a random subset of ``chamfer_points``). ``voxel``: binary cross-entropy of the occupancy
logits (heart and LV-cavity channels).

Distributed training: when started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set, world size
> 1) the process group is initialised (``gloo`` on the CPU, ``nccl`` on CUDA) and the model is
wrapped in ``DistributedDataParallel``. ``batch_size`` is the *global* batch: step ``s`` of an
epoch takes the samples ``perm[s B : (s + 1) B]`` of the epoch's permutation whatever the number
of processes, and rank ``r`` computes every ``world_size``-th of them (possibly none, in a short
last step). Each rank's loss is its samples' summed loss times ``world_size / n_step`` (``n_step``:
the step's global sample count), so DDP's gradient average is the gradient of the step's mean
loss, exactly as one process computes it, and the learning-rate schedule counts the same steps.
BatchNorm must see the statistics of the whole step's batch too: on CUDA the layers become
``torch.nn.SyncBatchNorm``; on the CPU (which ``SyncBatchNorm`` refuses) they become
:class:`GlooBatchNorm`, which all-reduces the per-channel sums. With both, two processes follow
one process's loss trajectory to float rounding (``tests/test_distributed.py``; ``docs/s2mnet.md``
has the figures and the ``torchrun`` commands). Only rank 0 writes files and holds the run folder's
lock.

Interruption: every run records its configuration in ``train_log.json`` before its first epoch,
so ``--resume`` continues a run killed at any moment: from its last checkpoint, or from the start
when it died before the first one.
"""

from __future__ import annotations

import contextlib
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
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from sono3d.errors import InputError
from sono3d.heart.checkpoint import CHECKPOINT, build_run_model, net_config, read_checkpoint, save_checkpoint
from sono3d.heart.cohort import case_ids
from sono3d.heart.data import (Augment, HeartViewsDataset, load_cohort_arrays, read_split, split_cases, voxel_box,
                               write_split)
from sono3d.heart.input_check import fit_input_check
from sono3d.heart.occupancy import occupancy, surface_components
from sono3d.heart.s2mnet import MODEL_KINDS, NetConfig, init_global_branch
from sono3d.heart.template import record_faces, template_record
from sono3d.io.atomic import atomic_path
from sono3d.io.lock import writer_lock
from sono3d.io.testing import kill_point
from sono3d.types import PHASES

LOG = "train_log.json"

__all__ = ["RunConfig", "TrainConfig", "GlooBatchNorm", "train", "lr_schedule", "open_run", "run_split", "restore_training", "write_train_log"]


class RunConfig:
    """What every training config shares (S2MNet and voxel runs, the pose model): named presets
    with overrides, a plain dict for the checkpoint, and the checks of ``epochs``, ``batch_size``
    and ``lr``. Subclasses are dataclasses that define :meth:`presets`."""

    @classmethod
    def presets(cls) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def preset(cls, name: str = "small", **overrides: Any) -> Any:
        """A named configuration (``small``, ``paper`` or ``tiny``) with some fields replaced
        (``None`` values in ``overrides`` are ignored, so options left unset keep the preset's)."""
        presets = cls.presets()
        if name not in presets:
            raise InputError(f"unknown training config '{name}' (known: {', '.join(presets)})")
        return replace(presets[name], **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_common(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be positive, got {self.lr}")


@dataclass
class TrainConfig(RunConfig):
    """Training options; ``preset("small")`` for two CPU cores, ``preset("paper")`` for a GPU.

    Attributes
    ----------
    net : str
        :class:`sono3d.heart.s2mnet.NetConfig` preset (``tiny``, ``small``, ``paper``).
    epochs, batch_size : int
    lr, weight_decay : float
        AdamW; the learning rate follows a linear warm-up over ``warmup_epochs`` then a cosine decay
        to ``lr * final_lr_ratio``.
    chamfer_weight : float
        Weight of the Chamfer term (s2mnet); 0 turns it off.
    volume_weight : float
        Weight of the LV-volume term (s2mnet): the squared error (mL²) of the LV cavity volume of the
        predicted vertices (divergence theorem over the template's ``lv_cavity_faces``, differentiable)
        against the target's. The cavity is a tenth of the vertices, so plain vertex MSE lets its
        volume regress to the mean; this term is what makes EF usable. 0 turns it off.
    dice_weight : float
        Weight of a soft Dice term added to the voxel baseline's BCE (without it, a short training
        on a 7%-occupied grid predicts mostly background).
    chamfer_points : int
        Vertices drawn per sample for the Chamfer term.
    augment : bool
        Intensity gain/gamma/noise (and ``shift_px`` in-plane shifts) on the training views.
    global_lr_scale : float
        Learning-rate factor of the network's global branch (``NetConfig.global_code``), which
        starts from its closed-form least-squares fit (:func:`sono3d.heart.s2mnet.init_global_branch`);
        0 keeps that fit.
    global_ridge : float
        Ridge penalty of that fit.
    shift_px : int
        Largest random in-plane shift of a training view, in pixels of the network's views. 0 by
        default: the heart's position in the image *is* the signal for its position in the echo
        frame (a 1-pixel shift is 2 to 3 mm), and shifting the image without the target taught the
        first networks to ignore it (2026-11-23: lateral and out-of-plane centroid errors as large as
        their spread).
    workers : int
        DataLoader worker processes (0: in this process).
    targets : str
        ``auto``, ``deformation`` or ``identity`` (see :mod:`sono3d.heart.data`).
    max_cases : int or None
        Use only the first ``max_cases`` cases of the cohort (sorted ids) before splitting.
    view_dropout : float
        Probability that a training sample loses views (blanked, presence flag 0; each view kept
        with probability 1/2, at least one; :func:`sono3d.heart.data.drop_views`). Above 0 the network
        takes presence flags (``NetConfig.view_presence``) and predicts from any non-empty subset.
    dtype : str
        ``float32``, or ``float64`` for numerical checks (about twice as slow): in float64, runs
        on one and on several processes agree to rounding (``docs/s2mnet.md``), while in float32
        Adam's normalised first steps amplify the rounding of sums split across processes.
    """

    net: str = "small"
    epochs: int = 12
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    final_lr_ratio: float = 0.02
    chamfer_weight: float = 0.0
    chamfer_points: int = 1024
    volume_weight: float = 0.02
    dice_weight: float = 1.0
    augment: bool = True
    shift_px: int = 0
    global_lr_scale: float = 0.0
    global_ridge: float = 3.0
    workers: int = 0
    targets: str = "auto"
    max_cases: int | None = None
    view_dropout: float = 0.0
    dtype: str = "float32"

    @classmethod
    def presets(cls) -> dict[str, "TrainConfig"]:
        return {
            "small": cls(),
            "paper": cls(net="paper", epochs=200, batch_size=32, lr=1e-3, warmup_epochs=5, chamfer_weight=0.1,
                         workers=8),
            "tiny": cls(net="tiny", epochs=4, batch_size=4, lr=3e-3, warmup_epochs=0, augment=False),
        }

    def __post_init__(self) -> None:
        self.check_common()
        if isinstance(self.shift_px, bool) or not isinstance(self.shift_px, int) or self.shift_px < 0:
            raise InputError(f"shift_px must be a non-negative integer, got {self.shift_px}")
        if not (self.global_lr_scale >= 0 and math.isfinite(self.global_lr_scale)):
            raise InputError(f"global_lr_scale must be >= 0, got {self.global_lr_scale}")
        if not (self.global_ridge > 0 and math.isfinite(self.global_ridge)):
            raise InputError(f"global_ridge must be positive, got {self.global_ridge}")
        if self.workers < 0:
            raise InputError(f"workers must be >= 0, got {self.workers}")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if not (0.0 <= self.view_dropout < 1.0):
            raise InputError(f"view_dropout must be in [0, 1), got {self.view_dropout}")


def _dist_info() -> tuple[int, int]:
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        return 0, 1


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: the sum's gradient reaches every
    process's addend. (``torch.distributed.nn.functional.all_reduce`` does this too, but is
    deprecated in favour of functional collectives that have no backward on gloo.)"""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN401
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN401
        g = grad.clone()
        dist.all_reduce(g)
        return g


def _sum_over_processes(x: torch.Tensor) -> torch.Tensor:
    return _SumOverProcesses.apply(x)


class GlooBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the samples of every process (CPU, any backend).

    ``torch.nn.SyncBatchNorm`` does the same on GPUs only (it raises for CPU tensors, and the
    kernels it gathers statistics with have no CPU version). Here each process sums its samples
    per channel, the sums are all-reduced by an autograd function whose backward all-reduces the
    gradients, and the mean, then the variance about it (two passes,
    as ``torch.batch_norm`` computes them), are those of the whole batch. A process with no samples
    in a step still joins both reductions. In eval mode it is plain BatchNorm on the running
    statistics. Its ``state_dict`` is a ``BatchNorm``'s, so checkpoints do not change.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not (dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        n_local = x.numel() // max(x.shape[1], 1)
        count = _sum_over_processes(torch.tensor([float(n_local)], dtype=x.dtype, device=x.device))
        mean = _sum_over_processes(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = _sum_over_processes((centred * centred).sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = float(count)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1.0)), alpha=m)
        return y

    @classmethod
    def convert(cls, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` with every ``BatchNorm1d/2d/3d`` replaced by a GlooBatchNorm holding its
        parameters and buffers (in place where possible, like ``SyncBatchNorm.convert_sync_batchnorm``)."""
        out = module
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            if module.affine:
                with torch.no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
        for name, child in module.named_children():
            out.add_module(name, cls.convert(child))
        return out


def open_run(run: Path, kind: str, config_cls: Any, config: Any, seed: int, resume: bool
             ) -> tuple[dict[str, Any] | None, Any, int]:
    """The start of a training run in ``run``: its checkpoint (``None`` for a new run), config and seed.

    A resumed run keeps its own config and seed (only ``config.epochs``, when a config is given,
    replaces the stored one); a new run takes ``config`` or ``config_cls.preset("small")``. A run
    killed before its first checkpoint resumes from its start, with the config and seed its
    ``train_log.json`` recorded (:func:`write_train_log` before the first epoch). Raises
    :class:`InputError` for a bad seed, a folder that holds a run without ``resume``, a run of
    another ``kind``, or ``resume`` with neither a checkpoint nor a started run.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"the seed must be a non-negative integer, got {seed}")
    ckpt_path = run / CHECKPOINT
    state = None
    if ckpt_path.is_file():
        if not resume:
            raise InputError(f"{run} already holds a training run; use --resume to continue it or another folder")
        state = read_checkpoint(ckpt_path)
        record = {"kind": state["kind"], "seed": int(state["seed"]), "train": state["train"]}
    elif resume:
        record = _started_run(run)
        if record is None:
            raise InputError(f"{run}: no checkpoint to resume from")
    else:
        return None, config or config_cls.preset("small"), seed
    if record["kind"] != kind:
        raise InputError(f"{run} holds a '{record['kind']}' run, not '{kind}'")
    try:
        stored = config_cls(**record["train"])
    except TypeError as exc:
        raise InputError(f"{run}: a run of another sono3d version ({exc})") from None
    if config is not None:
        stored = replace(stored, epochs=config.epochs)
    return state, stored, record["seed"]


def _started_run(run: Path) -> dict[str, Any] | None:
    """Kind, seed and config from the ``train_log.json`` of a run that died before its first checkpoint."""
    try:
        log = json.loads((run / LOG).read_text(encoding="utf-8"))
        return {"kind": str(log["kind"]), "seed": int(log["seed"]), "train": dict(log["train"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_split(run: Path, cohort_dir: str | os.PathLike[str], max_cases: int | None, seed: int, resumed: bool,
              write: bool = True) -> dict[str, list[str]]:
    """The run's split: read back from ``split.json`` when ``resumed``, else drawn from the cohort's
    (first ``max_cases``) ids and ``seed`` and written (when ``write``)."""
    if resumed:
        return read_split(run)
    ids = case_ids(cohort_dir)
    if not ids:
        raise InputError(f"{cohort_dir}: no cases (not a generated heart cohort?)")
    if max_cases is not None:
        ids = ids[:max_cases]
    split = split_cases(ids, seed)
    if not split["train"]:
        raise InputError(f"{cohort_dir}: too few cases to train ({len(ids)})")
    if write:
        run.mkdir(parents=True, exist_ok=True)
        write_split(run, split, seed)
    return split


def restore_training(state: dict[str, Any] | None, optimizer: Any, scheduler: Any) -> tuple[list[dict[str, Any]], int]:
    """Load a checkpoint's optimizer, schedule and torch RNG state; returns its history and epochs done
    (``[], 0`` for a new run)."""
    if state is None:
        return [], 0
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    return list(state["history"]), int(state["epoch"])


def write_train_log(run: Path, kind: str, seed: int, train: dict[str, Any], net: NetConfig,
                    history: list[dict[str, Any]]) -> None:
    """``train_log.json``: the history and both configs, human-readable (atomically). Written before
    the first epoch too (empty history), so that :func:`open_run` can resume a run killed before its
    first checkpoint."""
    with atomic_path(run / LOG) as tmp:
        tmp.write_text(json.dumps({"kind": kind, "seed": seed, "train": train, "net": net.to_dict(),
                                   "history": history}, indent=1) + "\n", encoding="utf-8")


def lr_schedule(config: Any, steps_per_epoch: int):  # noqa: ANN202
    """Learning-rate factor per step: linear warm-up over ``config.warmup_epochs``, then a cosine
    decay to ``config.final_lr_ratio`` at ``config.epochs`` (for ``torch.optim.lr_scheduler.LambdaLR``)."""
    total = max(1, config.epochs * steps_per_epoch)
    warm = config.warmup_epochs * steps_per_epoch

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return config.final_lr_ratio + (1 - config.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _chamfer_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Symmetric squared Chamfer distance (mm²) of each pair of point sets ``[B, N, 3]``: ``[B]``."""
    d = torch.cdist(a, b)  # [B, N, N]
    return 0.5 * (d.min(2).values.pow(2).mean(1) + d.min(1).values.pow(2).mean(1))


def train(cohort_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str], model_kind: str = "s2mnet",
          config: TrainConfig | None = None, seed: int = 0, resume: bool = False, device: str = "cpu",
          progress: bool = False, stop_after_epoch: int | None = None, views_transform: Any = None,
          views_style: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model_kind`` (``s2mnet`` or ``voxel``) on a cohort; see the module notes.

    Parameters
    ----------
    config : TrainConfig, optional
        Default ``TrainConfig.preset("small")``. On ``resume`` the run's own config is used and
        only ``config.epochs`` is taken from this one.
    resume : bool
        Continue the run in ``run_dir``: from its last checkpoint, or from its start when it was
        interrupted before its first checkpoint.
    views_transform, views_style : callable and dict, optional
        The style bridge (``--style``): a map from a case's views arrays to new echo images, and its
        description (recorded in the checkpoint; a resumed run must be given the same one).
    stop_after_epoch : int, optional
        Stop (after checkpointing) once this epoch (1-based) is done, as an interruption would.

    Returns
    -------
    dict with ``run_dir``, ``kind``, ``epochs_done``, ``history`` (per epoch: ``train_loss``,
    ``val_loss``, ``seconds``, ``lr``), ``seconds_per_epoch``, ``n_train``, ``n_val``, ``n_test``.

    Raises
    ------
    InputError
        Bad options, a folder holding another run (or a run without ``resume``), a cohort
        without cases. :class:`~sono3d.errors.BusyError` when another process trains into
        ``run_dir``.
    """
    if model_kind not in MODEL_KINDS:
        raise InputError(f"unknown model '{model_kind}' (known: {', '.join(MODEL_KINDS)})")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise InputError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA GPU is available")
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise InputError(f"{run} exists and is not a folder")
    rank, _ = _dist_info()
    # Only rank 0 writes, so only rank 0 holds the run folder.
    with writer_lock(run, "run folder") if rank == 0 else contextlib.nullcontext():
        return _train(cohort_dir, run, model_kind, config, seed, resume, device, progress, stop_after_epoch,
                      views_transform, views_style)


def _train(cohort_dir: str | os.PathLike[str], run: Path, model_kind: str, config: TrainConfig | None, seed: int,
           resume: bool, device: str, progress: bool, stop_after_epoch: int | None, views_transform: Any = None,
           views_style: dict[str, Any] | None = None) -> dict[str, Any]:
    ckpt_path = run / CHECKPOINT
    state, config, seed = open_run(run, model_kind, TrainConfig, config, seed, resume)
    net = net_config(state, ckpt_path) if state is not None else \
        NetConfig.preset(config.net, view_presence=True if config.view_dropout > 0 else None)
    # --- style bridge (issue 15): a resumed run keeps the views it was trained on ---
    if state is not None and state["extra"].get("style", {}).get("run") != (views_style or {}).get("run"):
        was = state["extra"].get("style", {}).get("run")
        raise InputError(f"{run} was trained {'through the style run ' + was if was else 'without --style'}; "
                         "resume it the same way")

    rank, world = _dist_info()
    distributed = world > 1
    if distributed:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
        if str(device).startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    dev = torch.device(device)

    split = run_split(run, cohort_dir, config.max_cases, seed, state is not None, write=rank == 0)
    if state is None and rank == 0:
        write_train_log(run, model_kind, seed, config.to_dict(), net, [])  # what --resume needs before epoch 1
    train_arr = load_cohort_arrays(cohort_dir, split["train"], net.image_size, config.targets, views_transform)
    val_arr = load_cohort_arrays(cohort_dir, split["val"], net.image_size, train_arr.source,
                                 views_transform) if split["val"] else None

    torch.manual_seed(seed)
    if state is not None:
        tpl_pts = state["template"]["points"].numpy()
        extra = state["extra"]
    else:
        tpl_pts = train_arr.points.reshape(-1, *train_arr.points.shape[2:]).mean(0)
        disp = train_arr.points - tpl_pts
        extra = {"displacement_scale_mm": float(max(1.0, disp.std())), "targets": train_arr.source}
        if views_style:
            extra["style"] = dict(views_style)
        if model_kind == "voxel":
            c, h = voxel_box(train_arr.points, pad_mm=4.0)
            extra.update({"box_centre": torch.as_tensor(c, dtype=torch.float32),
                          "box_half": torch.as_tensor(h, dtype=torch.float32)})
    model = build_run_model(model_kind, net, tpl_pts, extra)
    template = state["template"] if state is not None else template_record(train_arr.template_mesh, tpl_pts)

    def voxel_targets(arr: Any) -> np.ndarray:
        faces, cav = record_faces(template)
        comp = surface_components(faces, len(tpl_pts))
        c = extra["box_centre"].numpy().astype(np.float64)
        h = extra["box_half"].numpy().astype(np.float64)
        R = net.voxel_size
        out = np.zeros((len(arr.ids), len(PHASES), 2, R, R, R), dtype=bool)
        for i in range(len(arr.ids)):
            for p in range(len(PHASES)):
                heart, lv = occupancy(arr.points[i, p], faces, c - h, c + h, R, comp, cav)
                out[i, p, 0] = heart
                if lv is not None:
                    out[i, p, 1] = lv
        return out

    occ_train = voxel_targets(train_arr) if model_kind == "voxel" else None
    occ_val = voxel_targets(val_arr) if model_kind == "voxel" and val_arr is not None else None
    aug = Augment(enabled=config.augment, shift_px=config.shift_px)
    ds_train = HeartViewsDataset(train_arr, model_kind, tpl_pts, occ_train, aug, seed, config.view_dropout)
    ds_val = HeartViewsDataset(val_arr, model_kind, tpl_pts, occ_val, None, seed) if val_arr is not None else None

    if state is None and net.global_code > 0:
        S = net.image_size
        views0 = torch.from_numpy(train_arr.echo.reshape(-1, net.n_views, S, S))
        if model_kind == "s2mnet":
            y0 = torch.from_numpy(train_arr.points.reshape(-1, *train_arr.points.shape[2:]) - tpl_pts)
        else:
            y0 = torch.from_numpy(occ_train.reshape(-1, *occ_train.shape[2:])).float()
        fit = init_global_branch(model, views0, y0, lam=config.global_ridge)
        extra["global_init_explained"] = fit["explained"]
        if "imputation" in fit:
            extra["imputation"] = fit["imputation"]
        del views0, y0
    dtype = getattr(torch, config.dtype)
    model.to(dev, dtype)
    if state is not None:
        model.load_state_dict(state["model"])
    ddp_model = model
    if distributed:
        # Whole-batch BatchNorm statistics in every process (see the module notes).
        model = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if dev.type == "cuda"
                 else GlooBatchNorm.convert(model))
        ddp_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    # The global branch (linear in the pixels, NetConfig.global_code) starts from its least-squares
    # fit and takes a smaller step (none by default): at the full rate, started from zero, its two
    # stacked linear maps diverged after one epoch (2026-11-23).
    glob = [p for n, p in model.named_parameters() if n.split(".")[0] in ("code", "basis", "coarse")]
    rest = [p for n, p in model.named_parameters() if n.split(".")[0] not in ("code", "basis", "coarse")]
    groups = [{"params": rest}] + ([{"params": glob, "lr": config.lr * config.global_lr_scale}] if glob else [])
    opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    n_train = len(ds_train)
    steps_per_epoch = max(1, math.ceil(n_train / config.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(config, steps_per_epoch))
    history, start_epoch = restore_training(state, opt, sched)

    cav_faces = template.get("lv_cavity_faces")
    use_volume = model_kind == "s2mnet" and config.volume_weight > 0 and cav_faces is not None
    if use_volume:
        cav_faces = cav_faces.to(dev)

    def cavity_ml(points: torch.Tensor) -> torch.Tensor:  # LV volume (mL) per sample, differentiable
        a, b, c = (points[:, cav_faces[:, k]] for k in range(3))
        return (a * torch.cross(b, c, dim=-1)).sum(dim=(1, 2)) / 6000.0

    def sample_losses(pred: Any, y: Any, gen: Any | None) -> Any:
        """The training loss of each sample, ``[B]`` (the step's loss is their mean)."""
        if model_kind == "voxel":
            loss = F.binary_cross_entropy_with_logits(pred, y, reduction="none").flatten(1).mean(1)
            if config.dice_weight > 0:
                p = torch.sigmoid(pred).flatten(2)
                t = y.flatten(2)
                dice = (2 * (p * t).sum(-1) + 1.0) / (p.sum(-1) + t.sum(-1) + 1.0)
                loss = loss + config.dice_weight * (1 - dice).mean(1)
            return loss
        loss = ((pred - y) ** 2).flatten(1).mean(1)
        if use_volume:
            tp = model.template[None]
            loss = loss + config.volume_weight * (cavity_ml(tp + pred) - cavity_ml(tp + y)) ** 2
        if config.chamfer_weight > 0:
            tp = model.template[None]
            k = min(config.chamfer_points, tp.shape[1])
            idx = torch.randperm(tp.shape[1], generator=gen)[:k].to(pred.device) if gen is not None else torch.arange(k)
            loss = loss + config.chamfer_weight * _chamfer_sq((tp + pred)[:, idx], (tp + y)[:, idx])
        return loss

    shapes = [tuple(t.shape) for t in ds_train[0]]  # of x, y and the presence flags, for empty steps
    t_start = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        ds_train.set_epoch(epoch)
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        perm = torch.randperm(n_train, generator=gen).tolist()
        # Step s takes perm[s B:(s + 1) B] in any number of processes; this rank every world-th of them.
        steps = [perm[s:s + config.batch_size] for s in range(0, n_train, config.batch_size)]
        mine = [step[rank::world] for step in steps]
        model.train()
        total, count = torch.zeros((), dtype=torch.float64), 0
        batches = iter(DataLoader(ds_train, batch_sampler=[m for m in mine if m], num_workers=config.workers))
        bar = None
        if progress and rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=len(steps), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, unit="batch")
        for step, local in zip(steps, mine):
            if local:
                x, y, present = next(batches)
            else:  # a short last step leaves this rank nothing, but it still joins the collectives
                x, y, present = (torch.empty((0, *shape)) for shape in shapes)
            x, y = x.to(dev, dtype), y.to(dev, dtype)
            per = sample_losses(ddp_model(x, present.to(dev, dtype) if net.view_presence else None), y, gen)
            loss = per.sum() * (world / len(step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += per.detach().double().sum().cpu()
            count += len(x)
            kill_point("train-step")
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if distributed:
            sums = torch.stack([total, torch.tensor(float(count), dtype=torch.float64)])
            dist.all_reduce(sums)
            total, count = sums[0], int(sums[1])
        val = None
        if ds_val is not None and rank == 0:
            model.eval()
            vt, vc = 0.0, 0
            with torch.no_grad():
                for x, y, _ in DataLoader(ds_val, batch_size=config.batch_size, shuffle=False, num_workers=0):
                    x, y = x.to(dev, dtype), y.to(dev, dtype)
                    vt += float(sample_losses(model(x), y, None).sum()) if model_kind == "voxel" else \
                        float(torch.mean((model(x) - y) ** 2)) * len(x)
                    vc += len(x)
            val = vt / max(vc, 1)
        rec = {"epoch": epoch + 1, "train_loss": float(total) / max(count, 1), "val_loss": val,
               "lr": float(opt.param_groups[0]["lr"]), "seconds": time.perf_counter() - t0}
        history.append(rec)
        if rank == 0:
            save_checkpoint(ckpt_path, kind=model_kind, epoch=epoch + 1, seed=seed, net=net, train=config.to_dict(),
                            extra=extra, template=template, model=model, optimizer=opt, scheduler=sched,
                            history=history)
            write_train_log(run, model_kind, seed, config.to_dict(), net, history)
            kill_point("train-epoch")
            if progress:
                print(f"epoch {epoch + 1}/{config.epochs}: train {rec['train_loss']:.4g} val "
                      f"{val if val is None else f'{val:.4g}'} ({rec['seconds']:.1f} s)", file=sys.stderr, flush=True)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    done = history[-1]["epoch"] if history else 0
    if (rank == 0 and model_kind == "s2mnet" and val_arr is not None and done >= config.epochs
            and (state is None or "input_check" not in state or done > int(state["epoch"]))):
        # The input check's statistics: the finished network's features of the training views,
        # its thresholds calibrated on the validation views (sono3d.heart.input_check).
        model.eval()
        if dtype != torch.float32:  # the input check computes in float32 (the checkpoint is saved above)
            model.float()
        stats = fit_input_check(model, train_arr.echo, val_arr.echo)
        save_checkpoint(ckpt_path, kind=model_kind, epoch=done, seed=seed, net=net, train=config.to_dict(),
                        extra=extra, template=template, model=model, optimizer=opt, scheduler=sched, history=history,
                        input_check=stats)
    if distributed:
        dist.barrier()
    return {"run_dir": str(run), "kind": model_kind, "epochs_done": done, "history": history,
            "seconds": time.perf_counter() - t_start,
            "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])) if history else None,
            "n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
            "targets": extra.get("targets", train_arr.source)}
