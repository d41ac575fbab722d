"""The compounding pipeline: clip, choose the grid, splat, fill holes; and its evaluation.

:func:`compound_sweep` runs the stages of :mod:`sono3d.sweep.compound` in order on a tracked sweep.
:func:`evaluate_holdout` scores it on held-out frames with the Gaussian engine's definitions
(:mod:`sono3d.sweep.evaluate`); :func:`compare_volumes` compares two volumes in world coordinates
(e.g. against PLUS's own reconstruction).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from sono3d.errors import InputError
from sono3d.geometry.sector import sector_mask
from sono3d.metrics import dice, ncc
from sono3d.simulate.slicing import sample_planes
from sono3d.sweep.compound.config import CompoundConfig
from sono3d.sweep.compound.holes import fill_holes
from sono3d.sweep.compound.splat import splat_frames
from sono3d.sweep.evaluate import frame_metrics, holdout_split
from sono3d.sweep.poses import check_tracked_poses
from sono3d.types import Sweep, Volume

__all__ = ["CompoundResult", "clip_mask", "compare_volumes", "compound_sweep", "evaluate_holdout", "holdout_predictions",
           "output_grid", "tracked_poses"]

_MAX_VOXELS = 400_000_000
_LPS_AXES = np.diag([-1.0, -1.0, 1.0])


@dataclass
class CompoundResult:
    """What :func:`compound_sweep` returns.

    Attributes
    ----------
    volume : Volume
        Compounded grey levels (float32, 0 where nothing was recorded or filled), RAS affine.
    filled : ndarray of bool, shape (I, J, K)
        Voxels that hold data: recorded by a pixel or filled by a kernel.
    accumulation : ndarray of float32, shape (I, J, K)
        Summed splatting weights per voxel (1 per nearest-neighbour pixel, trilinear weights
        otherwise); 0 for holes, including filled ones.
    stats : dict
        Counts and timings: frames, pixels pasted and outside, grid shape, recorded and filled
        fractions, seconds per stage.
    """

    volume: Volume
    filled: np.ndarray
    accumulation: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# clipping and the output grid


def clip_mask(shape: tuple[int, int], config: CompoundConfig, sector: Any = None,
              spacing_mm: tuple[float, float] | None = None) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the pixels that are pasted (clip rectangle, fan, sector)."""
    H, W = shape
    mask = np.ones((H, W), dtype=bool)
    if config.clip_rectangle is not None:
        c0, r0, w, h = (int(v) for v in config.clip_rectangle)
        # PLUS's GetClipExtent: floor(origin + size) is included.
        mask[:] = False
        mask[max(r0, 0):min(r0 + h, H - 1) + 1, max(c0, 0):min(c0 + w, W - 1) + 1] = True
    if config.fan is not None:
        fan = config.fan
        rows, cols = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
        x = cols - fan.origin_px[0]
        y = rows - fan.origin_px[1]
        lo, hi = sorted(math.tan(math.radians(v)) for v in fan.angles_deg)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = x / y
        r2 = x * x + y * y
        mask &= (y > 0) & (ratio >= lo) & (ratio <= hi)
        mask &= (r2 >= fan.radius_px[0] ** 2) & (r2 <= fan.radius_px[1] ** 2)
    if config.use_sector and sector is not None:
        if spacing_mm is None:
            raise InputError("sector clipping needs the pixel spacing")
        mask &= sector_mask(sector, (H, W), spacing_mm)
    return mask


def _axes(config: CompoundConfig) -> np.ndarray:
    return np.eye(3) if config.grid_axes == "ras" else _LPS_AXES


def output_grid(sweep: Sweep, config: CompoundConfig, mask: np.ndarray | None = None
                ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The output grid: ``(affine (4, 4), shape (I, J, K))``.

    From ``config.grid_origin_mm`` / ``grid_shape`` when given; otherwise the bounding box (along
    ``config.grid_axes``) of every clipped pixel of every frame, with voxel (0, 0, 0) on its minimum
    corner and ``ceil(extent / spacing) + 1`` voxels per axis (the rule of current PLUS; the
    shared spine-phantom reference, from an older PLUS, has one voxel fewer per axis).
    """
    M = tracked_poses(sweep)
    R = _axes(config)
    sp = config.spacing
    if config.grid_origin_mm is not None:
        q0 = np.asarray(config.grid_origin_mm, dtype=np.float64)
        shape = tuple(int(v) for v in config.grid_shape)  # type: ignore[union-attr]
    else:
        if mask is None:
            mask = clip_mask(sweep.shape, config, sweep.sector, sweep.spacing_mm)
        if not mask.any():
            raise InputError("the clipping (rectangle, fan, sector) leaves no pixel of the frames")
        # The hull of an affine image of the mask is spanned by its border pixels.
        border = mask & ~ndimage.binary_erosion(mask, border_value=0)
        rows, cols = np.nonzero(border)
        pts = (M[:, None, :3, 0] * cols[None, :, None] + M[:, None, :3, 1] * rows[None, :, None]
               + M[:, None, :3, 3]).reshape(-1, 3)
        q = pts @ R  # coordinates along the grid axes (R is orthonormal)
        q0 = q.min(axis=0)
        extent = q.max(axis=0) - q0
        # Tolerate round-off so an extent of exactly n voxels gives n + 1, not n + 2.
        shape = tuple(int(v) + 1 for v in np.ceil(extent / sp - 1e-9))
    n = int(np.prod(np.asarray(shape, dtype=np.int64)))
    if n > _MAX_VOXELS:
        raise InputError(
            f"output grid {shape[0]}x{shape[1]}x{shape[2]} ({n / 1e6:.0f} M voxels) is too large; "
            f"use a larger spacing than {config.spacing_mm} mm"
        )
    affine = np.eye(4)
    affine[:3, :3] = R @ np.diag(sp)
    affine[:3, 3] = R @ q0
    return affine, shape  # type: ignore[return-value]


def tracked_poses(sweep: Sweep) -> np.ndarray:
    """The sweep's ``image_to_world`` ``(N, 4, 4)``, refused when absent or not rigid."""
    if sweep.image_to_world is None:
        raise InputError("the sweep has no poses (image_to_world); compounding needs a tracked sweep")
    poses = np.asarray(sweep.image_to_world, dtype=np.float64)
    check_tracked_poses(poses, sweep.spacing_mm)  # a scaled or sheared pose would paste frames out of shape
    return poses


# --------------------------------------------------------------------------------------------
# the pipeline


def compound_sweep(sweep: Sweep, config: CompoundConfig | None = None, *,
                   grid: tuple[np.ndarray, tuple[int, int, int]] | None = None) -> CompoundResult:
    """Compound a tracked sweep into a voxel volume with known poses.

    Parameters
    ----------
    sweep : Sweep
        Frames ``(N, H, W)`` with ``image_to_world`` ``(N, 4, 4)``.
    config : CompoundConfig, optional
        Defaults to ``CompoundConfig()`` (linear, mean, hole filling on, 0.5 mm).
    grid : (affine (4, 4), shape (I, J, K)), optional
        Use this grid instead of the one ``config`` defines (e.g. the grid of a larger sweep).

    Returns
    -------
    CompoundResult
        The volume (RAS affine, float32), the filled mask, the accumulation buffer and stats.

    Raises
    ------
    InputError
        A sweep without poses, clipping that keeps no pixel, or poses that put no pixel inside the grid.
    """
    config = config or CompoundConfig()
    t0 = time.perf_counter()
    M = tracked_poses(sweep)
    mask = clip_mask(sweep.shape, config, sweep.sector, sweep.spacing_mm)
    if not mask.any():
        raise InputError("the clipping (rectangle, fan, sector) leaves no pixel of the frames")
    if grid is None:
        affine, shape = output_grid(sweep, config, mask)
    else:
        affine = np.asarray(grid[0], dtype=np.float64)
        shape = tuple(int(v) for v in grid[1])  # type: ignore[assignment]
        if affine.shape != (4, 4) or len(shape) != 3 or min(shape) < 1:
            raise InputError("grid must be (4x4 affine, (I, J, K) shape)")
    A = np.linalg.inv(affine) @ M
    values, acc, counts = splat_frames(sweep.frames, A, mask, shape, config.method, config.compounding,
                                       config.pixel_threshold)
    if counts["pixels"] == 0:
        raise InputError(
            f"no pixel of the sweep falls inside the output grid {shape[0]}x{shape[1]}x{shape[2]}; "
            "check the poses and the grid origin / extent"
        )
    recorded = acc > 0
    t1 = time.perf_counter()
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if config.fill_holes and config.kernels:
        values, filled = fill_holes(values, recorded, config.kernels, spacing, config.max_hole_mm, acc)
    else:
        filled = recorded
    t2 = time.perf_counter()
    nvox = int(np.prod(shape))
    stats = {
        "frames": sweep.n_frames,
        "pixels_per_frame": int(mask.sum()),
        "pixels_pasted": counts["pixels"],
        "pixels_outside": counts["outside"],
        "shape": [int(v) for v in shape],
        "spacing_mm": [float(v) for v in spacing],
        "recorded_fraction": float(recorded.sum() / nvox),
        "filled_fraction": float(filled.sum() / nvox),
        "holes_filled": int(filled.sum() - recorded.sum()),
        "method": config.method,
        "compounding": config.compounding,
        "seconds_splat": t1 - t0,
        "seconds_fill": t2 - t1,
        "seconds": t2 - t0,
    }
    meta = {"kind": "compounded", "method": config.method, "compounding": config.compounding,
            "source": sweep.meta.get("source")}
    return CompoundResult(Volume(values, affine, meta), filled, acc, stats)


# --------------------------------------------------------------------------------------------
# evaluation


def compare_volumes(a: Volume, b: Volume, mask_a: np.ndarray | None = None, mask_b: np.ndarray | None = None,
                    order: int = 1) -> dict[str, float]:
    """Agreement of two volumes in world coordinates, on ``a``'s grid.

    ``b`` (and ``mask_b``) are resampled onto ``a``'s voxel centres through the affines
    (trilinear for values, nearest for the mask; outside ``b`` counts as empty).

    Parameters
    ----------
    a, b : Volume
    mask_a, mask_b : ndarray of bool, optional
        Voxels holding data (e.g. :attr:`CompoundResult.filled`); default: nonzero voxels.
    order : int
        Interpolation order for ``b``'s values.

    Returns
    -------
    dict
        ``ncc``: normalised cross-correlation over the voxels filled in both; ``ncc_union``: over
        the voxels filled in either; ``dice``: overlap of the two filled masks; ``n_a``, ``n_b``,
        ``n_both``: voxel counts on ``a``'s grid. NCC ignores grey scales (a PLUS ``uint8``
        volume compares directly with a [0, 1] one).
    """
    A = np.asarray(a.array, dtype=np.float64)
    ma = A != 0 if mask_a is None else np.asarray(mask_a, dtype=bool)
    if ma.shape != A.shape:
        raise InputError(f"mask of the first volume has shape {ma.shape}, not {A.shape}")
    mb_src = np.asarray(b.array) != 0 if mask_b is None else np.asarray(mask_b, dtype=bool)
    if mb_src.shape != b.shape:
        raise InputError(f"mask of the second volume has shape {mb_src.shape}, not {b.shape}")
    T = np.linalg.inv(b.affine) @ a.affine  # a-voxel to b-voxel
    ijk = np.indices(A.shape, dtype=np.float64).reshape(3, -1)
    coords = T[:3, :3] @ ijk + T[:3, 3:4]
    bv = ndimage.map_coordinates(np.asarray(b.array, dtype=np.float64), coords, order=order, mode="constant",
                                 cval=0.0).reshape(A.shape)
    mb = ndimage.map_coordinates(mb_src.astype(np.float32), coords, order=0, mode="constant",
                                 cval=0.0).reshape(A.shape) > 0.5
    both = ma & mb
    either = ma | mb
    out = {
        "n_a": int(ma.sum()),
        "n_b": int(mb.sum()),
        "n_both": int(both.sum()),
        "dice": float(dice(ma, mb)) if either.any() else math.nan,
        "ncc": float(ncc(A, bv, both)) if both.any() else math.nan,
        "ncc_union": float(ncc(A, bv, either)) if either.any() else math.nan,
    }
    return out


def holdout_predictions(sweep: Sweep, k: int = 5, config: CompoundConfig | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, CompoundResult]:
    """Compounding's prediction of the held-out frames of :func:`~sono3d.sweep.evaluate.holdout_split`.

    Compounds the training frames (hole filling as in ``config``, on by default) on the grid of the
    whole sweep and re-slices the volume on the held-out planes (trilinear,
    :func:`sono3d.simulate.slicing.sample_planes`).

    Returns
    -------
    predicted : ndarray, shape (n_test, H, W)
    covered : ndarray of bool, shape (n_test, H, W)
        Pixels that fall on filled voxels.
    test : ndarray of int
        The held-out frame indices.
    mask : ndarray of bool, shape (H, W)
        The clip mask (pixels that count).
    result : CompoundResult
        The compounded training frames.
    """
    if k < 2:
        raise InputError(f"hold-out step k must be at least 2, got {k}")
    config = config or CompoundConfig()
    train, test = holdout_split(sweep.n_frames, k, min_train=1)
    mask = clip_mask(sweep.shape, config, sweep.sector, sweep.spacing_mm)
    grid = output_grid(sweep, config, mask)
    result = compound_sweep(sweep.subset(train), config, grid=grid)
    M_test = tracked_poses(sweep)[test]
    pred = sample_planes(result.volume, M_test, sweep.shape, order=1, mask=mask)
    cover = sample_planes(Volume(result.filled.astype(np.float32), result.volume.affine), M_test, sweep.shape,
                          order=0, mask=mask)
    return pred, cover > 0.5, test, mask, result


def evaluate_holdout(sweep: Sweep, k: int = 5, config: CompoundConfig | None = None) -> dict[str, Any]:
    """Held-out-frame accuracy of compounding: the baseline the Gaussian sweep engine is scored against.

    Compares :func:`holdout_predictions` (the training frames of
    :func:`~sono3d.sweep.evaluate.holdout_split` compounded on the grid of the whole sweep, re-sliced
    on the held-out planes) with the real held-out frames inside the clip mask.

    Returns
    -------
    dict
        Means over held-out frames of ``l1``, ``l2`` (mean squared error), ``ssim``, ``psnr`` (dB,
        data range 1) and ``ncc`` (:func:`sono3d.sweep.evaluate.frame_metrics`, the definitions the
        Gaussian engine reports), ``frames``; ``coverage`` (fraction of masked held-out pixels that
        fall on filled voxels); ``n_train``, ``n_test``, ``k``; ``seconds`` (compounding).
    """
    pred, cover, test, mask, result = holdout_predictions(sweep, k, config)
    out: dict[str, Any] = frame_metrics(pred, sweep.frames[test], mask)
    out.update({"coverage": float(cover[:, mask].mean()), "n_train": int(sweep.n_frames - test.size),
                "n_test": int(test.size), "k": int(k), "seconds": result.stats["seconds"]})
    return out
