"""The view-plane regressor: each echo view's plane in the heart's echo frame (the paper's section 5.3).

A recorded view comes without its plane. S2MNet predicts the heart in the **echo frame** of each
phase (the A4C image's frame, :mod:`sono3d.heart.data`), so the plane that matters is the view's
plane in that frame: its rotation ``R`` (columns: the image's column direction, its row direction
along the beam, the normal) and the position of its sector apex (mm). :class:`~sono3d.heart.s2mnet.PoseNet`
regresses both from the view alone (one network for the six view kinds); with the view's pixel
size and image size they give the view's ``image_to_world`` in the echo frame
(:func:`plane_matrix`), on which the predicted mesh is sliced for the overlay
(:mod:`sono3d.heart.overlay`).

The A4C view *defines* the echo frame, so its true plane is the identity rotation with the apex at
``((W - 1) / 2 * dx, 0, 0)``; the regressor learns that constant like any other target.

Training (``sono3d heart train COHORT RUN --model pose``): samples are single views (every view of
both phases of every training case), the loss the mean squared error of the normalised outputs
(angles in units of ``PoseNet.angle_scale``, 3 degrees; apex offsets in units of the training
spread of that view kind), AdamW with the same schedule as S2MNet, checkpoint after every epoch
(the format of :mod:`sono3d.heart.checkpoint`, kind ``pose``, no template), exact resume, and the
same 80/10/10 split as S2MNet for the same cohort and seed. Augmentation: intensity only (gain,
gamma, noise): a shifted image would have another plane.

Errors (:func:`plane_errors`): the rotation's geodesic angle (degrees, the angle of
``R_predᵀ R_true``) and the apex's Euclidean distance (mm).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from sono3d.errors import InputError
from sono3d.geometry.planes import image_to_world_matrix
from sono3d.geometry.transforms import euler_to_matrix, matrix_to_euler
from sono3d.heart.checkpoint import CHECKPOINT, LoadedRun, build_run_model, net_config, save_checkpoint
from sono3d.heart.data import (Augment, augment_views, echo_frame, load_cohort_arrays, resize_views)
from sono3d.heart.s2mnet import POSE_KIND, NetConfig, init_pose_pixels
from sono3d.heart.training import RunConfig, lr_schedule, open_run, restore_training, run_split, write_train_log
from sono3d.io.lock import writer_lock

__all__ = ["PoseTrainConfig", "train_pose", "view_planes", "plane_matrix", "predict_planes", "plane_errors",
           "normalised_targets", "planes_from_outputs"]


@dataclass
class PoseTrainConfig(RunConfig):
    """Options of the view-plane regressor's training (``preset("small")`` for two CPU cores).

    Attributes
    ----------
    net : str
        :class:`~sono3d.heart.s2mnet.NetConfig` preset of the trunk (``tiny``, ``small``, ``paper``).
    epochs, batch_size : int
    lr, weight_decay, warmup_epochs, final_lr_ratio
        AdamW and the schedule of :func:`sono3d.heart.training.lr_schedule`.
    augment : bool
        Intensity augmentation (gain, gamma, noise) of the training views.
    ridge : float
        Penalty of the closed-form start of the linear pixel term.
    max_cases : int or None
        Use only the first ``max_cases`` cases of the cohort before splitting.
    """

    net: str = "small"
    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    final_lr_ratio: float = 0.02
    augment: bool = True
    ridge: float = 3.0
    max_cases: int | None = None

    @classmethod
    def presets(cls) -> dict[str, "PoseTrainConfig"]:
        return {"small": cls(), "paper": cls(net="paper", epochs=100, lr=1e-3, warmup_epochs=5),
                "tiny": cls(net="tiny", epochs=2, batch_size=16, warmup_epochs=0, augment=False)}

    def __post_init__(self) -> None:
        self.check_common()
        if not (self.ridge > 0 and math.isfinite(self.ridge)):
            raise InputError(f"ridge must be positive, got {self.ridge}")


# --------------------------------------------------------------------------------------------
# Planes
# --------------------------------------------------------------------------------------------

def view_planes(poses: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The views' planes in their phase's echo frame.

    Parameters
    ----------
    poses : ndarray [..., 6, 4, 4]
        image_to_world of the six views (world mm), view 0 the A4C that defines the echo frame.
    size : int
        Image width (pixels) the poses belong to; the sector apex is pixel ``((size - 1) / 2, 0)``.

    Returns
    -------
    rotation : ndarray [..., 6, 3, 3]
        Columns: the image's column and row directions and the normal, in the echo frame.
    apex : ndarray [..., 6, 3]
        The sector apex in the echo frame (mm).
    """
    P = np.asarray(poses, dtype=np.float64)
    lead = P.shape[:-3]
    flat = P.reshape(-1, *P.shape[-3:])
    rot = np.empty((*flat.shape[:2], 3, 3))
    apex = np.empty((*flat.shape[:2], 3))
    pix = np.array([(size - 1) / 2.0, 0.0, 0.0, 1.0])
    for i, views in enumerate(flat):
        inv = np.linalg.inv(echo_frame(views[0]))
        for v, M in enumerate(views):
            E = inv @ M
            rot[i, v] = E[:3, :3] / np.linalg.norm(E[:3, :3], axis=0)
            apex[i, v] = (E @ pix)[:3]
    return rot.reshape(*lead, *rot.shape[1:]), apex.reshape(*lead, *apex.shape[1:])


def plane_matrix(rotation: np.ndarray, apex: np.ndarray, spacing_mm: float, size: int) -> np.ndarray:
    """The 4x4 image_to_world (echo-frame mm) of a ``size x size`` view with square pixels
    ``spacing_mm`` whose sector apex, pixel ``((size - 1) / 2, 0)``, sits at ``apex``."""
    R = np.asarray(rotation, dtype=np.float64)
    origin = np.asarray(apex, dtype=np.float64) - R[:, 0] * spacing_mm * (size - 1) / 2.0
    return image_to_world_matrix(R, origin, (float(spacing_mm), float(spacing_mm)))


def plane_errors(rot_pred: np.ndarray, apex_pred: np.ndarray, rot_true: np.ndarray, apex_true: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Geodesic rotation error (degrees) and apex distance (mm) of planes ``[..., 3, 3]``, ``[..., 3]``."""
    a = np.asarray(rot_pred, dtype=np.float64).reshape(-1, 3, 3)
    b = np.asarray(rot_true, dtype=np.float64).reshape(-1, 3, 3)
    ang = np.degrees(Rotation.from_matrix(np.einsum("nji,njk->nik", a, b)).magnitude())
    dist = np.linalg.norm(np.asarray(apex_pred) - np.asarray(apex_true), axis=-1)
    return ang.reshape(np.shape(apex_true)[:-1]), dist


def _stats(rot: np.ndarray, apex: np.ndarray) -> dict[str, torch.Tensor]:
    """Per view kind: the mean rotation (chordal mean), the apex's mean and spread (>= 0.5 mm)."""
    n_views = rot.shape[1]
    means = np.stack([Rotation.from_matrix(rot[:, v]).mean().as_matrix() for v in range(n_views)])
    return {"rotation_mean": torch.as_tensor(means, dtype=torch.float32),
            "position_mean": torch.as_tensor(apex.mean(0), dtype=torch.float32),
            "position_scale": torch.as_tensor(np.maximum(apex.std(0), 0.5), dtype=torch.float32)}


def normalised_targets(model: Any, rotation: np.ndarray, apex: np.ndarray, view: np.ndarray) -> np.ndarray:
    """The regressor's targets ``[N, 6]`` (see :class:`~sono3d.heart.s2mnet.PoseNet`) of planes
    ``rotation [N, 3, 3]``, ``apex [N, 3]`` of view kinds ``view [N]``."""
    Rm = model.rotation_mean.numpy().astype(np.float64)[view]
    scale = float(model.angle_scale)
    ang = np.array([matrix_to_euler(m.T @ r) for m, r in zip(Rm, rotation)]) / scale
    q = (apex - model.position_mean.numpy()[view]) / model.position_scale.numpy()[view]
    return np.concatenate([ang, q], axis=1)


def planes_from_outputs(model: Any, out: np.ndarray, view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotations ``[N, 3, 3]`` and apexes ``[N, 3]`` (mm) of the regressor's outputs ``[N, 6]``."""
    out = np.asarray(out, dtype=np.float64)
    Rm = model.rotation_mean.numpy().astype(np.float64)[view]
    scale = float(model.angle_scale)
    rot = np.stack([m @ euler_to_matrix(*(o[:3] * scale)) for m, o in zip(Rm, out)])
    apex = model.position_mean.numpy()[view] + out[:, 3:] * model.position_scale.numpy()[view]
    return rot, apex


def predict_planes(run: LoadedRun, echo: np.ndarray, present: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Planes of views ``echo [P, 6, H, W]`` (in [0, 1]) by a pose run: rotations ``[P, 6, 3, 3]``
    and apexes ``[P, 6, 3]`` (mm, echo frame); NaN for views not ``present``."""
    if run.kind != POSE_KIND:
        raise InputError(f"{run.path} holds a '{run.kind}' model checkpoint, but a '{POSE_KIND}' run is needed here")
    e = resize_views(echo, run.net_config.image_size)
    P, V = e.shape[:2]
    present = np.ones(V, dtype=bool) if present is None else np.asarray(present, dtype=bool)
    idx = np.flatnonzero(present)
    x = torch.from_numpy(np.ascontiguousarray(e[:, idx].reshape(-1, 1, *e.shape[-2:])))
    kinds = np.tile(idx, P)
    with torch.no_grad():
        out = run.model(x, torch.from_numpy(kinds)).double().numpy()
    r, a = planes_from_outputs(run.model, out, kinds)
    rot = np.full((P, V, 3, 3), np.nan)
    apex = np.full((P, V, 3), np.nan)
    rot[:, idx] = r.reshape(P, len(idx), 3, 3)
    apex[:, idx] = a.reshape(P, len(idx), 3)
    return rot, apex


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def _samples(arrays: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Single-view samples of a cohort's arrays: images ``[N, 1, S, S]``, kinds ``[N]``, true
    rotations ``[N, 3, 3]`` and apexes ``[N, 3]`` (cases x phases x views, in that order)."""
    rot, apex = view_planes(arrays.poses, arrays.view_size)
    n_views = arrays.echo.shape[2]
    images = arrays.echo.reshape(-1, 1, *arrays.echo.shape[-2:])
    kinds = np.tile(np.arange(n_views), len(images) // n_views)
    return images, kinds, rot.reshape(-1, 3, 3), apex.reshape(-1, 3)


def train_pose(cohort_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str],
               config: PoseTrainConfig | None = None, seed: int = 0, resume: bool = False,
               progress: bool = False, stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Train the view-plane regressor on a cohort's views and poses (see the module notes).

    Writes ``split.json``, ``checkpoint.pt`` (after every epoch) and ``train_log.json`` into
    ``run_dir``. Returns ``run_dir``, ``kind``, ``epochs_done``, ``history``, ``seconds``,
    ``seconds_per_epoch``, ``n_train``, ``n_val``, ``n_test`` and the validation errors of the
    last epoch (``val_angle_deg``, ``val_position_mm``: medians). Holds the run folder's lock
    (:mod:`sono3d.io.lock`); ``resume`` also restarts a run killed before its first checkpoint.
    """
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise InputError(f"{run} exists and is not a folder")
    with writer_lock(run, "run folder"):
        return _train_pose(cohort_dir, run, config, seed, resume, progress, stop_after_epoch)


def _train_pose(cohort_dir: str | os.PathLike[str], run: Path, config: PoseTrainConfig | None, seed: int,
                resume: bool, progress: bool, stop_after_epoch: int | None) -> dict[str, Any]:
    ckpt_path = run / CHECKPOINT
    state, config, seed = open_run(run, POSE_KIND, PoseTrainConfig, config, seed, resume)
    net = net_config(state, ckpt_path) if state is not None else NetConfig.preset(config.net)
    split = run_split(run, cohort_dir, config.max_cases, seed, state is not None)
    if state is None:
        write_train_log(run, POSE_KIND, seed, config.to_dict(), net, [])  # what --resume needs before epoch 1
    train_arr = load_cohort_arrays(cohort_dir, split["train"], net.image_size)
    x_tr, k_tr, r_tr, a_tr = _samples(train_arr)
    val = _samples(load_cohort_arrays(cohort_dir, split["val"], net.image_size)) if split["val"] else None

    torch.manual_seed(seed)
    model = build_run_model(POSE_KIND, net, None, {})
    if state is not None:
        model.load_state_dict(state["model"])
    else:
        n_views = train_arr.echo.shape[2]
        for k, v in _stats(r_tr.reshape(-1, n_views, 3, 3), a_tr.reshape(-1, n_views, 3)).items():
            getattr(model, k).copy_(v)
        init_pose_pixels(model, torch.from_numpy(x_tr), torch.from_numpy(k_tr),
                         torch.from_numpy(normalised_targets(model, r_tr, a_tr, k_tr)), lam=config.ridge)
    y_tr = torch.from_numpy(normalised_targets(model, r_tr, a_tr, k_tr)).float()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n_train = len(x_tr)
    steps_per_epoch = max(1, math.ceil(n_train / config.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(config, steps_per_epoch))
    history, start_epoch = restore_training(state, opt, sched)
    aug = Augment(enabled=config.augment, shift_px=0)

    def evaluate() -> tuple[float | None, float | None, float | None]:
        if val is None:
            return None, None, None
        model.eval()
        xv, kv, rv, av = val
        with torch.no_grad():
            out = torch.cat([model(torch.from_numpy(xv[i:i + 256]), torch.from_numpy(kv[i:i + 256]))
                             for i in range(0, len(xv), 256)]).double().numpy()
        loss = float(np.mean((out - normalised_targets(model, rv, av, kv)) ** 2))
        ang, dist = plane_errors(*planes_from_outputs(model, out, kv), rv, av)
        return loss, float(np.median(ang)), float(np.median(dist))

    t_start = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        perm = torch.randperm(n_train, generator=gen)
        model.train()
        total = 0.0
        for s in range(0, n_train, config.batch_size):
            idx = perm[s:s + config.batch_size]
            xb = x_tr[idx.numpy()]
            if aug.enabled:
                xb = np.stack([augment_views(img, np.random.default_rng([seed, epoch, int(i)]), aug)
                               for img, i in zip(xb, idx)])
            pred = model(torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32)), torch.from_numpy(k_tr[idx.numpy()]))
            loss = torch.mean((pred - y_tr[idx]) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        v_loss, v_ang, v_pos = evaluate()
        rec = {"epoch": epoch + 1, "train_loss": total / n_train, "val_loss": v_loss, "val_angle_deg": v_ang,
               "val_position_mm": v_pos, "lr": float(opt.param_groups[0]["lr"]), "seconds": time.perf_counter() - t0}
        history.append(rec)
        save_checkpoint(ckpt_path, kind=POSE_KIND, epoch=epoch + 1, seed=seed, net=net, train=config.to_dict(),
                        extra={"angle_scale_deg": float(np.degrees(float(model.angle_scale)))}, template={},
                        model=model, optimizer=opt, scheduler=sched, history=history)
        write_train_log(run, POSE_KIND, seed, config.to_dict(), net, history)
        if progress:
            print(f"epoch {epoch + 1}/{config.epochs}: train {rec['train_loss']:.4g} val {v_loss} "
                  f"(median {v_ang} deg, {v_pos} mm; {rec['seconds']:.1f} s)", file=sys.stderr, flush=True)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    done = history[-1]["epoch"] if history else 0
    last = history[-1] if history else {}
    return {"run_dir": str(run), "kind": POSE_KIND, "epochs_done": done, "history": history,
            "seconds": time.perf_counter() - t_start,
            "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])) if history else None,
            "n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
            "val_angle_deg": last.get("val_angle_deg"), "val_position_mm": last.get("val_position_mm")}
