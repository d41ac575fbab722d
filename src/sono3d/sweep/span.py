"""The angular span of a sensorless fan sweep, estimated from speckle decorrelation (``--span auto``).

The fan prior (:func:`sono3d.sweep.poses.fan_prior_poses`) needs the sweep's total angle, which a
user rarely knows. Neighbouring frames of a fan share speckle in proportion to how close their
planes are, and how close they are grows with the distance from the rotation axis:

* ``lateral`` fan (a tilt about the lateral direction through a pivot ``p`` mm above the probe
  face): frames ``k`` apart are ``d = k dtheta (r + p)`` apart at depth ``r`` below the face;
* ``axial`` fan (a spin about the central beam): ``d = k dtheta |x|`` at lateral distance ``x``
  from the central column.

How speckle correlation falls with elevational distance is not observable from the frames' order
alone. It is taken from the speckle itself, assuming the elevational beam profile equals the
lateral one (a square aperture's beam is symmetric). A real probe's elevational beam is usually
wider than its lateral one: its frames then decorrelate more slowly than the model expects and the
span comes out too small by about the ratio of the two widths (on a generated 69-degree fan whose
elevational point spread is 1.7 times its lateral one: 49.7 degrees): the correlation of each
frame with itself shifted by ``d`` mm along the columns, ``rho_lat(d)``, is the model of the
correlation of two planes ``d`` apart, and a measured correlation between frames is turned into a
distance by inverting it (linear interpolation on its decreasing part). To keep that symmetry
exact, the frames are high-passed along the beam only (minus a copy blurred along the rows, which
drops the anatomy's slow changes with depth but filters the lateral and elevational directions
alike).

Procedure (:func:`estimate_span`): correlations are taken between frames ``k`` apart (``k = 1..K``)
in bands of rows (lateral fans) or columns (axial fans), the median over frame pairs. The model
predicts a band's correlation as the mean over its rows of ``rho_lat(k dtheta (r + p))``;
``dtheta`` (and for lateral fans ``p``) are fitted to the measured correlations by least squares
(a grid search, then Nelder-Mead). The span is ``(N - 1) dtheta``.

It needs speckle that is correlated between neighbouring planes, as in real ultrasound; the
project's generated B-mode sweeps draw their scatterers independently per frame and give no
estimate (an :class:`~sono3d.errors.InputError` says so).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import ndimage

from sono3d.errors import InputError
from sono3d.sweep.initialise import frame_mask
from sono3d.types import Sweep

__all__ = ["estimate_span", "with_estimated_span", "lateral_correlation", "highpass"]

_RHO_LO, _RHO_HI = 0.15, 0.85


def highpass(frames: np.ndarray, sigma_px: float = 4.0) -> np.ndarray:
    """Frames minus a copy blurred along the rows (the beam), float64 ``(N, H, W)``."""
    f = np.asarray(frames, dtype=np.float64)
    return f - ndimage.gaussian_filter1d(f, sigma_px, axis=1)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else math.nan


def _median_finite(values: list[float]) -> float:
    """Median of the finite values (NaN when none: flat frames have no correlation)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def lateral_correlation(hp: np.ndarray, mask: np.ndarray, dx_mm: float, max_lag: int = 24
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The speckle's correlation against a shift along the columns: distances (mm) and values.

    Starts at ``(0, 1)`` and stops where the correlation stops decreasing or falls below 0.1,
    so the curve can be inverted.
    """
    d, r = [0.0], [1.0]
    for lag in range(1, max_lag + 1):
        both = mask[:, lag:] & mask[:, :-lag]
        if both.sum() < 100:
            break
        val = _corr(hp[:, :, lag:][:, both], hp[:, :, :-lag][:, both])
        if not val < r[-1]:
            break
        d.append(lag * dx_mm)
        r.append(val)
        if val < 0.03:
            break
    if len(d) < 3 or r[-1] > _RHO_HI:
        raise InputError("the frames show no speckle whose correlation falls measurably along the columns: "
                         "give --span in degrees")
    return np.asarray(d), np.asarray(r)


def estimate_span(sweep: Sweep, fan_axis: str = "lateral", mask: np.ndarray | None = None, max_step: int = 6,
                  bands: int = 12) -> dict[str, Any]:
    """Estimate a fan sweep's total angle and (lateral fans) pivot offset from its frames.

    Parameters
    ----------
    sweep : Sweep
        Frames in temporal order (poses are not used).
    fan_axis : ``"lateral"`` or ``"axial"``
    mask : ndarray of bool, shape (H, W), optional
        Imaged pixels; default the sweep's sector (or all pixels).
    max_step : int
        Largest frame step ``k`` correlated.
    bands : int
        Depth (or lateral) bands.

    Returns
    -------
    dict
        ``span_deg``, ``step_deg``, ``pivot_offset_mm`` (0 for axial fans), ``correlation_half_mm`` (the
        shift at which the lateral speckle correlation falls to 1/2),
        ``points`` (distances used), ``method``.

    Raises
    ------
    InputError
        Fewer than 3 frames, an unknown fan axis, or speckle that does not decorrelate measurably.
    """
    if fan_axis not in ("lateral", "axial"):
        raise InputError(f"fan axis must be 'lateral' or 'axial', got {fan_axis!r}")
    if sweep.n_frames < 3:
        raise InputError(f"estimating a fan's span needs at least 3 frames, the sweep has {sweep.n_frames}")
    H, W = sweep.shape
    dy, dx = sweep.spacing_mm
    m = frame_mask(sweep.shape, sweep.spacing_mm, sweep.sector) if mask is None else np.asarray(mask, dtype=bool)
    hp = highpass(sweep.frames)
    lag_mm, lag_rho = lateral_correlation(hp, m, dx)
    # distance of each band from the rotation axis (mm), and the band's pixels
    if fan_axis == "lateral":
        edges = np.linspace(0, H, bands + 1).round().astype(int)
        parts = [(np.s_[a:b, :], np.arange(a, b) * dy) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    else:
        centre = (W - 1) / 2.0
        edges = np.linspace(0, W, 2 * bands + 1).round().astype(int)
        parts = [(np.s_[:, a:b], np.abs(np.arange(a, b) - centre) * dx) for a, b in zip(edges[:-1], edges[1:])
                 if b > a]
    N = sweep.n_frames
    K = min(max_step, N - 1)
    dist, meas = [], []  # per band: distances of its rows from the axis; per (band, k): correlation
    for sl, rr in parts:
        mb = m[sl]
        if mb.sum() < 50:
            continue
        step = max(1, (N - 1) // 40)
        row = [_median_finite([_corr(hp[i][sl][mb], hp[i + k][sl][mb]) for i in range(0, N - k, step)])
               for k in range(1, K + 1)]
        dist.append(rr)
        meas.append(row)
    r_band = [np.atleast_1d(np.asarray(d, dtype=np.float64)) for d in dist]
    rho = np.asarray(meas)  # (bands, K)
    use = np.isfinite(rho) & (rho > lag_rho[-1])
    if int(np.sum(use & (rho > _RHO_LO) & (rho < _RHO_HI))) < 2:
        raise InputError("neighbouring frames' speckle does not decorrelate measurably (frames too far apart, "
                         "independent speckle per frame, or no speckle): give --span in degrees")
    ks = np.arange(1, K + 1, dtype=np.float64)

    def model(theta: float, pivot: float) -> np.ndarray:
        out = np.empty_like(rho)
        for b, rb in enumerate(r_band):
            d = np.abs(ks[:, None] * theta * (rb[None, :] + pivot))  # (K, rows)
            out[b] = np.interp(d, lag_mm, lag_rho, right=0.0).mean(axis=1)
        return out

    def cost(x: np.ndarray) -> float:
        theta, pivot = math.exp(x[0]), (max(x[1], 0.0) if fan_axis == "lateral" else 0.0)
        return float(np.sum((model(theta, pivot) - rho)[use] ** 2))

    from scipy.optimize import minimize

    r_max = max(float(np.max(rb)) for rb in r_band)
    grid = [(t, p) for t in np.log(np.geomspace(lag_mm[1] / (50.0 * max(r_max, 1e-3)), math.radians(20), 60))
            for p in (np.linspace(0.0, 0.5 * r_max, 6) if fan_axis == "lateral" else [0.0])]
    x0 = min(grid, key=lambda x: cost(np.asarray(x)))
    res = minimize(cost, np.asarray(x0, dtype=np.float64), method="Nelder-Mead",
                   options={"xatol": 1e-4, "fatol": 1e-10, "maxiter": 400})
    theta = math.exp(float(res.x[0]))
    pivot = max(float(res.x[1]), 0.0) if fan_axis == "lateral" else 0.0
    span = math.degrees(theta * (N - 1))
    # smooth frames (no speckle) decorrelate by anatomy, not by the fan: the fit runs off to a
    # vanishing angle about a far pivot; such an answer is refused rather than used
    if not (0.5 <= span <= 360.0) or pivot > r_max:
        raise InputError(f"the frames do not determine the fan's span (the fit gives {span:.3g} degrees about a pivot "
                         f"{pivot:.3g} mm above the probe face): give --span in degrees")
    return {"span_deg": span, "step_deg": math.degrees(theta), "pivot_offset_mm": pivot,
            "correlation_half_mm": float(np.interp(0.5, lag_rho[::-1], lag_mm[::-1])),
            "points": int(use.sum()), "rms": math.sqrt(float(res.fun) / max(int(use.sum()), 1)),
            "method": "speckle decorrelation", "fan_axis": fan_axis}


def with_estimated_span(sweep: Sweep, config: Any) -> tuple[Any, dict[str, Any]]:
    """``--span auto``: ``config`` (a reconstruction configuration) on the fan prior with the span and
    pivot offset :func:`estimate_span` finds in ``sweep``'s frames, and the estimate."""
    est = estimate_span(sweep, config.fan_axis)
    return replace(config, poses="fan", span_deg=est["span_deg"], pivot_offset_mm=est["pivot_offset_mm"]), est
