"""Result files to compact page data: volumes, meshes, point clouds and pictures.

Everything here reads the *output files* of the engines (NIfTI, VTP, PLY, PNG, NPZ) through
:mod:`sono3d.io`, ``meshio`` and NumPy; nothing imports the engines themselves. Arrays go to the
page as little-endian base64 (``float32`` coordinates, ``int32`` triangle indices, ``uint8`` grey
levels), which plotly.js and the page's own script decode without a copy.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.mesh import triangles
from sono3d.types import Volume

__all__ = [
    "VolumeData",
    "SurfaceData",
    "b64",
    "png_data_uri",
    "image_file_data_uri",
    "volume_data",
    "isosurface",
    "mesh_label_parts",
    "gaussian_points",
    "MAX_VOXELS",
    "MAX_POINTS",
    "MAX_TRIANGLES",
]

# Page budget (the whole page should stay under 15 MB, of which plotly.js takes about 5 MB):
# a volume of at most 4 M voxels (5.3 MB of base64 at one byte a voxel), at most 50k Gaussians
# (1.1 MB) and surfaces of at most 60k triangles each (about 1.5 MB).
MAX_VOXELS = 4_000_000
MAX_POINTS = 50_000
MAX_TRIANGLES = 60_000


def b64(array: np.ndarray, dtype: str) -> str:
    """``array`` cast to little-endian ``dtype`` (``'<f4'``, ``'<i4'``, ``'u1'``), C order, as base64 text."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype)).tobytes()).decode("ascii")


def png_data_uri(image: np.ndarray) -> str:
    """A ``data:image/png`` URI of a grey ``[H, W]`` (values in [0, 1]) or RGB(A) ``uint8`` image."""
    from PIL import Image

    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_file_data_uri(path: str | Path) -> str:
    """A PNG or JPEG file as a data URI (embedded as stored, not re-encoded)."""
    p = Path(path)
    kind = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}.get(p.suffix.lower())
    if kind is None:
        raise InputError(f"{p}: not a PNG or JPEG picture")
    return f"data:image/{kind};base64," + base64.b64encode(p.read_bytes()).decode("ascii")


@dataclass(frozen=True)
class VolumeData:
    """A volume ready for the page: grey levels ``uint8`` and what they mean.

    Attributes
    ----------
    levels : ndarray, shape (X, Y, Z), uint8
        ``round(255 (clip(v, vmin, vmax) - vmin) / (vmax - vmin))``, indexed ``[i, j, k]``.
    affine : ndarray, shape (4, 4)
        Voxel index ``(i, j, k, 1)`` of ``levels`` to RAS mm (already accounts for any resampling).
    vmin, vmax : float
        Intensities of grey levels 0 and 255.
    source_shape : (int, int, int)
        Shape of the volume as stored in the file (``levels`` is smaller when it was resampled).
    """

    levels: np.ndarray
    affine: np.ndarray
    vmin: float
    vmax: float
    source_shape: tuple[int, int, int]

    @property
    def note(self) -> str | None:
        """A sentence for the page when the volume was resampled, else ``None``."""
        if tuple(self.levels.shape) == tuple(self.source_shape):
            return None
        s = "x".join(str(v) for v in self.source_shape)
        d = "x".join(str(v) for v in self.levels.shape)
        f = (np.prod(self.source_shape) / np.prod(self.levels.shape)) ** (1.0 / 3.0)
        return (f"The volume ({s} voxels) is shown resampled to {d} voxels (about {f:.2g} times coarser along each "
                f"axis) to keep this page small; the file itself is at full resolution.")

    def to_json(self) -> dict[str, Any]:
        """The page's volume record: shape, base64 grey levels, affine, intensity window, per-axis steps."""
        A = np.asarray(self.affine, dtype=np.float64)
        lin = A[:3, :3]
        # Axis-aligned grids (every sono3d reconstruction) are drawn in world mm; others along voxel axes.
        nz = np.abs(lin) > 1e-6 * np.abs(lin).max()
        aligned = bool((nz.sum(axis=0) == 1).all() and (nz.sum(axis=1) == 1).all())
        axes = []
        for a in range(3):
            col = lin[:, a]
            if aligned:
                w = int(np.argmax(np.abs(col)))
                axes.append({"start": float(A[w, 3]), "step": float(col[w]), "title": f"{'RAS'[w]} (mm)"})
            else:
                axes.append({"start": 0.0, "step": float(np.linalg.norm(col)), "title": f"voxel axis {'ijk'[a]} (mm)"})
        return {"shape": [int(v) for v in self.levels.shape], "data": b64(self.levels, "u1"),
                "affine": A.tolist(), "vmin": self.vmin, "vmax": self.vmax, "axes": axes}


def _block_mean(a: np.ndarray, s: int) -> np.ndarray:
    """Means over ``s x s x s`` blocks (edges padded by repeating the last voxel)."""
    pad = [(0, (-n) % s) for n in a.shape]
    a = np.pad(a, pad, mode="edge")
    X, Y, Z = (n // s for n in a.shape)
    return a.reshape(X, s, Y, s, Z, s).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def _fit(a: np.ndarray, affine: np.ndarray, max_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """``a`` with at most ``max_voxels`` voxels, and its affine.

    Whole ``s x s x s`` block means first (no aliasing; ``s`` the integer part of the linear
    factor), then trilinear resampling for the remaining factor below 2, corner voxel centres kept
    (``scipy.ndimage.zoom``, ``grid_mode=False``): new index ``j`` lies at old index
    ``j (m - 1) / (m' - 1)``.
    """
    from scipy.ndimage import zoom

    n = int(np.prod(a.shape))
    if n <= max_voxels:
        return a, affine
    f = (n / max_voxels) ** (1.0 / 3.0)
    s = int(f + 1e-9) if f >= 2 - 1e-9 else 1  # (tolerance: a cube root of an exact cube)
    if s > 1:
        a = _block_mean(a, s)
        # A block's centre lies (s - 1) / 2 voxels from its first voxel.
        step = np.diag([s, s, s, 1.0])
        step[:3, 3] = (s - 1) / 2.0
        affine = affine @ step
    target = [max(2, int(m * s / f + 1e-9)) for m in a.shape]
    while math.prod(target) > max_voxels:
        target[int(np.argmax(target))] -= 1
    if tuple(target) != a.shape:
        before = a.shape
        a = zoom(a, [t / m for t, m in zip(target, before)], order=1, grid_mode=False, mode="nearest")
        affine = affine @ np.diag([(m - 1) / (t - 1) for m, t in zip(before, a.shape)] + [1.0])
    return a, affine


def volume_data(volume: Volume, max_voxels: int = MAX_VOXELS) -> VolumeData:
    """Quantise a volume to grey levels for the page, resampled coarser when it is too large.

    Parameters
    ----------
    volume : Volume
        Any scalar volume (mm, RAS affine).
    max_voxels : int
        Largest number of voxels embedded; larger volumes are shown resampled (block means, then
        trilinear) to fit, never refused.
    """
    a = np.asarray(volume.array, dtype=np.float32)
    if a.ndim != 3 or min(a.shape) < 1:
        raise InputError(f"volume must be 3D, got shape {a.shape}")
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    a, aff = _fit(a, np.asarray(volume.affine, dtype=np.float64), max_voxels)
    # The window: from the lowest value to a high percentile, so a few bright voxels do not grey out
    # the rest (values above it show white).
    vmin = float(a.min())
    vmax = float(np.percentile(a, 99.9)) if a.size > 1000 else float(a.max())
    if not vmax > vmin:
        vmax = float(a.max()) if a.max() > vmin else vmin + 1.0
    levels = np.round((np.clip(a, vmin, vmax) - vmin) * (255.0 / (vmax - vmin))).astype(np.uint8)
    return VolumeData(levels=levels, affine=aff, vmin=vmin, vmax=vmax,
                      source_shape=tuple(int(v) for v in volume.array.shape))  # type: ignore[arg-type]


@dataclass(frozen=True)
class SurfaceData:
    """A triangle surface for the page: vertices ``[V, 3]`` (mm) and triangles ``[F, 3]``."""

    points: np.ndarray
    faces: np.ndarray
    decimated_from: int | None = None

    def to_mesh3d(self) -> dict[str, Any]:
        """Keyword arguments of a plotly ``Mesh3d`` (x, y, z as float32, i, j, k as int32)."""
        p = self.points.astype(np.float32)
        f = self.faces.astype(np.int32)
        return {"x": p[:, 0], "y": p[:, 1], "z": p[:, 2], "i": f[:, 0], "j": f[:, 1], "k": f[:, 2]}


def _surface_of(poly, max_triangles: int) -> SurfaceData:  # noqa: ANN001 - pyvista.PolyData
    poly = poly.triangulate()
    n = int(poly.n_cells)
    if n > max_triangles:
        poly = poly.decimate(1.0 - max_triangles / n)  # quadric decimation (VTK)
    faces = triangles(poly)
    return SurfaceData(np.asarray(poly.points, dtype=np.float64), faces, n if n > max_triangles else None)


def isosurface(volume: Volume, level: float, max_triangles: int = MAX_TRIANGLES) -> SurfaceData | None:
    """The ``level`` isosurface of a volume in world mm (VTK flying edges), decimated to ``max_triangles``.

    Returns ``None`` when the volume never crosses ``level``.
    """
    import pyvista as pv

    a = np.asarray(volume.array, dtype=np.float32)
    if not (a.min() < level < a.max()):
        return None
    grid = pv.ImageData(dimensions=a.shape)  # index space: spacing 1, origin 0
    grid.point_data["v"] = a.ravel(order="F")
    surf = grid.contour([float(level)], scalars="v", method="flying_edges")
    if surf.n_cells == 0:
        return None
    A = np.asarray(volume.affine, dtype=np.float64)
    surf.points = np.asarray(surf.points, dtype=np.float64) @ A[:3, :3].T + A[:3, 3]
    return _surface_of(surf, max_triangles)


def mesh_label_parts(mesh, label_array: str = "elemTag") -> dict[int, SurfaceData]:  # noqa: ANN001
    """Split a labelled surface into one compact surface per cell label (all triangles under ``-1`` if unlabelled).

    Each part keeps only the vertices its triangles use, in the mesh's vertex order, so two meshes
    with the same topology (ED and ES of one prediction) give parts whose vertices correspond.
    """
    tri = mesh if mesh.is_all_triangles else mesh.triangulate()
    faces = triangles(tri)
    pts = np.asarray(tri.points, dtype=np.float64)
    if label_array in tri.cell_data:
        labels = np.asarray(tri.cell_data[label_array]).astype(np.int64).ravel()
    else:
        labels = np.full(len(faces), -1, dtype=np.int64)
    parts: dict[int, SurfaceData] = {}
    for lab in np.unique(labels):
        f = faces[labels == lab]
        used, inverse = np.unique(f.ravel(), return_inverse=True)
        parts[int(lab)] = SurfaceData(pts[used], inverse.reshape(-1, 3))
    return parts


def gaussian_points(path: str | Path, max_points: int = MAX_POINTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Centres (mm) and peak contributions of the Gaussians in a sono3d ``.ply``, subsampled.

    Parameters
    ----------
    path : path-like
        ``gaussians.ply`` of ``sweep reconstruct`` (vertex properties ``x y z ... opacity intensity``).
    max_points : int
        At most this many Gaussians are kept (a seeded uniform sample).

    Returns
    -------
    means : ndarray, shape (M, 3), float32
    peak : ndarray, shape (M,), float32
        ``sigmoid(opacity) * intensity``: the grey level a Gaussian adds at its centre.
    total : int
        Number of Gaussians in the file.
    """
    import meshio

    try:
        m = meshio.read(str(path))
    except Exception as exc:  # meshio raises many types for a malformed file
        raise InputError(f"{path}: cannot read the Gaussians ({type(exc).__name__}: {exc})") from None
    pts = np.asarray(m.points, dtype=np.float32)
    data = m.point_data
    if "opacity" in data and "intensity" in data:
        peak = (1.0 / (1.0 + np.exp(-np.asarray(data["opacity"], dtype=np.float64)))
                * np.asarray(data["intensity"], dtype=np.float64)).astype(np.float32)
    else:
        peak = np.ones(len(pts), dtype=np.float32)
    total = len(pts)
    if total > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=max_points, replace=False))
        pts, peak = pts[keep], peak[keep]
    return pts, peak.ravel(), total
