"""Mesh helpers on PyVista ``PolyData``: watertightness, enclosed volume, labels.

Points are in world mm; volumes come back in mm³ (divide by 1000 for mL).
"""

from __future__ import annotations

import numpy as np

from sono3d.errors import InputError

__all__ = ["triangles", "enclosed_volume_mm3", "is_watertight", "require_watertight", "label_values",
           "extract_label", "signed_volume_triangles"]


def triangles(mesh) -> np.ndarray:  # noqa: ANN001 - pyvista.PolyData
    """Triangle vertex indices ``[F, 3]`` of a surface (polygons are triangulated first)."""
    if mesh.n_cells == 0:
        return np.zeros((0, 3), dtype=np.int64)
    tri = mesh if mesh.is_all_triangles else mesh.triangulate()
    return np.asarray(tri.faces).reshape(-1, 4)[:, 1:].astype(np.int64)


def signed_volume_triangles(points: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume (mm³) enclosed by triangles, by the divergence theorem.

    ``sum_f (a . (b x c)) / 6`` over faces ``(a, b, c)``; positive for outward (counter-clockwise
    seen from outside) orientation. Exact for any closed, consistently oriented surface.
    """
    p = np.asarray(points, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if f.size == 0:
        return 0.0
    a, b, c = p[f[:, 0]], p[f[:, 1]], p[f[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def is_watertight(mesh) -> bool:  # noqa: ANN001
    """True when every edge of the surface is shared by exactly two triangles."""
    f = triangles(mesh)
    if len(f) == 0:
        return False
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool(np.all(counts == 2))


def require_watertight(mesh, what: str = "mesh") -> None:  # noqa: ANN001
    """Raise :class:`InputError` naming ``what`` unless the surface is closed."""
    if not is_watertight(mesh):
        raise InputError(f"{what} is not watertight (it has open or non-manifold edges)")


def enclosed_volume_mm3(mesh, check: bool = True) -> float:  # noqa: ANN001
    """Volume (mm³) enclosed by a closed surface, by the divergence theorem.

    The absolute value is returned, so inward-oriented surfaces give the same answer. With
    ``check=True`` a surface that is not watertight raises :class:`InputError`.
    """
    if check:
        require_watertight(mesh)
    return abs(signed_volume_triangles(np.asarray(mesh.points), triangles(mesh)))


def label_values(mesh, name: str | None = None) -> list[int]:  # noqa: ANN001
    """Sorted unique label values of a mesh's label array (cell data first, then point data).

    ``name`` picks the array; by default the first of ``elemTag``, ``labels``, ``label``,
    ``RegionId`` that exists. Returns ``[]`` when there is none.
    """
    arr = _label_array(mesh, name)
    return [] if arr is None else sorted(int(v) for v in np.unique(arr))


def _label_array(mesh, name: str | None):  # noqa: ANN001, ANN202
    names = [name] if name else ["elemTag", "labels", "label", "RegionId"]
    for n in names:
        if n in mesh.cell_data:
            return np.asarray(mesh.cell_data[n])
        if n in mesh.point_data:
            return np.asarray(mesh.point_data[n])
    return None


def extract_label(mesh, value: int, name: str | None = None):  # noqa: ANN001, ANN201
    """The sub-surface whose cells carry label ``value`` (cell labels), as ``PolyData``.

    Raises :class:`InputError` when the mesh has no cell label array or no such label.
    """
    names = [name] if name else ["elemTag", "labels", "label", "RegionId"]
    for n in names:
        if n in mesh.cell_data:
            ids = np.flatnonzero(np.asarray(mesh.cell_data[n]) == value)
            if ids.size == 0:
                raise InputError(f"mesh has no cells with label {value} in '{n}'")
            return mesh.extract_cells(ids).extract_surface(algorithm='dataset_surface')
    raise InputError("mesh has no cell label array (looked for " + ", ".join(names) + ")")
