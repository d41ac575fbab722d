"""Sector (fan) geometry of phased and curvilinear probes: polar coordinates and masks.

A :class:`~sono3d.types.Sector` lives in one image's pixel frame: its apex ``(col, row)`` in pixels,
a full opening angle about the central beam (which points down the rows, turned by ``tilt_deg``
towards +col), and a radius range in mm.
"""

from __future__ import annotations

import numpy as np

from sono3d.errors import InputError
from sono3d.types import Sector

__all__ = ["polar_coordinates", "sector_mask", "sector_for_probe", "sector_to_cartesian"]


def polar_coordinates(
    sector: Sector, shape: tuple[int, int], spacing_mm: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Radius (mm) and beam angle (radians, 0 on the central beam, + towards +col) of every pixel.

    Returns two arrays of shape ``(H, W)``.
    """
    H, W = shape
    dy, dx = spacing_mm
    rows, cols = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    ax = (rows - sector.apex_px[1]) * dy
    lat = (cols - sector.apex_px[0]) * dx
    radius = np.hypot(ax, lat)
    angle = np.arctan2(lat, ax) - np.deg2rad(sector.tilt_deg)
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    return radius, angle


def sector_mask(sector: Sector, shape: tuple[int, int], spacing_mm: tuple[float, float]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the pixels inside the fan."""
    radius, angle = polar_coordinates(sector, shape, spacing_mm)
    half = np.deg2rad(sector.angle_deg) / 2
    r0, r1 = sector.radius_mm
    return (radius >= r0) & (radius <= r1) & (np.abs(angle) <= half + 1e-12)


def sector_for_probe(
    shape: tuple[int, int],
    spacing_mm: tuple[float, float],
    angle_deg: float,
    depth_mm: float,
    probe_radius_mm: float = 0.0,
) -> Sector:
    """The sector of a probe centred on the top row of an ``(H, W)`` image.

    Parameters
    ----------
    angle_deg : float
        Full opening angle.
    depth_mm : float
        Imaging depth below the probe face, along the central beam.
    probe_radius_mm : float
        Radius of curvature of a curvilinear probe face (0 for a phased array, whose apex sits on
        the top row). The apex is placed ``probe_radius_mm`` above the top row.
    """
    H, W = shape
    dy, dx = spacing_mm
    if depth_mm <= 0:
        raise InputError(f"sector depth must be positive, got {depth_mm}")
    if probe_radius_mm < 0:
        raise InputError(f"probe radius must be >= 0, got {probe_radius_mm}")
    apex = ((W - 1) / 2.0, -probe_radius_mm / dy)
    return Sector(apex_px=apex, angle_deg=angle_deg, radius_mm=(probe_radius_mm, probe_radius_mm + depth_mm))


def sector_to_cartesian(sector: Sector, radius_mm: np.ndarray, angle_rad: np.ndarray,
                        spacing_mm: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel ``(rows, cols)`` of polar positions (radius mm, beam angle radians) in the sector."""
    dy, dx = spacing_mm
    a = np.asarray(angle_rad, dtype=np.float64) + np.deg2rad(sector.tilt_deg)
    r = np.asarray(radius_mm, dtype=np.float64)
    rows = sector.apex_px[1] + r * np.cos(a) / dy
    cols = sector.apex_px[0] + r * np.sin(a) / dx
    return rows, cols
