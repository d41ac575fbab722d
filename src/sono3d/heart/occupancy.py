"""Voxel occupancy of heart surfaces: which grid points lie inside the heart (IoU, voxel targets).

Occupancy rule
--------------
A heart surface is a union of closed triangle surfaces (chambers' outer and inner shells, the LV
myocardium's epicardium-plus-endocardium shell, valves, vessels). A point is **occupied** when it
lies inside at least one connected component of the surface (ray parity, i.e. even-odd, per
component) or inside the closed LV cavity (the template's ``lv_cavity_faces``) when the mesh
carries it. So the occupied set is the whole heart, blood pools included. Ray parity is evaluated
for all voxel centres at once by casting one ray per (z, y) row along +x and counting crossings
(:func:`inside_parity`).

Grids are boxes ``[lo, hi]`` (mm, x y z) cut into ``R`` voxels per axis; arrays are indexed
``[z, y, x]``. The evaluation (:mod:`sono3d.heart.evaluate`) and the voxel baseline's training
targets (:mod:`sono3d.heart.training`) both use these functions.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_erosion
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "surface_components",
    "inside_parity",
    "occupancy",
    "grid_centres",
    "union_box",
    "boundary_points",
    "resample_probability",
]

_EPS = (0.53728, 0.71828)  # sub-voxel ray offsets (fractions of 1e-4 voxel) that avoid vertex hits


def surface_components(faces: np.ndarray, n_points: int | None = None) -> np.ndarray:
    """Connected component index of each triangle ``[F]`` (triangles sharing a vertex connect)."""
    f = np.asarray(faces, dtype=np.int64)
    n = int(n_points if n_points is not None else (f.max() + 1 if f.size else 0))
    if f.size == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    g = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    return lab[f[:, 0]]


def grid_centres(lo: np.ndarray, hi: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
    """Spacing ``[3]`` and voxel-centre coordinates per axis (x, y, z lists of ``[R]``) of a box grid."""
    lo = np.asarray(lo, dtype=np.float64)
    h = (np.asarray(hi, dtype=np.float64) - lo) / R
    return h, [lo[a] + (np.arange(R) + 0.5) * h[a] for a in range(3)]


def inside_parity(points: np.ndarray, faces: np.ndarray, lo: np.ndarray, hi: np.ndarray, R: int) -> np.ndarray:
    """Voxel centres inside a closed triangle surface by ray parity, ``bool [R, R, R]`` ``[z, y, x]``.

    The box ``[lo, hi]`` (mm, x y z) is cut into ``R`` voxels per axis; voxel ``(k, j, i)`` has centre
    ``lo + (i, j, k + 0.5) * h``. Each (z, y) row casts a ray along +x; a voxel is inside when an odd
    number of triangles cross its row before its centre. Rows are nudged by 1e-4 voxel so that no ray
    passes exactly through a vertex or an edge.
    """
    P = np.asarray(points, dtype=np.float64)
    F = np.asarray(faces, dtype=np.int64)
    out = np.zeros((R, R, R), dtype=bool)
    if F.size == 0:
        return out
    lo = np.asarray(lo, dtype=np.float64)
    h = (np.asarray(hi, dtype=np.float64) - lo) / R
    oy, oz = _EPS[0] * 1e-4 * h[1], _EPS[1] * 1e-4 * h[2]
    tri = P[F]  # [T, 3, 3]
    ty, tz = tri[:, :, 1], tri[:, :, 2]
    j0 = np.maximum(np.ceil((ty.min(1) - oy - lo[1]) / h[1] - 0.5), 0).astype(np.int64)
    j1 = np.minimum(np.floor((ty.max(1) - oy - lo[1]) / h[1] - 0.5), R - 1).astype(np.int64)
    k0 = np.maximum(np.ceil((tz.min(1) - oz - lo[2]) / h[2] - 0.5), 0).astype(np.int64)
    k1 = np.minimum(np.floor((tz.max(1) - oz - lo[2]) / h[2] - 0.5), R - 1).astype(np.int64)
    nj, nk = np.maximum(j1 - j0 + 1, 0), np.maximum(k1 - k0 + 1, 0)
    n = nj * nk
    keep = np.flatnonzero(n > 0)
    if keep.size == 0:
        return out
    n = n[keep]
    t = np.repeat(keep, n)
    local = np.arange(t.size) - np.repeat(np.cumsum(n) - n, n)
    jj = j0[t] + local // nk[t]
    kk = k0[t] + local % nk[t]
    py = lo[1] + (jj + 0.5) * h[1] + oy
    pz = lo[2] + (kk + 0.5) * h[2] + oz
    a, b, c = tri[t, 0], tri[t, 1], tri[t, 2]

    def cross2(u0, u1, v0, v1):  # noqa: ANN001, ANN202
        return u0 * v1 - u1 * v0

    d_c = cross2(b[:, 1] - a[:, 1], b[:, 2] - a[:, 2], py - a[:, 1], pz - a[:, 2])
    d_a = cross2(c[:, 1] - b[:, 1], c[:, 2] - b[:, 2], py - b[:, 1], pz - b[:, 2])
    d_b = cross2(a[:, 1] - c[:, 1], a[:, 2] - c[:, 2], py - c[:, 1], pz - c[:, 2])
    hit = ((d_a > 0) & (d_b > 0) & (d_c > 0)) | ((d_a < 0) & (d_b < 0) & (d_c < 0))
    if not hit.any():
        return out
    area = (d_a + d_b + d_c)[hit]
    x = (d_a[hit] * a[hit, 0] + d_b[hit] * b[hit, 0] + d_c[hit] * c[hit, 0]) / area
    ix = np.clip(np.ceil((x - lo[0]) / h[0] - 0.5), 0, R).astype(np.int64)
    flat = (kk[hit] * R + jj[hit]) * (R + 1) + ix
    counts = np.bincount(flat, minlength=R * R * (R + 1)).reshape(R, R, R + 1)[:, :, :R]
    return (np.cumsum(counts, axis=2) & 1).astype(bool)


def occupancy(points: np.ndarray, faces: np.ndarray, lo: np.ndarray, hi: np.ndarray, R: int,
              components: np.ndarray | None = None, cavity_faces: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Heart occupancy and LV-cavity occupancy (``bool [R, R, R]``, ``[z, y, x]``) of a surface.

    The heart is the union over connected components of their parity interiors plus the LV cavity
    (see the module notes); the LV cavity is ``None`` when ``cavity_faces`` is not given. Each
    component is voxelised within its own bounding box only.
    """
    P = np.asarray(points, dtype=np.float64)
    F = np.asarray(faces, dtype=np.int64)
    comp = surface_components(F, len(P)) if components is None else np.asarray(components)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    h = (hi - lo) / R
    heart = np.zeros((R, R, R), dtype=bool)

    def add(fc: np.ndarray, target: np.ndarray) -> None:
        used = P[np.unique(fc)]
        i0 = np.clip(np.floor((used.min(0) - lo) / h).astype(np.int64) - 1, 0, R)
        i1 = np.clip(np.ceil((used.max(0) - lo) / h).astype(np.int64) + 1, 0, R)
        size = i1 - i0
        if (size <= 0).any():
            return
        m = int(size.max())
        sub_lo = lo + i0 * h
        sub = inside_parity(P, fc, sub_lo, sub_lo + m * h, m)
        target[i0[2]:i1[2], i0[1]:i1[1], i0[0]:i1[0]] |= sub[:size[2], :size[1], :size[0]]

    for g in np.unique(comp):
        add(F[comp == g], heart)
    cavity = None
    if cavity_faces is not None and np.size(cavity_faces):
        cavity = np.zeros((R, R, R), dtype=bool)
        add(np.asarray(cavity_faces, dtype=np.int64).reshape(-1, 3), cavity)
        heart |= cavity
    return heart, cavity


def union_box(*point_sets: np.ndarray, pad_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """``lo, hi`` (mm) of the union of the point sets' bounding boxes, padded."""
    p = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1, 3) for s in point_sets])
    return p.min(0) - pad_mm, p.max(0) + pad_mm


def boundary_points(occ: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Centres (mm, x y z) of occupied voxels with an empty 6-neighbour."""
    R = occ.shape[0]
    edge = occ & ~binary_erosion(occ, border_value=0)
    k, j, i = np.nonzero(edge)
    h = (np.asarray(hi) - np.asarray(lo)) / R
    return np.asarray(lo) + (np.stack([i, j, k], 1) + 0.5) * h


def resample_probability(prob: np.ndarray, box_centre: np.ndarray, box_half: np.ndarray, lo: np.ndarray,
                          hi: np.ndarray, R: int) -> np.ndarray:
    """Trilinear resampling of a probability grid ``[r, r, r]`` (``[z, y, x]`` over its box) at the
    voxel centres of ``[lo, hi]`` cut into ``R`` per axis (zero outside its box)."""
    import torch  # only this function needs it
    import torch.nn.functional as F

    _, (xs, ys, zs) = grid_centres(lo, hi, R)
    # grid_sample with align_corners=False maps -1/+1 to the outer faces of the first/last voxel
    nx = (xs - box_centre[0]) / box_half[0]
    ny = (ys - box_centre[1]) / box_half[1]
    nz = (zs - box_centre[2]) / box_half[2]
    zz, yy, xx = np.meshgrid(nz, ny, nx, indexing="ij")
    g = torch.from_numpy(np.stack([xx, yy, zz], -1)[None].astype(np.float32))
    out = F.grid_sample(torch.from_numpy(prob[None, None].astype(np.float32)), g, mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return out[0, 0].numpy()

