"""Evaluation of a sweep reconstruction: frame metrics on training and held-out frames, volume metrics.

Frame metrics of a set of frames (each restricted to the sector when there is one): ``l1``,
``l2`` (mean squared error), ``ssim``, ``psnr`` and ``ncc``, each the mean over the frames of the
frame's value -- the definitions of the compounding baseline's hold-out evaluation, on the same
held-out frames, so the two are comparable.

Volume metrics compare a reconstruction with a ground-truth volume on the truth's voxel grid,
inside the region the sweep actually imaged (the convex hull of the frames' imaged pixels; outside
it nothing can be reconstructed): PSNR, NCC, and the Dice overlap of ``volume > threshold`` in both.
The threshold 0.25 suits the label appearance (exterior 0, interior 0.5, border 1): it separates
the organ (interior and border) from the background half-way between 0 and the interior level.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from sono3d.errors import InputError
from sono3d.metrics import l1, mse, ncc, psnr, ssim

__all__ = ["METRIC_KEYS", "holdout_split", "frame_metrics", "swept_region", "volume_metrics", "dice",
           "demo_comparison", "pooled_psnr"]

METRIC_KEYS = ("l1", "l2", "ssim", "psnr", "ncc")


def holdout_split(n_frames: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out frame indices; ``k = 0`` holds nothing out.

    For ``k >= 2`` this is :func:`sono3d.sweep.compound.holdout_split` (frames ``k // 2``,
    ``k // 2 + k``, ... are held out), so the Gaussian engine and the compounding baseline are
    scored on the same frames.

    Raises
    ------
    InputError
        ``k`` is 1 or negative, or too few frames remain for training (fewer than 2).
    """
    from sono3d.sweep.compound import holdout_split as split

    if k < 0 or k == 1:
        raise InputError(f"holdout must be 0 (none) or at least 2 (every k-th frame), got {k}")
    if k == 0:
        train, hold = np.arange(n_frames), np.zeros(0, dtype=int)
    else:
        train, hold = split(n_frames, k)
    if train.size < 2:
        raise InputError(f"a reconstruction needs at least 2 training frames, the sweep leaves {train.size}")
    return train, hold


def frame_metrics(rendered: np.ndarray, frames: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Similarity of rendered and recorded frames: means over frames of each frame's metrics.

    The same definitions as the compounding baseline's :func:`sono3d.sweep.compound.evaluate_holdout`
    (per-frame values, averaged ignoring undefined ones: the NCC of a constant frame is NaN).

    Parameters
    ----------
    rendered, frames : ndarray, shape (n, H, W)
    mask : ndarray of bool, shape (H, W), optional
        Pixels that count (the sector).

    Returns
    -------
    dict
        ``l1``, ``l2`` (MSE), ``ssim``, ``psnr`` (dB, data range 1), ``ncc``, ``psnr_pooled`` (from
        the mean MSE, see :func:`pooled_psnr`) and ``frames``; NaN for an empty set.
    """
    a = np.asarray(rendered, dtype=np.float64)
    b = np.asarray(frames, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"rendered frames {a.shape} and recorded frames {b.shape} differ in shape")
    n = a.shape[0]
    if n == 0:
        return {**{k: math.nan for k in METRIC_KEYS}, "psnr_pooled": math.nan, "frames": 0}
    can_ssim = min(a.shape[1:]) >= 11
    per: dict[str, list[float]] = {k: [] for k in METRIC_KEYS}
    for x, y in zip(a, b):
        per["l1"].append(l1(x, y, mask))
        per["l2"].append(mse(x, y, mask))
        per["ssim"].append(ssim(x, y, 1.0, mask) if can_ssim else math.nan)
        per["psnr"].append(psnr(x, y, 1.0, mask))
        per["ncc"].append(ncc(x, y, mask))
    out: dict[str, float] = {}
    for key, vals in per.items():
        v = np.asarray(vals, dtype=np.float64)
        out[key] = float(np.nanmean(v)) if np.any(~np.isnan(v)) else math.nan
    # PSNR of the set's mean squared error: finite and comparable even when some frames are
    # reproduced exactly (a per-frame PSNR is then infinite and so is its mean).
    out["psnr_pooled"] = pooled_psnr(out["l2"])
    out["frames"] = int(n)
    return out


def pooled_psnr(mean_mse: float) -> float:
    """``10 log10(1 / MSE)`` of a set's mean squared error (data range 1); inf for 0, NaN for NaN."""
    if not math.isfinite(mean_mse):
        return math.nan
    return math.inf if mean_mse <= 0 else -10.0 * math.log10(mean_mse)


def swept_region(affine: np.ndarray, shape: tuple[int, int, int], poses: np.ndarray,
                 frame_mask: np.ndarray) -> np.ndarray:
    """Voxels ``(X, Y, Z)`` of a grid inside the convex hull of the frames' imaged pixels.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Voxel index to mm of the grid.
    shape : (X, Y, Z)
    poses : ndarray, shape (N, 4, 4)
        ``image_to_world`` of the frames.
    frame_mask : ndarray of bool, shape (H, W)
        Imaged pixels of a frame; its outline (every 8th boundary pixel) spans the hull.
    """
    from scipy.spatial import Delaunay, QhullError

    rows, cols = np.nonzero(frame_mask)
    # Outline points of the mask: extreme columns on each row (enough for a convex hull).
    outline = []
    for r in np.unique(rows)[:: max(1, len(np.unique(rows)) // 32)]:
        c = cols[rows == r]
        outline += [(c.min(), r), (c.max(), r)]
    r_last = rows.max()
    c_last = cols[rows == r_last]
    outline += [(c_last.min(), r_last), (c_last.max(), r_last)]
    px = np.asarray(outline, dtype=np.float64)
    P = np.asarray(poses, dtype=np.float64)
    pts = px[None, :, 0:1] * P[:, None, :3, 0] + px[None, :, 1:2] * P[:, None, :3, 1] + P[:, None, :3, 3]
    pts = pts.reshape(-1, 3)
    try:
        hull = Delaunay(pts)
    except (QhullError, ValueError):  # flat sweep (all frames in one plane): nothing enclosed
        return np.zeros(shape, dtype=bool)
    X, Y, Z = shape
    out = np.zeros(shape, dtype=bool)
    ii, jj = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    for k in range(Z):
        ijk = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1).astype(np.float64)
        world = ijk @ affine[:3, :3].T + affine[:3, 3]
        out[:, :, k] = (hull.find_simplex(world) >= 0).reshape(X, Y)
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2 |a & b| / (|a| + |b|)`` of two boolean arrays (1 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def volume_metrics(recon: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None,
                   threshold: float = 0.25) -> dict[str, float]:
    """PSNR, NCC and thresholded Dice of a reconstruction against the truth on the same grid.

    Parameters
    ----------
    recon, truth : ndarray, shape (X, Y, Z)
    region : ndarray of bool, shape (X, Y, Z), optional
        Voxels that count (see :func:`swept_region`).
    threshold : float
        Foreground is ``value > threshold`` in both volumes (0.25 for label appearance).

    Returns
    -------
    dict
        ``psnr``, ``ncc``, ``dice``, ``threshold`` and ``voxels`` (count in the region).
    """
    r = np.asarray(recon, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if r.shape != t.shape:
        raise InputError(f"reconstruction {r.shape} and truth {t.shape} differ in shape")
    m = np.ones(r.shape, dtype=bool) if region is None else np.asarray(region, dtype=bool)
    if not m.any():
        raise InputError("the sweep does not cover any voxel of the truth volume")
    return {
        "psnr": float(psnr(r[m], t[m], 1.0)),
        "ncc": float(ncc(r[m], t[m])),
        "dice": float(dice(r[m] > threshold, t[m] > threshold)),
        "threshold": float(threshold),
        "voxels": int(m.sum()),
    }


def demo_comparison(out_dir: "str | os.PathLike[str]", seed: int = 0, frames: int = 50, size_px: int = 128,
                    progress: bool = True, config: Any = None) -> dict[str, Any]:
    """The whole path on a generated uterus: phantom, sweep, Gaussian reconstruction, compounding baseline.

    Builds the uterus phantom (``seed``), simulates a label-appearance fan sweep of ``frames``
    frames of ``size_px`` pixels, writes it (``sweep.seq.nrrd``) and the truth (``truth.nii.gz``),
    reconstructs it with :func:`~sono3d.sweep.export.reconstruct_to_folder` (tracked poses, every
    5th frame held out) and compounds the same training frames with the classic baseline
    (:func:`sono3d.sweep.compound.evaluate_holdout`, voxels of one pixel spacing).

    Returns
    -------
    dict
        The reconstruction report with ``baseline`` (the compounding hold-out metrics) added; also
        written to ``report.json`` in ``out_dir``.
    """
    from pathlib import Path

    from sono3d.io import write_sweep, write_volume
    from sono3d.phantoms.uterus import build_uterus
    from sono3d.simulate.sweeps import SweepConfig, simulate_sweep
    from sono3d.sweep.compound import CompoundConfig, evaluate_holdout
    from sono3d.sweep.export import reconstruct_to_folder, write_report
    from sono3d.sweep.train import ReconstructConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    phantom = build_uterus(seed=seed, mesh=False, spacing_mm=1.0)
    sweep, truth = simulate_sweep(phantom, SweepConfig(frames=frames, size_px=size_px, appearance="labels",
                                                       seed=seed))
    write_sweep(out / "sweep.seq.nrrd", sweep)
    write_volume(out / "truth.nii.gz", truth)
    cfg = config if config is not None else ReconstructConfig.from_preset("fast", seed=seed)
    report = reconstruct_to_folder(out / "sweep.seq.nrrd", out, cfg, truth_path=out / "truth.nii.gz",
                                   progress=progress)
    base = evaluate_holdout(sweep, cfg.holdout or 5, CompoundConfig(spacing_mm=max(sweep.spacing_mm)))
    report["baseline"] = {**base, "psnr_pooled": pooled_psnr(base["l2"])}
    write_report(out / "report.json", report)
    return report
