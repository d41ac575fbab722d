"""Gaussians rendered without gradients: frames on given planes and the intensity field on a voxel grid.

Both the reconstruction (re-rendered frames, the volume metrics) and the export (the NIfTI volume,
``sweep render``) use these functions; they sit below both.

The volume is sampled by rendering its own slices: voxel slice ``k`` is an image plane whose
pixel ``(col, row)`` is voxel ``(i, j) = (col, row)``, i.e. ``image_to_world = affine @ P_k`` with
``P_k`` mapping ``(col, row, 0, 1)`` to ``(col, row, k, 1)``. Rendering a few such planes at a time
through :func:`~sono3d.sweep.raster.render_slices` keeps memory bounded and reuses the fastest
rasterizer (the model is the same: ``V(x) = sum_g sigmoid(o_g) exp(-d^T Sigma^-1 d / 2) I_g``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sono3d.errors import InputError
from sono3d.sweep.blend import render_blended
from sono3d.sweep.gaussians import Gaussians
from sono3d.sweep.raster import DEFAULT_CUTOFF, render_slices
from sono3d.types import Volume

__all__ = ["render_frames", "grid_for_bounds", "sample_volume", "default_volume_spacing"]


def render_frames(gaussians: Gaussians, image_to_world: np.ndarray | torch.Tensor, shape: tuple[int, int],
                  backend: str = "reference", cutoff: float | None = DEFAULT_CUTOFF, chunk: int = 8,
                  elevation_sigma: float = 0.0, blended: bool = False) -> np.ndarray:
    """Render Gaussians on planes, ``chunk`` planes per rasterizer call, without gradients.

    Parameters
    ----------
    gaussians : Gaussians
    image_to_world : array, shape (N, 4, 4)
        Plane poses (pixel ``(col, row, 0, 1)`` to mm).
    shape : (H, W)
    backend, cutoff, elevation_sigma
        As in :func:`~sono3d.sweep.raster.render_slices` (``elevation_sigma``: slice thickness, mm).
    blended : bool
        Weighted means of the intensities instead of their sum (:mod:`sono3d.sweep.blend`).

    Returns
    -------
    ndarray, shape (N, H, W), float32
    """
    g = gaussians
    M = torch.as_tensor(np.asarray(image_to_world) if not isinstance(image_to_world, torch.Tensor)
                        else image_to_world, dtype=g.means.dtype, device=g.means.device)
    out = np.zeros((M.shape[0],) + tuple(shape), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, M.shape[0], chunk):
            draw = render_blended if blended else render_slices
            img = draw(g.means, g.log_scales, g.quats, g.opacity_logits, g.intensities,
                       M[s:s + chunk], tuple(shape), backend=backend, cutoff=cutoff,
                       elevation_sigma=elevation_sigma)
            out[s:s + chunk] = img.detach().cpu().numpy()
    return out


def grid_for_bounds(lo: np.ndarray, hi: np.ndarray, spacing_mm: float,
                    max_voxels: int = 64_000_000) -> tuple[np.ndarray, tuple[int, int, int]]:
    """An axis-aligned RAS grid covering ``[lo, hi]`` (mm): its affine and shape ``(X, Y, Z)``.

    Raises
    ------
    InputError
        A non-positive spacing, or a grid of more than ``max_voxels`` voxels.
    """
    if not (spacing_mm > 0 and math.isfinite(spacing_mm)):
        raise InputError(f"volume spacing must be positive, got {spacing_mm} mm")
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    shape = tuple(int(v) for v in np.floor((hi - lo) / spacing_mm).astype(int) + 1)
    if int(np.prod(shape)) > max_voxels:
        raise InputError(f"volume of {shape} voxels at {spacing_mm} mm is too large; use a coarser spacing")
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = lo
    return affine, shape  # type: ignore[return-value]


def default_volume_spacing(lo: np.ndarray, hi: np.ndarray, spacing_mm: tuple[float, float],
                           max_side: int = 192) -> float:
    """The larger pixel spacing, coarsened so the longest side of ``[lo, hi]`` has at most ``max_side`` voxels."""
    extent = float(np.max(np.asarray(hi) - np.asarray(lo)))
    return max(max(spacing_mm), extent / (max_side - 1))


def _slice_poses(affine: np.ndarray, nz: int) -> np.ndarray:
    """``image_to_world`` ``(Z, 4, 4)`` of the grid's k-slices (pixel (col, row) = voxel (i, j))."""
    P = np.repeat(np.eye(4)[None], nz, axis=0)
    P[:, 2, 3] = np.arange(nz)
    M = np.asarray(affine, dtype=np.float64)[None] @ P
    # Unit normal (the rasterizers only use columns 0, 1 and 3, but keep the matrix a proper pose).
    n = np.cross(M[:, :3, 0], M[:, :3, 1])
    M[:, :3, 2] = n / np.linalg.norm(n, axis=-1, keepdims=True)
    return M


def sample_volume(gaussians: Gaussians, affine: np.ndarray, shape: tuple[int, int, int],
                  backend: str = "reference", cutoff: float | None = DEFAULT_CUTOFF, chunk: int = 4,
                  blended: bool = False) -> Volume:
    """The Gaussians' intensity field on a voxel grid, as a :class:`~sono3d.types.Volume`.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Voxel index ``(i, j, k, 1)`` to RAS mm.
    shape : (X, Y, Z)
    chunk : int
        k-slices per rasterizer call.
    blended : bool
        The blended model's field (:mod:`sono3d.sweep.blend`).
    """
    X, Y, Z = (int(v) for v in shape)
    planes = _slice_poses(affine, Z)
    img = render_frames(gaussians, planes, (Y, X), backend=backend, cutoff=cutoff, chunk=chunk,
                        blended=blended)  # (Z, Y, X)
    arr = np.ascontiguousarray(img.transpose(2, 1, 0))  # -> [i, j, k]
    return Volume(array=arr, affine=np.asarray(affine, dtype=np.float64), meta={"kind": "gaussians"})
