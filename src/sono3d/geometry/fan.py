"""Sweeps as lists of plane poses: fans rotating about an axis through a pivot, and translations.

All poses are 4x4 ``image_to_world`` matrices (pixel ``(col, row, 0, 1)`` to mm, spacing folded in).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.transforms import axis_angle_to_matrix, rigid

__all__ = ["rotate_about", "fan_sweep", "fan_sweep_in_image", "translation_sweep", "uniform_angles"]


def uniform_angles(n: int, span_deg: float) -> np.ndarray:
    """``n`` angles in radians evenly spaced over ``[-span/2, +span/2]`` (0 for one frame)."""
    if n < 1:
        raise InputError(f"a sweep needs at least one frame, got {n}")
    if not np.isfinite(span_deg) or span_deg <= 0:
        raise InputError(f"sweep span must be a positive number of degrees, got {span_deg}")
    if n == 1:
        return np.zeros(1)
    return np.deg2rad(np.linspace(-span_deg / 2.0, span_deg / 2.0, n))


def rotate_about(pose: np.ndarray, axis: np.ndarray, pivot: np.ndarray, angle: float) -> np.ndarray:
    """Rotate a 4x4 pose by ``angle`` radians about the world line through ``pivot`` along ``axis``."""
    R = axis_angle_to_matrix(axis, angle)
    p = np.asarray(pivot, dtype=np.float64)
    T = rigid(R, p - R @ p)
    return T @ np.asarray(pose, dtype=np.float64)


def fan_sweep(
    base_pose: np.ndarray, n: int, span_deg: float, axis: np.ndarray, pivot: np.ndarray
) -> np.ndarray:
    """``n`` poses ``[n, 4, 4]``: ``base_pose`` rotated uniformly over ``span_deg`` about a world axis.

    Frame ``i`` is rotated by ``-span/2 + i * span/(n-1)``; the middle frame is ``base_pose``.
    """
    return np.stack([rotate_about(base_pose, axis, pivot, a) for a in uniform_angles(n, span_deg)])


def fan_sweep_in_image(
    base_pose: np.ndarray,
    shape: tuple[int, int],
    n: int,
    span_deg: float,
    fan_axis: Literal["lateral", "axial"] = "lateral",
    pivot_offset_mm: float = 0.0,
) -> np.ndarray:
    """A fan defined in the image's own frame, as a sensorless prior assumes it.

    Parameters
    ----------
    base_pose : ndarray, shape (4, 4)
        ``image_to_world`` of the middle frame.
    shape : (H, W)
        Image size in pixels; the probe face is the centre of the top row.
    fan_axis : ``"lateral"`` or ``"axial"``
        ``lateral``: the probe tilts (rocks) about the lateral (column) direction through the pivot,
        so planes fan out like pages of a book. ``axial``: the probe spins about the central beam
        (the row direction through the top-centre pixel), as a rotational sweep does.
    pivot_offset_mm : float
        Distance of the pivot above the probe face along the beam (mm), e.g. the radius of a
        transvaginal probe tip; 0 pivots at the face.
    """
    H, W = shape
    M = np.asarray(base_pose, dtype=np.float64)
    col_dir = M[:3, 0] / np.linalg.norm(M[:3, 0])
    row_dir = M[:3, 1] / np.linalg.norm(M[:3, 1])
    top_centre = M[:3, 3] + (W - 1) / 2.0 * M[:3, 0]
    pivot = top_centre - pivot_offset_mm * row_dir
    if fan_axis == "lateral":
        axis = col_dir
    elif fan_axis == "axial":
        axis = row_dir
    else:
        raise InputError(f"fan axis must be 'lateral' or 'axial', got {fan_axis!r}")
    return fan_sweep(M, n, span_deg, axis, pivot)


def translation_sweep(base_pose: np.ndarray, n: int, length_mm: float,
                      direction: np.ndarray | None = None) -> np.ndarray:
    """``n`` poses translated evenly over ``length_mm`` (centred on ``base_pose``).

    ``direction`` defaults to the plane normal (an elevational, 'linear' sweep).
    """
    if n < 1:
        raise InputError(f"a sweep needs at least one frame, got {n}")
    if not np.isfinite(length_mm) or length_mm <= 0:
        raise InputError(f"sweep length must be positive, got {length_mm}")
    M = np.asarray(base_pose, dtype=np.float64)
    d = M[:3, 2] if direction is None else np.asarray(direction, dtype=np.float64)
    norm = np.linalg.norm(d)
    if not np.isfinite(norm) or norm == 0:
        raise InputError("sweep direction must be a non-zero finite vector")
    d = d / norm
    offsets = np.linspace(-length_mm / 2, length_mm / 2, n) if n > 1 else np.zeros(1)
    out = np.repeat(M[None], n, axis=0)
    out[:, :3, 3] += offsets[:, None] * d
    return out
