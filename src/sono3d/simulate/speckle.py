"""Speckle that is correlated in 3D: a scatterer volume seen through a 3D point spread function.

:mod:`sono3d.simulate.bmode` draws its scatterers independently per frame, so its frames share no
speckle however close their planes are. A real probe's beam has an elevational width: neighbouring
planes closer than it see partly the same scatterers, and their speckle is correlated. That
correlation is what sensorless methods read the probe's motion from (:mod:`sono3d.sweep.span`).

:func:`speckle_volume` makes such a field: complex white Gaussian scatterers on a voxel grid,
filtered by a Gaussian point spread function with standard deviations ``(lateral, axial,
elevational)`` mm along the grid's ``(x, z, y)`` axes (the canonical frame of
:func:`sono3d.sweep.poses.canonical_pose`: columns along x, the beam along -z, the normal along y),
times an optional echogenicity, then the envelope ``|.|`` scaled to about [0, 1]. Sampling it on
planes (:func:`sono3d.simulate.slicing.sample_planes`) gives frames whose speckle decorrelates with
the planes' distance as ``exp(-d^2 / (2 l^2))``, with the same ``l`` along the frame's columns and
along its normal when the lateral and elevational widths are equal.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sono3d.errors import InputError
from sono3d.types import Volume

__all__ = ["speckle_volume"]


def speckle_volume(lo_mm: tuple[float, float, float], hi_mm: tuple[float, float, float], voxel_mm: float,
                   psf_sigma_mm: tuple[float, float, float] = (0.4, 0.25, 0.4), seed: int = 0,
                   echogenicity: np.ndarray | None = None) -> Volume:
    """A speckle envelope volume over the RAS box ``[lo, hi]`` (mm).

    Parameters
    ----------
    lo_mm, hi_mm : (x, y, z)
        Opposite corners of the box.
    voxel_mm : float
        Voxel edge.
    psf_sigma_mm : (lateral, axial, elevational)
        Standard deviations of the point spread function along x, z and y (mm).
    seed : int
    echogenicity : ndarray, optional
        Scatterer amplitude per voxel (same grid), default 1 everywhere.

    Returns
    -------
    Volume
        Float32 envelope, divided by its 99th percentile and clipped to [0, 1].
    """
    lo = np.asarray(lo_mm, dtype=np.float64)
    hi = np.asarray(hi_mm, dtype=np.float64)
    if not (voxel_mm > 0 and np.all(hi > lo)):
        raise InputError(f"speckle volume needs a positive voxel and hi > lo, got {voxel_mm}, {lo_mm}, {hi_mm}")
    shape = tuple(int(v) for v in np.floor((hi - lo) / voxel_mm).astype(int) + 1)
    if int(np.prod(shape)) > 50_000_000:
        raise InputError(f"speckle volume of {shape} voxels is too large")
    rng = np.random.default_rng(seed)
    amp = 1.0 if echogenicity is None else np.asarray(echogenicity, dtype=np.float64)
    lat, ax, el = (float(v) / voxel_mm for v in psf_sigma_mm)
    sig = (lat, el, ax)  # along x, y, z
    field = [ndimage.gaussian_filter(rng.standard_normal(shape) * amp, sig, mode="wrap") for _ in range(2)]
    env = np.hypot(field[0], field[1])
    env /= max(float(np.percentile(env, 99)), 1e-12)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = lo
    return Volume(np.clip(env, 0.0, 1.0).astype(np.float32), affine, {"kind": "speckle"})
