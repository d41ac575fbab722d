"""Overlap and surface-distance metrics: Dice, IoU, Hausdorff, average surface distance, Chamfer.

Overlaps take boolean arrays (voxelised segmentations of the same grid). Distances take point sets
``[N, 3]`` in mm or PyVista meshes (their vertices are used: sample a surface finely, or subdivide
it, when its vertices are sparse, because the distances are vertex-to-nearest-vertex).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sono3d.errors import InputError

__all__ = [
    "SurfaceDistances",
    "assd",
    "chamfer",
    "dice",
    "hausdorff",
    "iou",
    "nearest_distances",
    "surface_distances",
]


def _masks(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"segmentations differ in shape: {a.shape} vs {b.shape}")
    return a.astype(bool), b.astype(bool)


def dice(a: Any, b: Any) -> float:
    """Dice coefficient ``2 |A n B| / (|A| + |B|)`` of two boolean arrays; 1 when both are empty."""
    a, b = _masks(a, b)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def iou(a: Any, b: Any) -> float:
    """Intersection over union ``|A n B| / |A u B|`` of two boolean arrays; 1 when both are empty."""
    a, b = _masks(a, b)
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def _points(x: Any, what: str) -> np.ndarray:
    pts = np.asarray(x.points if hasattr(x, "points") else x, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"{what} must be points [N, 3] or a mesh, got shape {pts.shape}")
    if len(pts) == 0:
        raise InputError(f"{what} has no points")
    if not np.isfinite(pts).all():
        raise InputError(f"{what} has NaN or infinite coordinates")
    return pts


def nearest_distances(source: Any, target: Any) -> np.ndarray:
    """Distance (mm) from every point of ``source`` to its nearest point of ``target``, ``[N]``."""
    from scipy.spatial import cKDTree

    s = _points(source, "source")
    t = _points(target, "target")
    d, _ = cKDTree(t).query(s, k=1)
    return np.asarray(d, dtype=np.float64)


@dataclass(frozen=True)
class SurfaceDistances:
    """Symmetric surface-distance summary between two point sets (all in mm).

    Attributes
    ----------
    hausdorff : float
        ``max(max_a d(a, B), max_b d(b, A))``.
    hausdorff95 : float
        The same with the 95th percentile of each direction instead of the maximum.
    assd : float
        Average symmetric surface distance: the mean of all ``d(a, B)`` and ``d(b, A)`` pooled,
        ``(sum_a d(a, B) + sum_b d(b, A)) / (|A| + |B|)``.
    chamfer : float
        ``(mean_a d(a, B) + mean_b d(b, A)) / 2``: the mean of the two directed means (equals
        ``assd`` when both sets have the same number of points). Unsquared distances, in mm.
    """

    hausdorff: float
    hausdorff95: float
    assd: float
    chamfer: float


def surface_distances(a: Any, b: Any) -> SurfaceDistances:
    """All symmetric distances between point sets / meshes ``a`` and ``b`` (one pair of KD-trees)."""
    dab = nearest_distances(a, b)
    dba = nearest_distances(b, a)
    return SurfaceDistances(
        hausdorff=float(max(dab.max(), dba.max())),
        hausdorff95=float(max(np.percentile(dab, 95), np.percentile(dba, 95))),
        assd=float((dab.sum() + dba.sum()) / (dab.size + dba.size)),
        chamfer=float(0.5 * (dab.mean() + dba.mean())),
    )


def hausdorff(a: Any, b: Any) -> float:
    """Symmetric Hausdorff distance (mm) between point sets / meshes."""
    return surface_distances(a, b).hausdorff


def assd(a: Any, b: Any) -> float:
    """Average symmetric surface distance (mm); see :class:`SurfaceDistances`."""
    return surface_distances(a, b).assd


def chamfer(a: Any, b: Any) -> float:
    """Chamfer distance (mm): the mean of the two directed mean nearest-point distances.

    ``(mean_{a in A} min_b |a - b| + mean_{b in B} min_a |a - b|) / 2``, with unsquared
    Euclidean distances so the result is in mm (some papers sum squared distances instead).
    """
    return surface_distances(a, b).chamfer
