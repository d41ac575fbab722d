"""Hole filling, PLUS-style: unrecorded voxels get the first kernel (in order) that succeeds.

Gaussian, Gaussian weighted by the accumulation buffer, inverse distance and nearest neighbour
need more than ``min_ratio`` of the ``size^3`` cube to be known; sticks interpolate linearly between
the nearest recorded voxels on either side along 13 directions. Kernels read only originally
recorded voxels (one pass, like PLUS), as compiled loops (numba) that visit only the holes within a
kernel's reach of data. Holes farther than ``max_hole_mm / 2`` from any recorded voxel stay empty.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage

from sono3d.errors import InputError
from sono3d.sweep.compound.config import HoleKernel

__all__ = ["fill_holes"]

# The 13 stick directions of vtkPlusFillHolesInVolume (one of each +/- pair).
_STICK_DIRECTIONS = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, -1, 0], [1, 0, -1],
     [0, 1, -1], [1, 1, 1], [-1, 1, 1], [1, -1, 1], [-1, -1, 1]], dtype=np.int64)


def _kernel_weights(kernel: HoleKernel) -> np.ndarray:
    """The ``(size, size, size)`` weights of a neighbourhood kernel, as PLUS tabulates them."""
    r = np.arange(kernel.size, dtype=np.float64) - (kernel.size - 1) / 2
    d2 = r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2
    if kernel.kind.startswith("gaussian"):
        return np.exp(-d2 / (2.0 * kernel.stdev**2))  # PLUS's normalising factor cancels out
    if kernel.kind == "inverse_distance":
        return np.divide(1.0, np.sqrt(d2), out=np.zeros_like(d2), where=d2 > 0)
    return np.ones_like(d2)


@numba.njit(cache=True, nogil=True)
def _neighbourhood_kernel(values, known, weight, use_weight, pts, kern, min_count, nearest, out, ok):  # noqa: ANN001, ANN202
    """PLUS's neighbourhood kernels at the hole voxels ``pts`` (M, 3); results in ``out``/``ok`` (M,).

    Weighted mean of the known voxels of the cube (``kern`` times ``weight`` when ``use_weight``);
    ``nearest``: plain mean over the smallest cube (radius 1, 2, ...) that holds a known voxel.
    Either way the voxel counts only if more than ``min_count`` known voxels were found.
    """
    d0, d1, d2 = values.shape
    h = kern.shape[0] // 2
    for m in range(pts.shape[0]):
        x, y, z = pts[m, 0], pts[m, 1], pts[m, 2]
        r_first = 1 if nearest else h
        for r in range(r_first, h + 1):
            cnt = 0
            sw = 0.0
            swv = 0.0
            for a in range(max(x - r, 0), min(x + r, d0 - 1) + 1):
                for b in range(max(y - r, 0), min(y + r, d1 - 1) + 1):
                    for c in range(max(z - r, 0), min(z + r, d2 - 1) + 1):
                        if known[a, b, c]:
                            cnt += 1
                            w = 1.0 if nearest else kern[a - x + h, b - y + h, c - z + h]
                            if use_weight:
                                w *= weight[a, b, c]
                            sw += w
                            swv += w * values[a, b, c]
            if cnt > 0:
                if cnt > min_count and sw > 0.0:
                    out[m] = swv / sw
                    ok[m] = True
                break


def _near(known: np.ndarray, radius: int) -> np.ndarray:
    """Voxels with a known voxel within ``radius`` along every axis (a cube), as bool."""
    return ndimage.maximum_filter(known.view(np.uint8), size=2 * radius + 1, mode="constant", cval=0) > 0


def _reach(kernel: HoleKernel) -> int:
    """How far (voxels, along every axis) a kernel looks for known voxels."""
    # A stick's nearer end is at most L - 2 steps away (the whole stick spans at most L voxels).
    return kernel.stick_length - 2 if kernel.kind == "stick" else (kernel.size - 1) // 2


def _kernel_fill(values: np.ndarray, known: np.ndarray, pts: np.ndarray, kernel: HoleKernel,
                 accumulation: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Values ``(M,)`` and success ``(M,)`` of one kernel at the hole voxels ``pts`` ``(M, 3)``."""
    out = np.zeros(pts.shape[0], dtype=np.float64)
    ok = np.zeros(pts.shape[0], dtype=np.bool_)
    if kernel.kind == "stick":
        _stick_kernel(values, known, pts, _STICK_DIRECTIONS, int(kernel.stick_length), int(kernel.n_sticks), out, ok)
        return out, ok
    use_weight = kernel.kind == "gaussian_accumulation"
    if use_weight and accumulation is None:
        raise InputError("the gaussian_accumulation kernel needs the accumulation buffer")
    weight = (np.ascontiguousarray(accumulation, dtype=np.float32) if use_weight
              else np.ones((1, 1, 1), dtype=np.float32))
    _neighbourhood_kernel(values, known, weight, use_weight, pts, _kernel_weights(kernel),
                          float(kernel.min_ratio * kernel.size**3), kernel.kind == "nearest", out, ok)
    return out, ok


@numba.njit(cache=True, nogil=True)
def _stick_kernel(values, known, pts, directions, L, n_sticks, out, ok):  # noqa: ANN001, ANN202
    """PLUS's stick filling for the voxels ``pts`` (M, 3); results in ``out`` / ``ok`` (M,)."""
    d0, d1, d2 = values.shape
    n_dir = directions.shape[0]
    W = np.zeros(n_dir)
    V = np.zeros(n_dir)
    for m in range(pts.shape[0]):
        x, y, z = pts[m, 0], pts[m, 1], pts[m, 2]
        for n in range(n_dir):
            dx, dy, dz = directions[n, 0], directions[n, 1], directions[n, 2]
            W[n] = 0.0
            fwd = 0
            fval = 0.0
            for j in range(1, L):  # forward: at most L - 1 steps
                a, b, c = x + j * dx, y + j * dy, z + j * dz
                if a < 0 or b < 0 or c < 0 or a >= d0 or b >= d1 or c >= d2:
                    break
                if known[a, b, c]:
                    fwd = j
                    fval = values[a, b, c]
                    break
            if fwd == 0:
                continue
            rvs = 0
            rval = 0.0
            for j in range(1, L - fwd):  # the whole stick spans at most L voxels
                a, b, c = x - j * dx, y - j * dy, z - j * dz
                if a < 0 or b < 0 or c < 0 or a >= d0 or b >= d1 or c >= d2:
                    break
                if known[a, b, c]:
                    rvs = j
                    rval = values[a, b, c]
                    break
            if rvs == 0:
                continue
            total = fwd + rvs + 1.0
            w_fwd = (rvs + 1.0) / total  # PLUS's weighting (not exactly linear interpolation)
            W[n] = 1.0 / (total * np.sqrt(dx * dx + dy * dy + dz * dz))
            V[n] = w_fwd * fval + (1.0 - w_fwd) * rval
        used = 0
        sw = 0.0
        swv = 0.0
        while used < n_sticks:
            best = 0.0
            for n in range(n_dir):
                if W[n] > best:
                    best = W[n]
            if best == 0.0:
                break
            for n in range(n_dir):  # every stick tied for the shortest counts
                if W[n] == best:
                    sw += W[n]
                    swv += W[n] * V[n]
                    used += 1
                    W[n] = 0.0
        if sw > 0.0:
            out[m] = swv / sw
            ok[m] = True


def fill_holes(values: np.ndarray, recorded: np.ndarray, kernels: tuple[HoleKernel, ...] | list[HoleKernel],
               spacing_mm: float | tuple[float, float, float] = 1.0, max_hole_mm: float | None = None,
               accumulation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fill unrecorded voxels, PLUS-style (one pass; kernels read recorded voxels only).

    Parameters
    ----------
    values : ndarray, shape (I, J, K)
        Compounded values (anything where not recorded).
    recorded : ndarray of bool, shape (I, J, K)
        Voxels that received data.
    kernels : sequence of HoleKernel
        Tried in order; the first that succeeds for a voxel sets it.
    spacing_mm : float or (3,)
        Voxel edges, for ``max_hole_mm``.
    max_hole_mm : float, optional
        Only voxels within ``max_hole_mm / 2`` of a recorded voxel are filled.
    accumulation : ndarray, shape (I, J, K), optional
        Splatting weights (needed by ``gaussian_accumulation``).

    Returns
    -------
    values : ndarray, float32, shape (I, J, K)
        Recorded voxels unchanged, filled ones set, the rest 0.
    filled : ndarray of bool
        Recorded or filled.
    """
    v = np.asarray(values, dtype=np.float32)
    known = np.ascontiguousarray(recorded, dtype=bool)
    if v.shape != known.shape or v.ndim != 3:
        raise InputError(f"values {v.shape} and recorded mask {known.shape} must be the same 3D shape")
    v = np.where(known, v, np.float32(0.0))
    todo = ~known
    if max_hole_mm is not None and known.any():
        sp = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
        dist = ndimage.distance_transform_edt(todo, sampling=sp)
        todo &= dist <= max_hole_mm / 2 + 1e-9
    out = v.copy()
    filled = known.copy()
    if known.any() and kernels:
        # Only holes with a known voxel within some kernel's reach can be filled; visit just those.
        cand = np.argwhere(todo & _near(known, max(_reach(k) for k in kernels)))
        still = np.ones(cand.shape[0], dtype=bool)
        for kernel in kernels:
            sel = np.flatnonzero(still)
            if sel.size == 0:
                break
            fv, ok = _kernel_fill(v, known, cand[sel], kernel, accumulation)
            i, j, k = cand[sel[ok]].T
            out[i, j, k] = fv[ok]
            filled[i, j, k] = True
            still[sel[ok]] = False
    return out, filled
