"""Gaussians against classic compounding on the same held-out frames of a sweep (``sono3d sweep compare``).

Both methods see the same training frames at the same poses (tracked, or the sensorless fan prior,
for which compounding pastes the frames at the prior's poses too) and predict the same held-out
frames (every k-th, :func:`sono3d.sweep.compound.holdout_split`), scored inside the same pixel mask
with the same definitions (:func:`sono3d.sweep.evaluate.frame_metrics`).

Compounding's voxel size: ``voxel_mm`` when given, else the PLUS configuration's output spacing
when one is given (its own settings), else the sweep's pixel size (the larger of the row and column
spacings: on the ultranerf l2 sweep, 0.195 mm voxels give held-out SSIM 0.582 and 0.145 mm ones
0.579); in every case
coarsened until the grid has at most ``max_voxels`` voxels (memory).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError, about
from sono3d.io import read_sweep
from sono3d.sweep.compound import CompoundConfig, clip_mask, holdout_predictions, output_grid
from sono3d.sweep.evaluate import frame_metrics, holdout_split
from sono3d.sweep.export import write_report
from sono3d.sweep.poses import resolve_poses
from sono3d.sweep.reconstruct import ReconstructConfig, reconstruct_sweep
from sono3d.sweep.span import with_estimated_span
from sono3d.types import Sweep
from sono3d.viz.figures import pyplot, save_png

__all__ = ["MIN_TRAIN_FRAMES", "compare_sweep", "compound_config_for", "check_holdout", "save_compare_png",
           "compare_to_folder"]

#: A comparison needs at least this many training frames (fewer cannot show interpolation).
MIN_TRAIN_FRAMES = 3
_METRICS = ("ssim", "psnr", "psnr_pooled", "l1", "l2", "ncc")


def check_holdout(n_frames: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The split of :func:`holdout_split`, refused (one line) when it leaves fewer than 3 training frames."""
    if k < 2:
        raise InputError(f"--holdout must be at least 2 (every k-th frame held out) for a comparison, got {k}")
    idx = np.arange(n_frames)
    n_test = int(np.sum(idx % k == k // 2))
    if n_frames - n_test < MIN_TRAIN_FRAMES or n_test == 0:
        raise InputError(f"--holdout {k}: holding out every {k}-th of {n_frames} frames leaves {n_frames - n_test} "
                         f"training and {n_test} held-out frames; a comparison needs at least {MIN_TRAIN_FRAMES} and 1")
    return holdout_split(n_frames, k)


def _frame_record(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, j: int) -> dict[str, float]:
    """One held-out frame's metrics (``ssim psnr l1 ncc``)."""
    m = frame_metrics(pred, truth, mask, index=np.array([j]))
    return {k: m[k] for k in ("ssim", "psnr", "l1", "ncc")}


def compound_config_for(sweep: Sweep, poses: np.ndarray, plus_config: Any = None, voxel_mm: float | None = None,
                        max_voxels: int = 60_000_000) -> CompoundConfig:
    """The compounding configuration of a comparison (see the module notes for the voxel size)."""
    if voxel_mm is not None and not (voxel_mm > 0 and math.isfinite(voxel_mm)):
        raise InputError(f"--voxel must be a positive size in mm, got {voxel_mm}")
    base = CompoundConfig.from_plus(plus_config) if plus_config is not None else CompoundConfig()
    if voxel_mm is not None:
        spacing = float(voxel_mm)
    elif plus_config is not None:
        spacing = float(np.max(base.spacing))
    else:
        spacing = float(max(sweep.spacing_mm))
    posed = replace(sweep, image_to_world=poses)
    # a configured PLUS grid (origin + extent) was made for the tracked poses; the comparison's grid
    # is the bounding box of the frames it compounds
    cfg = base.replace(spacing_mm=spacing, grid_origin_mm=None, grid_shape=None)
    mask = clip_mask(sweep.shape, cfg, sweep.sector, sweep.spacing_mm)
    for _ in range(64):
        _, shape = output_grid(posed, cfg, mask)
        if float(np.prod(np.asarray(shape, dtype=np.float64))) <= max_voxels:
            return cfg
        cfg = cfg.replace(spacing_mm=float(np.max(cfg.spacing)) * 1.1)
    return cfg


def compare_sweep(sweep: Sweep, config: ReconstructConfig, plus_config: Any = None, voxel_mm: float | None = None,
                  mask: np.ndarray | None = None, progress: bool = False,
                  prior_poses: np.ndarray | None = None) -> dict[str, Any]:
    """Both methods on the same frames and poses; held-out metrics side by side.

    Parameters
    ----------
    sweep : Sweep
    config : ReconstructConfig
        The Gaussians' configuration; its ``holdout`` (at least 2) and pose options apply to both.
    plus_config : path or PlusConfig, optional
        Compounding follows its settings (and its clip rectangle is the mask when ``mask`` is None).
    voxel_mm : float, optional
        Compounding's voxel size (see the module notes).
    mask : ndarray of bool, shape (H, W), optional
        Pixels that count; default: the PLUS clip (with ``plus_config``), the sector, or all.
    prior_poses : ndarray, shape (N, 4, 4), optional
        Poses for both methods instead of resolving ``config.poses`` (e.g. an estimated fan).

    Returns
    -------
    dict
        ``compounding`` and ``gaussians`` (``ssim psnr psnr_pooled l1 l2 ncc seconds`` and details),
        ``holdout`` (frame indices), ``per_frame`` (``{"frame", "compounding", "gaussians"}`` per held-out
        frame, each method's ``ssim psnr l1 ncc``), ``poses``, ``better`` (which method wins each metric), and the
        arrays ``_frames``, ``_compounding``, ``_gaussians`` (held-out recorded and predicted frames)
        and ``_mask`` for :func:`save_compare_png` (not written to JSON).
    """
    train, test = check_holdout(sweep.n_frames, config.holdout)
    poses = (resolve_poses(sweep, config.poses, config.span_deg, config.fan_axis, config.pivot_offset_mm)
             if prior_poses is None else np.asarray(prior_poses, dtype=np.float64))
    ccfg = compound_config_for(sweep, poses, plus_config, voxel_mm)
    if mask is None:
        mask = clip_mask(sweep.shape, ccfg, sweep.sector, sweep.spacing_mm)
    mask = np.asarray(mask, dtype=bool)

    t0 = time.perf_counter()
    posed = replace(sweep, image_to_world=poses)
    pred_c, cover, test_c, _, comp = holdout_predictions(posed, config.holdout, ccfg)
    t_comp = time.perf_counter() - t0
    assert np.array_equal(test_c, test)

    t0 = time.perf_counter()
    res = reconstruct_sweep(sweep, config, progress=progress, mask=mask, prior_poses=poses)
    t_gauss = time.perf_counter() - t0
    pred_g = res.rendered[test]

    truth = sweep.frames[test]
    m_c = frame_metrics(pred_c, truth, mask)
    m_g = frame_metrics(pred_g, truth, mask)
    report: dict[str, Any] = {
        "compounding": {**{k: m_c[k] for k in _METRICS}, "seconds": t_comp,
                        "voxel_mm": float(np.max(ccfg.spacing)), "grid": comp.stats["shape"],
                        "coverage": float(cover[:, mask].mean()), "method": ccfg.method,
                        "hole_filling": [k.kind for k in ccfg.kernels] if ccfg.fill_holes else []},
        "gaussians": {**{k: m_g[k] for k in _METRICS}, "seconds": t_gauss, "gaussians": res.report["gaussians"],
                      "train": {k: res.report["train"][k] for k in _METRICS}, "preset": config.preset_name,
                      "backend": res.report["backend"], "epochs": res.report["epochs"],
                      "plan": res.report.get("plan"), "config": res.report["config"]},
        "holdout": [int(i) for i in test],
        "per_frame": [{"frame": int(f), "compounding": _frame_record(pred_c, truth, mask, j),
                       "gaussians": _frame_record(pred_g, truth, mask, j)} for j, f in enumerate(test)],
        "frames": {"total": sweep.n_frames, "train": int(train.size), "holdout": int(test.size),
                   "shape": list(sweep.shape), "spacing_mm": list(sweep.spacing_mm)},
        "poses": config.poses if prior_poses is None else "given",
    }
    better = {}
    for k in ("ssim", "psnr", "psnr_pooled", "ncc"):
        better[k] = "gaussians" if m_g[k] >= m_c[k] else "compounding"
    better["l1"] = "gaussians" if m_g["l1"] <= m_c["l1"] else "compounding"
    report["better"] = better
    report.update({"_frames": truth, "_compounding": pred_c, "_gaussians": pred_g, "_mask": mask})
    return report


def save_compare_png(path: "str | os.PathLike[str]", report: dict[str, Any], rows: int = 4) -> Path:
    """A few held-out frames: recorded, compounding, Gaussians and both absolute differences."""
    plt = pyplot()
    frames, comp, gauss = report["_frames"], report["_compounding"], report["_gaussians"]
    mask = report["_mask"]
    n = frames.shape[0]
    pick = np.unique(np.linspace(0, n - 1, min(rows, n)).round().astype(int))
    H, W = frames.shape[1:]
    cols = ("recorded", "compounding", "Gaussians", "|recorded - compounding|", "|recorded - Gaussians|")
    fig, axes = plt.subplots(len(pick), 5, figsize=(2.4 * 5, 2.4 * len(pick) * H / max(W, 1) + 0.4), squeeze=False)
    held = report["holdout"]
    for r, i in enumerate(pick):
        diff_c = np.abs(frames[i] - comp[i]) * mask
        diff_g = np.abs(frames[i] - gauss[i]) * mask
        top = max(float(diff_c.max()), float(diff_g.max()), 1e-6)
        for c, (img, vmax) in enumerate(((frames[i], 1.0), (comp[i], 1.0), (gauss[i], 1.0), (diff_c, top),
                                         (diff_g, top))):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray" if c < 3 else "magma", vmin=0, vmax=vmax)
            ax.axis("off")
            ax.set_title(f"{cols[c]}" + (f" (frame {held[i]})" if c == 0 else ""), fontsize=7)
    fig.suptitle(f"held out: compounding SSIM {report['compounding']['ssim']:.3f} PSNR "
                 f"{report['compounding']['psnr']:.2f} dB | Gaussians SSIM {report['gaussians']['ssim']:.3f} "
                 f"PSNR {report['gaussians']['psnr']:.2f} dB", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def compare_to_folder(sweep_path: "str | os.PathLike[str]", out_dir: "str | os.PathLike[str]",
                      config: ReconstructConfig, plus_config: "str | os.PathLike[str] | None" = None,
                      spacing_mm: tuple[float, float] | None = None, voxel_mm: float | None = None,
                      span: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Read a sweep, compare both methods, write ``report.json`` and ``compare.png`` into ``out_dir``.

    ``span="auto"`` estimates the fan's span and pivot offset from the frames first
    (:func:`sono3d.sweep.span.estimate_span`) and uses them for both methods.
    """
    sweep = read_sweep(sweep_path, plus_config=plus_config, spacing_mm=spacing_mm)
    if config.poses == "tracked" and sweep.image_to_world is None:
        raise InputError(f"{sweep_path}: the sweep has no poses: give them (a tracked file, a PLUS configuration, "
                         "poses.npy) or use --poses fan --span DEG (sensorless; --span auto estimates it)")
    check_holdout(sweep.n_frames, config.holdout)
    est = None
    if span == "auto":
        config, est = with_estimated_span(sweep, config)
    with about(sweep_path):  # the sweep's own poses (not rigid, say) name the file
        resolve_poses(sweep, config.poses, config.span_deg, config.fan_axis, config.pivot_offset_mm)
    report = compare_sweep(sweep, config, plus_config=plus_config, voxel_mm=voxel_mm, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = save_compare_png(out / "compare.png", report)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    public["sweep"] = {"path": str(sweep_path), "frames": sweep.n_frames, "shape": list(sweep.shape),
                       "spacing_mm": list(sweep.spacing_mm)}
    if est is not None:
        public["span_estimate"] = est
    public["outputs"] = {"compare": str(png), "report": str(out / "report.json")}
    write_report(out / "report.json", public)
    return public
