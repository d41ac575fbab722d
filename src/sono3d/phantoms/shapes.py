"""Analytic implicit shapes for phantoms: signed-distance-like fields on a voxel grid.

Each field is negative inside, positive outside and close to the Euclidean distance (mm) near its
zero set, so a border shell of a given thickness is ``-t < d <= 0`` and smooth unions blend over a
radius in mm. Zero sets are exact (an :class:`Ellipsoid`'s is exactly the ellipsoid), which makes
voxelised volumes comparable to closed-form ones.

Fields are evaluated only inside each structure's bounding box on an axis-aligned grid, with the
grid's 1D axes broadcast, so small structures cost little on a large grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sono3d.errors import InputError

__all__ = [
    "Grid",
    "Ellipsoid",
    "Structure",
    "smooth_union",
    "union",
    "ellipsoid_structure",
    "evaluate",
    "shell_labels",
    "PAPER_EXTERIOR",
    "PAPER_INTERIOR",
    "PAPER_BORDER",
]

# The sweep paper's segmentation appearance.
PAPER_EXTERIOR = 0.0
PAPER_INTERIOR = 0.5
PAPER_BORDER = 1.0

Field = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid in RAS mm: voxel ``(i, j, k)`` sits at ``origin + spacing * (i, j, k)``."""

    origin: tuple[float, float, float]
    spacing: float
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        if not (np.isfinite(self.spacing) and self.spacing > 0):
            raise InputError(f"voxel spacing must be a positive number of mm, got {self.spacing}")

    @classmethod
    def around(cls, lo: np.ndarray, hi: np.ndarray, spacing: float, margin_mm: float = 5.0) -> "Grid":
        """The smallest grid covering the box ``[lo, hi]`` (mm) plus a margin, voxel centres on ``spacing`` multiples."""
        if not (np.isfinite(spacing) and spacing > 0):
            raise InputError(f"voxel spacing must be a positive number of mm, got {spacing}")
        lo = np.floor((np.asarray(lo, dtype=np.float64) - margin_mm) / spacing) * spacing
        hi = np.ceil((np.asarray(hi, dtype=np.float64) + margin_mm) / spacing) * spacing
        shape = tuple(int(v) for v in np.round((hi - lo) / spacing).astype(int) + 1)
        return cls(origin=tuple(float(v) for v in lo), spacing=float(spacing), shape=shape)  # type: ignore[arg-type]

    @property
    def affine(self) -> np.ndarray:
        A = np.diag([self.spacing, self.spacing, self.spacing, 1.0])
        A[:3, 3] = self.origin
        return A

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))

    def box_slices(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in ``[lo, hi]`` (None when empty)."""
        o = np.asarray(self.origin)
        i0 = np.maximum(np.floor((np.asarray(lo) - o) / self.spacing).astype(int), 0)
        i1 = np.minimum(np.ceil((np.asarray(hi) - o) / self.spacing).astype(int) + 1, self.shape)
        if np.any(i1 <= i0):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(i0, i1))  # type: ignore[return-value]

    def axes(self, slices: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable world coordinates ``x[:,None,None], y[None,:,None], z[None,None,:]`` (float32)."""
        out = []
        for d, s in enumerate(slices):
            v = (self.origin[d] + self.spacing * np.arange(s.start, s.stop)).astype(np.float32)
            shape = [1, 1, 1]
            shape[d] = v.size
            out.append(v.reshape(shape))
        return out[0], out[1], out[2]


@dataclass(frozen=True)
class Ellipsoid:
    """A solid ellipsoid: centre (mm), semi-axes (mm) and the rotation whose columns are its axes in the world."""

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        if not all(np.isfinite(r) and r > 0 for r in self.radii):
            raise InputError(f"ellipsoid semi-axes must be positive, got {self.radii}")

    @property
    def volume_mm3(self) -> float:
        a, b, c = self.radii
        return float(4.0 / 3.0 * np.pi * a * b * c)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact axis-aligned bounding box ``(lo, hi)`` in mm."""
        R = np.asarray(self.rotation, dtype=np.float64)
        half = np.sqrt(((R * np.asarray(self.radii)) ** 2).sum(axis=1))
        c = np.asarray(self.centre, dtype=np.float64)
        return c - half, c + half

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance-like field (mm): exact zero set, first-order distance near the surface.

        Uses ``k0 (k0 - 1) / k1`` with ``k0 = |p / r|`` and ``k1 = |p / r^2|`` in the local frame, a
        standard bound for ellipsoids that is exact on the surface and along the axes.
        """
        R = np.asarray(self.rotation, dtype=np.float32)
        cx, cy, cz = (np.float32(v) for v in self.centre)
        dx, dy, dz = x - cx, y - cy, z - cz
        k0 = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=np.float32)
        k1 = np.zeros_like(k0)
        for a in range(3):
            loc = R[0, a] * dx + R[1, a] * dy + R[2, a] * dz
            r = np.float32(self.radii[a])
            q = loc / r
            k0 += q * q
            q /= r
            k1 += q * q
        np.sqrt(k0, out=k0)
        np.sqrt(k1, out=k1)
        centre = k1 < 1e-12
        k1[centre] = 1.0
        d = k0 * (k0 - 1.0) / k1
        d[centre] = -float(min(self.radii))
        return d


@dataclass(frozen=True)
class Structure:
    """A named solid: its field ``sdf(x, y, z)`` (mm, negative inside) and a box that contains it."""

    name: str
    label: int
    sdf: Field
    lo: np.ndarray
    hi: np.ndarray


def ellipsoid_structure(name: str, label: int, ellipsoid: Ellipsoid) -> Structure:
    lo, hi = ellipsoid.bounds()
    return Structure(name, label, ellipsoid.sdf, lo, hi)


def smooth_union(d1: np.ndarray, d2: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum of two fields, blending over ``k`` mm (``k = 0``: plain union)."""
    if k <= 0:
        return np.minimum(d1, d2)
    h = np.clip(0.5 + 0.5 * (d2 - d1) / k, 0.0, 1.0)
    return d2 + (d1 - d2) * h - k * h * (1.0 - h)


def union(name: str, label: int, parts: list[Structure], blend_mm: float = 0.0) -> Structure:
    """One structure from several, smoothly blended over ``blend_mm`` (left to right)."""
    if not parts:
        raise InputError("a union needs at least one part")

    def sdf(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        d = parts[0].sdf(x, y, z)
        for p in parts[1:]:
            d = smooth_union(d, p.sdf(x, y, z), blend_mm)
        return d

    lo = np.min([p.lo for p in parts], axis=0) - blend_mm
    hi = np.max([p.hi for p in parts], axis=0) + blend_mm
    return Structure(name, label, sdf, lo, hi)


def evaluate(structure: Structure, grid: Grid, margin_mm: float = 2.0
             ) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """The structure's field on the grid voxels of its box (plus a margin): ``(slices, values)``.

    ``values`` has the shape of ``grid`` restricted to ``slices``; voxels outside the box are
    outside the structure by construction. Returns ``None`` when the box misses the grid.
    """
    sl = grid.box_slices(structure.lo - margin_mm, structure.hi + margin_mm)
    if sl is None:
        return None
    return sl, np.asarray(structure.sdf(*grid.axes(sl)), dtype=np.float32)


def shell_labels(sdf: np.ndarray, border_mm: float) -> np.ndarray:
    """The paper's appearance from a field: exterior 0, interior 0.5, border 1 (a shell ``border_mm`` thick).

    Inside is ``sdf <= 0``; the border is the inside voxels with ``sdf > -border_mm``.
    """
    if not (np.isfinite(border_mm) and border_mm > 0):
        raise InputError(f"border thickness must be positive, got {border_mm} mm")
    out = np.zeros(sdf.shape, dtype=np.float32)
    inside = sdf <= 0
    out[inside] = PAPER_INTERIOR
    out[inside & (sdf > -border_mm)] = PAPER_BORDER
    return out
