"""Splatting: paste every clipped pixel of every frame into the voxel grid (numba, PLUS's loop order).

*Nearest*: a pixel lands in the voxel it rounds to. *Linear*: it is spread over the eight
surrounding voxels with trilinear weights (PLUS skips a pixel whose eight neighbours are not all
inside the grid; so do we). *Mean* compounding keeps the weighted mean of all contributions, *max*
the brightest, *latest* the last frame's (ties inside a frame go to the last pixel in raster
order); with linear splatting, max and latest only touch neighbours of trilinear weight >= 1/8.
"""

from __future__ import annotations

import numba
import numpy as np

from sono3d.errors import InputError
from sono3d.sweep.compound.config import COMPOUNDING_MODES, INTERPOLATION_METHODS

__all__ = ["splat_frames"]

# PLUS stores accumulation as 16-bit fixed point with 256 per full pixel; a voxel whose rounded
# accumulation is 0 counts as a hole, i.e. total trilinear weight below 1/512.
_MIN_ACCUMULATION = 0.5 / 256.0
# Trilinear neighbours lighter than this are not touched by max / latest compounding (PLUS).
_MIN_CORNER_WEIGHT = 0.125

_MODE_CODES = {"mean": 0, "max": 1, "latest": 2}
# Frames converted to float32 per kernel call (64 frames of 512x512: 64 MiB).
_CHUNK = 64


@numba.njit(cache=True, nogil=True)
def _splat_kernel(frames, A, rows, cols, dims, linear, mode, threshold, acc, out):  # noqa: ANN001, ANN202
    """Paste every masked pixel of every frame, in acquisition then raster order (PLUS's loop).

    ``acc`` and ``out`` are flat float64 grids: summed weights and, for mean, summed
    ``weight * value``; for max / latest, the current value. Returns (pasted, considered).
    """
    n_frames = frames.shape[0]
    n_pix = rows.shape[0]
    d0, d1, d2 = dims[0], dims[1], dims[2]
    pasted = 0
    considered = 0
    for n in range(n_frames):
        a = A[n]
        for p in range(n_pix):
            r = rows[p]
            c = cols[p]
            v = frames[n, r, c]
            if v < threshold:
                continue
            considered += 1
            x = a[0, 0] * c + a[0, 1] * r + a[0, 3]
            y = a[1, 0] * c + a[1, 1] * r + a[1, 3]
            z = a[2, 0] * c + a[2, 1] * r + a[2, 3]
            if not linear:
                i = int(np.floor(x + 0.5))
                j = int(np.floor(y + 0.5))
                k = int(np.floor(z + 0.5))
                if i < 0 or j < 0 or k < 0 or i >= d0 or j >= d1 or k >= d2:
                    continue
                pasted += 1
                f = (i * d1 + j) * d2 + k
                acc[f] += 1.0
                if mode == 0:
                    out[f] += v
                elif mode == 1:
                    if acc[f] == 1.0 or v > out[f]:
                        out[f] = v
                else:
                    out[f] = v
                continue
            fi = np.floor(x)
            fj = np.floor(y)
            fk = np.floor(z)
            tx = x - fi
            ty = y - fj
            tz = z - fk
            i0 = int(fi)
            j0 = int(fj)
            k0 = int(fk)
            # PLUS's bounds check: every neighbour with a nonzero weight must be inside the grid.
            i1 = i0 + (1 if tx != 0.0 else 0)
            j1 = j0 + (1 if ty != 0.0 else 0)
            k1 = k0 + (1 if tz != 0.0 else 0)
            if i0 < 0 or j0 < 0 or k0 < 0 or i1 >= d0 or j1 >= d1 or k1 >= d2:
                continue
            pasted += 1
            for bi in range(2):
                wi = tx if bi else 1.0 - tx
                for bj in range(2):
                    wj = ty if bj else 1.0 - ty
                    for bk in range(2):
                        w = wi * wj * (tz if bk else 1.0 - tz)
                        if w == 0.0:
                            continue
                        if mode != 0 and w < _MIN_CORNER_WEIGHT:
                            continue
                        f = ((i0 + bi) * d1 + (j0 + bj)) * d2 + (k0 + bk)
                        first = acc[f] == 0.0
                        acc[f] += w
                        if mode == 0:
                            out[f] += w * v
                        elif mode == 1:
                            if first or v > out[f]:
                                out[f] = v
                        else:
                            out[f] = v
    return pasted, considered


def splat_frames(frames: np.ndarray, pixel_to_voxel: np.ndarray, mask: np.ndarray, shape: tuple[int, int, int],
                 method: str = "linear", compounding: str = "mean", pixel_threshold: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Paste frames into a voxel grid (compiled with numba; one pass over the pixels).

    Parameters
    ----------
    frames : ndarray, shape (N, H, W)
        Grey levels, in acquisition order (it matters for ``"latest"``).
    pixel_to_voxel : ndarray, shape (N, 4, 4)
        Pixel ``(col, row, 0, 1)`` to continuous voxel index ``(i, j, k, 1)``.
    mask : ndarray of bool, shape (H, W)
        Pixels to paste.
    shape : (I, J, K)
        Grid size.
    method, compounding : str
        See :class:`CompoundConfig`.
    pixel_threshold : float, optional
        Skip pixels darker than this.

    Returns
    -------
    values : ndarray, float32, shape (I, J, K)
        Compounded values, 0 where nothing was recorded.
    accumulation : ndarray, float32, shape (I, J, K)
        Summed weights, 0 where not recorded (below 1/512: PLUS rounds its 8.8 fixed-point
        accumulation buffer to 0 there).
    counts : dict
        ``pixels`` pasted into the grid and ``outside`` (kept by the mask but off the grid).
    """
    if method not in INTERPOLATION_METHODS:
        raise InputError(f"unknown interpolation {method!r}")
    if compounding not in COMPOUNDING_MODES:
        raise InputError(f"unknown compounding {compounding!r}")
    frames = np.asarray(frames)
    A = np.ascontiguousarray(pixel_to_voxel, dtype=np.float64)
    if A.shape != (frames.shape[0], 4, 4):
        raise InputError(f"need one 4x4 matrix per frame, got {A.shape} for {frames.shape[0]} frames")
    dims = np.asarray(shape, dtype=np.int64)
    nvox = int(np.prod(dims))
    rows, cols = (np.ascontiguousarray(v, dtype=np.int64) for v in np.nonzero(mask))
    acc = np.zeros(nvox, dtype=np.float64)
    out = np.zeros(nvox, dtype=np.float64)
    threshold = -np.inf if pixel_threshold is None else float(pixel_threshold)
    pasted = considered = 0
    # A chunk of frames at a time as float32 (the kernel's type): a large float16 sweep is never
    # copied whole. The kernel continues in acquisition order, so the result is the one-pass result.
    for s in range(0, frames.shape[0], _CHUNK):
        chunk = np.ascontiguousarray(frames[s:s + _CHUNK], dtype=np.float32)
        p, c = _splat_kernel(chunk, A[s:s + _CHUNK], rows, cols, dims, method == "linear",
                             _MODE_CODES[compounding], threshold, acc, out)
        pasted += p
        considered += c
    recorded = acc >= _MIN_ACCUMULATION
    values = np.zeros(nvox, dtype=np.float32)
    if compounding == "mean":
        values[recorded] = out[recorded] / acc[recorded]
    else:
        values[recorded] = out[recorded]
    acc[~recorded] = 0.0
    counts = {"pixels": int(pasted), "outside": int(considered - pasted)}
    return values.reshape(shape), acc.astype(np.float32).reshape(shape), counts
