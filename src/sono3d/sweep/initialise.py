"""Initial Gaussians: on the (known or assumed) slices, or uniform in a bounding box.

The paper's initial values (section 4.4) are opacity ``sigmoid(1)``, intensity 0.5, identity
rotation and standard deviation ``exp(0.5) ~ 1.65`` along every axis. The paper works in the pixel
units of 256 x 256 frames (its frames are resized and padded to that size), so the scale is
``exp(0.5)`` pixels of a frame whose longer side spans 256 pixels; in millimetres::

    sigma_mm = exp(0.5) * mm_per_paper_pixel,   mm_per_paper_pixel = max(H * dy, W * dx) / 256

(:func:`paper_pixel_mm`). For a 256 x 256 frame of 0.3 mm pixels that is 1.65 * 0.3 = 0.49 mm.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sono3d.errors import InputError
from sono3d.geometry.sector import sector_mask
from sono3d.sweep.gaussians import Gaussians
from sono3d.types import Sector

__all__ = [
    "PAPER_FRAME_PX",
    "paper_pixel_mm",
    "frame_mask",
    "frame_grid_pixels",
    "on_slice_means",
    "sweep_bounds",
    "uniform_means",
    "default_gaussians",
]

#: Side of the paper's square frames, in pixels (Table 2).
PAPER_FRAME_PX = 256


def paper_pixel_mm(shape: tuple[int, int], spacing_mm: tuple[float, float]) -> float:
    """Millimetres per pixel of the paper's 256-pixel frame, for frames of ``shape`` and spacing.

    The paper resizes and pads every frame to 256 x 256, so its longer side spans 256 pixels.
    """
    H, W = shape
    dy, dx = spacing_mm
    return max(H * dy, W * dx) / PAPER_FRAME_PX


def frame_mask(shape: tuple[int, int], spacing_mm: tuple[float, float], sector: Sector | None) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the imaged pixels: the sector, or the whole frame without one."""
    if sector is None:
        return np.ones(shape, dtype=bool)
    m = sector_mask(sector, shape, spacing_mm)
    if not m.any():
        raise InputError("the sweep's sector covers no pixel of the frame")
    return m


def frame_grid_pixels(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """About ``count`` pixel positions ``(n, 2)`` as ``(col, row)`` on a square grid inside ``mask``.

    The grid pitch is ``sqrt(area / count)`` pixels and its origin is shifted by a random fraction
    of a pitch, so neighbouring slices do not stack their points on the same lines. The grid is
    cut to exactly ``count`` points (a random subset) when it has more; fewer only when the mask
    has fewer pixels.
    """
    if count < 1:
        raise InputError(f"Gaussians per slice must be at least 1, got {count}")
    H, W = mask.shape
    area = float(mask.sum())
    pitch = max(math.sqrt(area / count), 1e-3)
    for _ in range(8):  # shrink the pitch until the masked grid holds enough points
        off = rng.uniform(0.0, pitch, size=2)
        cols = np.arange(off[0], W - 0.5, pitch)
        rows = np.arange(off[1], H - 0.5, pitch)
        cc, rr = np.meshgrid(cols, rows, indexing="xy")
        ci = np.clip(np.rint(cc), 0, W - 1).astype(int)
        ri = np.clip(np.rint(rr), 0, H - 1).astype(int)
        inside = mask[ri, ci]
        pts = np.stack([cc[inside], rr[inside]], axis=1)
        if len(pts) >= count or pitch <= 0.5:
            break
        pitch *= 0.9
    if len(pts) > count:
        pts = pts[np.sort(rng.choice(len(pts), size=count, replace=False))]
    return pts


def on_slice_means(poses: np.ndarray, mask: np.ndarray, per_slice: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian centres on a grid of each slice (the paper's appendix .2.1), shape ``(N * ~per_slice, 3)`` mm.

    Parameters
    ----------
    poses : ndarray, shape (N, 4, 4)
        ``image_to_world`` of the slices to seed.
    mask : ndarray of bool, shape (H, W)
        Imaged pixels (the sector).
    per_slice : int
        Points per slice.
    """
    out = []
    for M in np.asarray(poses, dtype=np.float64):
        px = frame_grid_pixels(mask, per_slice, rng)
        out.append(px[:, 0:1] * M[:3, 0] + px[:, 1:2] * M[:3, 1] + M[:3, 3])
    return np.concatenate(out, axis=0)


def sweep_bounds(poses: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world box ``(lo, hi)`` (mm) of the imaged pixels of all slices.

    Only the mask's outline matters for a box, so the corners of the masked pixels' bounding
    rectangle in each plane are used (exact for rectangles, a slight over-estimate for sectors),
    including the half pixel around each pixel centre, where on-slice points may also lie.
    """
    rows, cols = np.nonzero(mask)
    c0, c1, r0, r1 = cols.min() - 0.5, cols.max() + 0.5, rows.min() - 0.5, rows.max() + 0.5
    corners = np.array([[c0, r0], [c1, r0], [c0, r1], [c1, r1]], dtype=np.float64)
    P = np.asarray(poses, dtype=np.float64)
    pts = corners[None, :, 0:1] * P[:, None, :3, 0] + corners[None, :, 1:2] * P[:, None, :3, 1] + P[:, None, :3, 3]
    pts = pts.reshape(-1, 3)
    return pts.min(axis=0), pts.max(axis=0)


def uniform_means(lo: np.ndarray, hi: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` centres uniform in the box ``[lo, hi]`` (appendix .2.2), shape ``(n, 3)`` mm."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    return lo + (hi - lo) * rng.random((n, 3))


def default_gaussians(
    means: np.ndarray | torch.Tensor,
    scale_mm: float,
    opacity_logit: float = 1.0,
    intensity: float = 0.5,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Gaussians:
    """Gaussians at ``means`` with the paper's initial values (isotropic ``scale_mm``, identity rotation).

    Parameters
    ----------
    means : array, shape (G, 3)
        Centres in mm.
    scale_mm : float
        Standard deviation along every axis, mm (see :func:`paper_pixel_mm`).
    opacity_logit, intensity : float
        Initial opacity logit (the paper: 1, i.e. opacity 0.73) and intensity (0.5).
    """
    if not (scale_mm > 0 and math.isfinite(scale_mm)):
        raise InputError(f"initial Gaussian scale must be positive, got {scale_mm} mm")
    mu = torch.as_tensor(np.asarray(means, dtype=np.float64), dtype=dtype, device=device).reshape(-1, 3)
    G = mu.shape[0]
    quats = torch.zeros((G, 4), dtype=dtype, device=device)
    quats[:, 0] = 1.0
    return Gaussians(
        means=mu,
        log_scales=torch.full((G, 3), math.log(scale_mm), dtype=dtype, device=device),
        quats=quats,
        opacity_logits=torch.full((G,), float(opacity_logit), dtype=dtype, device=device),
        intensities=torch.full((G,), float(intensity), dtype=dtype, device=device),
    )
