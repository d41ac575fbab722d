"""From a sweep file to files: a reconstruction folder (``gaussians.ply``, ``volume.nii.gz``, a PNG grid,
``report.json``), and Gaussians re-rendered into a sweep file.

The top of the sweep engine: it reads and writes files (:mod:`sono3d.io`) around
:func:`~sono3d.sweep.reconstruct.reconstruct_sweep` and the renderers of :mod:`sono3d.sweep.render`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError, about
from sono3d.io import read_sweep, read_volume, write_sweep, write_volume
from sono3d.io.atomic import atomic_path
from sono3d.io.lock import writer_lock
from sono3d.sweep.compound import CompoundConfig, clip_mask
from sono3d.sweep.gaussians import load_ply, ply_render_settings, render_comment, save_ply
from sono3d.sweep.initialise import sweep_bounds
from sono3d.sweep.poses import resolve_poses
from sono3d.sweep.raster import choose_backend
from sono3d.sweep.reconstruct import FWHM_PER_SIGMA, PRESETS, check_sweep, reconstruct_sweep
from sono3d.sweep.render import default_volume_spacing, grid_for_bounds, render_frames, sample_volume
from sono3d.sweep.span import with_estimated_span
from sono3d.viz.figures import pyplot, save_png

__all__ = ["save_slices_png", "write_report", "reconstruct_to_folder", "render_to_sweep"]


def save_slices_png(path: str | os.PathLike[str], frames: np.ndarray, rendered: np.ndarray,
                    indices: np.ndarray, held_out: np.ndarray | None = None, columns: int = 6) -> Path:
    """A PNG grid: recorded frames (top of each pair of rows) over their re-rendering (below).

    Parameters
    ----------
    frames, rendered : ndarray, shape (N, H, W)
    indices : ndarray of int
        Which frames to show (at most ``3 * columns`` are used).
    held_out : ndarray of bool, shape (N,), optional
        Frames marked "held out" in their titles.
    """
    plt = pyplot()
    idx = np.asarray(indices, dtype=int)[: 3 * columns]
    if idx.size == 0:
        raise InputError("no frames to show")
    ncol = min(columns, idx.size)
    nrow_pairs = int(math.ceil(idx.size / ncol))
    H, W = frames.shape[1:]
    fig, axes = plt.subplots(2 * nrow_pairs, ncol, figsize=(2.2 * ncol, 2.2 * 2 * nrow_pairs * H / max(W, 1) + 0.3),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for n, f in enumerate(idx):
        r, c = divmod(n, ncol)
        tag = " (held out)" if held_out is not None and bool(held_out[f]) else ""
        axes[2 * r, c].imshow(np.asarray(frames[f], dtype=np.float32), cmap="gray", vmin=0, vmax=1)
        axes[2 * r, c].set_title(f"frame {f}{tag}", fontsize=7)
        axes[2 * r + 1, c].imshow(np.clip(rendered[f], 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[2 * r + 1, c].set_title("rendered", fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, float) and not math.isfinite(o):
        return None  # JSON has no NaN/inf; null marks "undefined"
    if isinstance(o, os.PathLike):
        return str(o)
    return o


def write_report(path: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write ``report`` as indented JSON (NaN and infinities become ``null``), atomically."""
    dest = Path(path)
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    return dest


def reconstruct_to_folder(
    sweep_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: Any = None,
    truth_path: str | os.PathLike[str] | None = None,
    plus_config: str | os.PathLike[str] | None = None,
    spacing_mm: tuple[float, float] | None = None,
    progress: bool = True,
    span: str | None = None,
) -> dict[str, Any]:
    """Read a sweep, reconstruct it and write ``gaussians.ply``, ``volume.nii.gz``, ``slices.png``, ``report.json``.

    Parameters
    ----------
    sweep_path : path-like
        Any sweep :func:`sono3d.io.read_sweep` reads.
    out_dir : path-like
        Output folder (created). Every file is written atomically; ``report.json`` comes last.
    config : ReconstructConfig, optional
        Defaults to the ``fast`` preset.
    truth_path : path-like, optional
        Ground-truth volume in the sweep's world frame (adds ``volume`` metrics; its path, as given,
        is recorded as ``truth`` so that ``sono3d report`` finds it later).
    plus_config : path-like, optional
        PLUS configuration: calibration for the reader, and its clip rectangle / fan restrict the
        pixels the loss and the metrics count.
    spacing_mm : (dy, dx), optional
        Pixel spacing for files that store none.
    span : ``"auto"``, optional
        Sensorless: the fan prior with its span and pivot offset estimated from the frames
        (:func:`sono3d.sweep.span.with_estimated_span`; recorded as ``span_estimate``).

    Returns
    -------
    dict
        The report (also in ``report.json``), with ``outputs`` naming the files.
    """
    cfg = config if config is not None else PRESETS["fast"]
    with writer_lock(out_dir, "output folder"):
        sweep = read_sweep(sweep_path, plus_config=plus_config, spacing_mm=spacing_mm)
        with about(sweep_path):  # before the truth is read and the training set up, naming the file
            check_sweep(sweep)
        est = None
        if span == "auto":
            cfg, est = with_estimated_span(sweep, cfg)
        with about(sweep_path):
            resolve_poses(sweep, cfg.poses, cfg.span_deg, cfg.fan_axis, cfg.pivot_offset_mm)
        truth = read_volume(truth_path) if truth_path is not None else None
        mask = None
        if plus_config is not None:
            mask = clip_mask(sweep.shape, CompoundConfig.from_plus(plus_config), sweep.sector, sweep.spacing_mm)
        result = reconstruct_sweep(sweep, cfg, truth=truth, progress=progress, mask=mask)

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        lo, hi = sweep_bounds(result.poses, result.frame_mask)
        vs = cfg.volume_spacing_mm or default_volume_spacing(lo, hi, sweep.spacing_mm)
        affine, shape = grid_for_bounds(lo, hi, vs)
        used = result.report["config"]  # the configuration as run (the auto preset's choices included)
        volume = sample_volume(result.gaussians, affine, shape, backend=result.report["backend"], cutoff=cfg.cutoff,
                               blended=used["blend"])
        volume.array = np.clip(volume.array, 0.0, None).astype(np.float32)
        files = {
            "gaussians": save_ply(out / "gaussians.ply", result.gaussians,
                                  comments=(f"sweep {Path(sweep_path).name}", f"poses {cfg.poses}",
                                            render_comment(used["blend"], used["slice_thickness_mm"] / FWHM_PER_SIGMA))),
            "volume": write_volume(out / "volume.nii.gz", volume),
        }
        held = np.zeros(sweep.n_frames, dtype=bool)
        held[result.holdout_index] = True
        show = np.unique(np.linspace(0, sweep.n_frames - 1, min(12, sweep.n_frames)).round().astype(int))
        if result.holdout_index.size:  # make sure held-out frames appear in the grid
            show = np.unique(np.concatenate([show[: max(1, show.size - 4)], result.holdout_index[
                np.linspace(0, result.holdout_index.size - 1, min(4, result.holdout_index.size)).round().astype(int)]]))
        files["slices"] = save_slices_png(out / "slices.png", sweep.frames, result.rendered, show, held)
        report = dict(result.report)
        report["volume_grid"] = {"shape": list(shape), "spacing_mm": vs, "affine": affine.tolist()}
        report["timings"] = {**report["timings"], "export": time.perf_counter() - t0}
        report["outputs"] = {k: str(v) for k, v in files.items()} | {"report": str(out / "report.json")}
        report["sweep"] = {"path": str(sweep_path), "frames": sweep.n_frames, "shape": list(sweep.shape),
                           "spacing_mm": list(sweep.spacing_mm)}
        if truth_path is not None:
            report["truth"] = os.fspath(truth_path)
        if est is not None:
            report["span_estimate"] = est
        write_report(out / "report.json", report)
        return report


def render_to_sweep(
    gaussians_path: str | os.PathLike[str],
    sweep_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    poses: str = "tracked",
    span_deg: float = 120.0,
    fan_axis: str = "lateral",
    pivot_offset_mm: float = 0.0,
    backend: str = "auto",
    plus_config: str | os.PathLike[str] | None = None,
    spacing_mm: tuple[float, float] | None = None,
) -> Path:
    """Render a Gaussians ``.ply`` on the planes of a sweep and write the result as a sweep file.

    The output has the input's poses (as resolved by ``poses``), spacing and sector; its frames
    are the rendering clipped to [0, 1], blended and with the slice thickness the model was trained
    with when its header records them (:func:`~sono3d.sweep.gaussians.ply_render_settings`).
    """
    model = load_ply(gaussians_path)
    how = ply_render_settings(gaussians_path)  # blended and thick-slice models render as they were trained
    sweep = read_sweep(sweep_path, plus_config=plus_config, spacing_mm=spacing_mm)
    with about(sweep_path):
        M = resolve_poses(sweep, poses, span_deg, fan_axis, pivot_offset_mm)
    frames = render_frames(model, M, sweep.shape, backend=choose_backend(backend, "cpu"),
                           elevation_sigma=float(how["elevation_sigma_mm"]), blended=bool(how["blended"]))
    meta = {**sweep.meta, "rendered_from": str(gaussians_path), "poses": poses}
    out = replace(sweep, frames=np.clip(frames, 0.0, 1.0), image_to_world=M, meta=meta)
    return write_sweep(out_path, out)
