"""Read a sweep and choose the reconstruction's defaults (the ``auto`` preset).

A fixed recipe cannot serve every sweep: a sparse tracked sweep (the PLUS spine phantom, 21 frames
1-3 mm apart, 820x616 pixels of 0.08 mm) needs the model to stay smooth across the gaps between
frames, a dense one (200 frames 0.27 mm apart) has frames that repeat each other, and the paper's
fixed 120 Gaussians per slice is as many for a flat frame as for a detailed one. :func:`profile`
measures what matters, :func:`plan_config` turns it into settings:

* ``spacing_mm``: the median elevational distance between neighbouring training frames (at the
  middle of the imaged region, :func:`sono3d.sweep.seed.elevation_positions`);
* ``detail_mm``: the speckle's size, the lateral shift at which the frames' high-passed
  correlation falls to 1/2 (:func:`sono3d.sweep.span.lateral_correlation`; frames without speckle,
  like the phantom's label images, get 2 pixels);
* ``pixel_mm``, the imaged area and the number of training frames.

The rules (each measured on the phantom and the real sweeps; see ``docs/sweep.md``) pick one of two
regimes by comparing the widest gap between training frames with the ``fast`` preset's initial
standard deviation (``exp(1.6)`` paper pixels):

* ``bridged`` (gap at most :data:`BRIDGE` of those): the additive Gaussians reach across every gap;
  the ``fast`` preset as it is (the phantom at 50 and 100 frames, the dense ultranerf sweep). A faint
  start there measured worse (phantom, 100 frames: held-out pooled PSNR 29.3 against 29.8 dB);
* ``sparse`` (wider gaps: the PLUS spine sweep, the phantom at 25 frames): the blended (normalised)
  model seeded on the training frames (:mod:`sono3d.sweep.seed`, intensities fitted by SIRT), its
  in-plane grid as fine as the speckle (``detail_mm``, at least 2 pixels, at most
  :data:`MAX_PER_FRAME` per frame), its standard deviation along the frame's normal the median gap
  and never less, slices as thick as the median gap, :data:`SPARSE_EPOCHS` epochs of batches of 2,
  an intensity rate of 5 % of the fitted intensities' median per step (they start fitted), an L2 term
  (:data:`L2_WEIGHT`) beside the L1 + SSIM loss, no standard deviation under a pixel.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from sono3d.errors import InputError
from sono3d.sweep.initialise import paper_pixel_mm
from sono3d.sweep.seed import elevation_positions
from sono3d.sweep.span import highpass, lateral_correlation
from sono3d.types import Sweep

__all__ = ["profile", "plan_config", "elevational_correlation", "BRIDGE", "SPARSE_EPOCHS", "MAX_PER_FRAME",
           "L2_WEIGHT"]

#: a sweep is "bridged" when its widest gap between training frames is at most this many of the
#: fast preset's initial standard deviations (gap over that deviation: dense ultranerf 0.3, phantom at
#: 100 and 50 frames 0.9 and 1.9 (bridged); phantom at 25 frames 3.8, the spine sweep 3.4 (sparse))
BRIDGE = 2.0
#: epochs of the sparse recipe (after the SIRT fit)
SPARSE_EPOCHS = 15
#: most Gaussians seeded per training frame by the sparse recipe (compute)
MAX_PER_FRAME = 8000
#: weight of the L2 term the sparse recipe adds to the loss (held-out PSNR is an L2 score)
L2_WEIGHT = 2.0


def elevational_correlation(frames: np.ndarray, poses: np.ndarray, mask: np.ndarray, max_step: int = 3,
                            max_pairs: int = 24) -> tuple[float, list[tuple[float, float]]]:
    """How the speckle of two frames correlates against their distance, from their poses.

    For frames ``i`` and ``i + k`` (``k = 1..max_step``), the high-passed (:func:`~sono3d.sweep.span.highpass`)
    frame ``i + k`` is resampled
    (bilinearly) at the orthogonal projection of frame ``i``'s pixels onto its plane, and correlated
    with frame ``i`` over the mask; the distance is that of the planes at the mask's centre.

    Returns
    -------
    rho1 : float
        Median correlation of neighbouring frames (``k = 1``).
    points : list of (distance_mm, correlation)
        Median correlation per step ``k`` against the median distance.
    """
    from scipy import ndimage

    P = np.asarray(poses, dtype=np.float64)
    N = len(P)
    cache: dict[int, np.ndarray] = {}

    def hp(j: int) -> np.ndarray:
        if j not in cache:
            cache[j] = highpass(frames[j][None])[0]
        return cache[j]

    rows, cols = np.nonzero(mask)
    sub = np.linspace(0, rows.size - 1, min(rows.size, 20000)).round().astype(int)
    r, c = rows[sub].astype(np.float64), cols[sub].astype(np.float64)
    centre = np.array([cols.mean(), rows.mean()])
    out = []
    for k in range(1, min(max_step, N - 1) + 1):
        rho, dist = [], []
        for i in np.unique(np.linspace(0, N - 1 - k, min(max_pairs, N - k)).round().astype(int)):
            A, B = P[i], P[i + k]
            x = c[:, None] * A[:3, 0] + r[:, None] * A[:3, 1] + A[:3, 3]  # world points of frame i
            # pixel coordinates of their projections on frame i + k (least squares in its plane)
            J = B[:3, :2]
            pc = np.linalg.lstsq(J, (x - B[:3, 3]).T, rcond=None)[0]  # (2, n): col, row
            vals = ndimage.map_coordinates(hp(i + k), [pc[1], pc[0]], order=1, mode="constant", cval=np.nan)
            ok = np.isfinite(vals)
            if ok.sum() < 100:
                continue
            a = hp(i)[rows[sub], cols[sub]][ok]
            b = vals[ok]
            a, b = a - a.mean(), b - b.mean()
            den = math.sqrt(float((a * a).sum() * (b * b).sum()))
            if den > 0:
                rho.append(float((a * b).sum()) / den)
                xc = centre[0] * A[:3, 0] + centre[1] * A[:3, 1] + A[:3, 3]
                n = np.cross(B[:3, 0], B[:3, 1])
                dist.append(abs(float(n @ (xc - B[:3, 3]))) / float(np.linalg.norm(n)))
        if rho:
            out.append((float(np.median(dist)), float(np.median(rho))))
    if not out:
        return math.nan, []
    return out[0][1], out


def profile(sweep: Sweep, poses: np.ndarray, train_index: np.ndarray, mask: np.ndarray,
            max_frames: int = 8) -> dict[str, Any]:
    """What the planner reads from a sweep (see the module notes); all lengths in mm."""
    train = np.asarray(train_index)
    if train.size < 2:
        raise InputError("planning a reconstruction needs at least 2 training frames")
    P = np.asarray(poses, dtype=np.float64)[train]
    z = elevation_positions(P, mask)
    steps = np.diff(z)
    dy, dx = sweep.spacing_mm
    pixel = float(min(dy, dx))
    pick = train[np.unique(np.linspace(0, train.size - 1, min(max_frames, train.size)).round().astype(int))]
    try:
        lag_mm, lag_rho = lateral_correlation(highpass(sweep.frames[pick]), mask, dx)
        detail = float(np.interp(0.5, lag_rho[::-1], lag_mm[::-1]))
        speckle = True
    except InputError:
        detail, speckle = 2.0 * pixel, False
    # neighbouring training frames (consecutive in the training set, as a held-out frame's are)
    rho1, curve = elevational_correlation(sweep.frames[train], P, mask)
    frames = sweep.frames[pick][:, mask]
    return {
        "train_frames": int(train.size),
        "spacing_mm": float(np.median(steps)) if steps.size else 0.0,
        "max_gap_mm": float(steps.max()) if steps.size else 0.0,
        "length_mm": float(z[-1]),
        "pixel_mm": pixel,
        "detail_mm": max(detail, pixel),
        "speckle": speckle,
        "area_mm2": float(mask.sum()) * dy * dx,
        "pixels": int(mask.sum()),
        "mean": float(frames.mean()),
        "contrast": float(frames.std()),
        "neighbour_correlation": rho1,
        "elevational_curve": curve,
    }


def plan_config(config: Any, sweep: Sweep, poses: np.ndarray, train_index: np.ndarray,
                mask: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The ``auto`` preset made concrete for ``sweep``: a config (``auto`` off) and the plan's record.

    Fields named in ``config.fixed`` (set by the user) are kept. See the module notes for the rules.
    """
    prof = profile(sweep, poses, train_index, mask)
    n = prof["train_frames"]
    # the fast preset's initial standard deviation (exp(1.6) paper pixels, at least a pixel)
    sigma_fast = max(math.exp(config.init_log_scale_px) * paper_pixel_mm(sweep.shape, sweep.spacing_mm),
                     max(sweep.spacing_mm))
    if prof["max_gap_mm"] <= BRIDGE * sigma_fast:
        # the additive model's Gaussians reach across every gap: the fast recipe
        regime = "bridged"
        chosen: dict[str, Any] = {}
    else:
        # gaps wider than the Gaussians: the blended model on the training frames, fitted by SIRT,
        # its in-plane grid as fine as the speckle, its profile along the sweep a median gap wide and
        # kept so (a held-out frame between two training frames is reached from both)
        regime = "sparse"
        pitch = max(prof["detail_mm"], 2.0 * prof["pixel_mm"])
        per_frame = int(np.clip(prof["area_mm2"] / pitch**2, 64, MAX_PER_FRAME))
        pitch = math.sqrt(prof["area_mm2"] / per_frame)
        chosen = {
            "init": "frames", "blend": True, "layer_mm": None, "gaussians_per_slice": per_frame,
            "init_sigma_mm": (0.72 * pitch, prof["spacing_mm"]), "min_scale_elev_mm": prof["spacing_mm"],
            "batch": 2 if n >= 4 else 1, "epochs": SPARSE_EPOCHS, "lr_intensity_rel": 0.05, "min_scale_px": 1.0,
            "slice_thickness_mm": prof["spacing_mm"], "l2_weight": L2_WEIGHT,
        }
    keep = set(config.fixed)
    changes = {k: v for k, v in chosen.items() if k not in keep}
    planned = replace(config, auto=False, **changes)
    record = {"regime": regime, "profile": prof, "chosen": changes, "fast_sigma_mm": sigma_fast,
              "fixed": sorted(keep)}
    return planned, record
