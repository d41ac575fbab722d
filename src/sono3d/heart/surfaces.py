"""Labelled heart surfaces as point sets: point labels, vertex masses and the GHDHeart subset.

The correspondences (:mod:`sono3d.heart.correspond`) match a template's vertices to a case's label
by label; this module turns a labelled PyVista surface into those points, labels and masses.
"""

from __future__ import annotations

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.mesh import triangles

__all__ = [
    "point_labels",
    "vertex_areas",
    "SUBLABEL_ARRAYS",
    "shared_sublabel_arrays",
    "mesh_points_labels_weights",
    "ghdheart_template",
]


def point_labels(mesh, name: str = "elemTag") -> np.ndarray | None:  # noqa: ANN001
    """Point labels: the point array ``name``, else derived from the cell array (each point takes
    the smallest label of its cells), else ``None``."""
    if name in mesh.point_data:
        return np.asarray(mesh.point_data[name]).reshape(-1).astype(np.int64)
    if name in mesh.cell_data:
        cl = np.asarray(mesh.cell_data[name]).reshape(-1).astype(np.int64)
        tri = triangles(mesh)
        if len(tri) != len(cl):  # polygons were split: label them through pyvista's triangulation
            t = mesh.triangulate()
            cl = np.asarray(t.cell_data[name]).reshape(-1).astype(np.int64)
        out = np.full(mesh.n_points, np.iinfo(np.int64).max)
        for k in range(3):
            np.minimum.at(out, tri[:, k], cl)
        out[out == np.iinfo(np.int64).max] = -1
        return out
    return None


def vertex_areas(points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """A third of the area of each vertex's triangles, mm² ``[V]`` (0 for isolated vertices)."""
    p = np.asarray(points, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    out = np.zeros(len(p))
    if len(f):
        ar = 0.5 * np.linalg.norm(np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]]), axis=1)
        for k in range(3):
            np.add.at(out, f[:, k], ar / 3.0)
    return out


# Point arrays of the synthetic cohort that split a label into surfaces that must not mix: the
# inner and outer walls of a shell (``part``), the LV endocardium and epicardium (``lv_endocardium``).
SUBLABEL_ARRAYS = ("part", "lv_endocardium")


def shared_sublabel_arrays(*meshes) -> tuple[str, ...]:  # noqa: ANN002
    """The :data:`SUBLABEL_ARRAYS` that every mesh carries as point data."""
    return tuple(n for n in SUBLABEL_ARRAYS if all(n in m.point_data for m in meshes))


def mesh_points_labels_weights(mesh, weights: str = "area", label_name: str = "elemTag",  # noqa: ANN001
                               require_labels: bool = True, what: str = "mesh",
                               sublabels: tuple[str, ...] = ()):  # noqa: ANN201
    """Vertices ``[V, 3]``, point labels ``[V]`` and point masses ``[V]`` of a surface mesh.

    The label is ``label_name`` (point data, else derived from cell data), refined by the point
    arrays named in ``sublabels`` (e.g. ``("part", "lv_endocardium")``) into one integer per
    combination. Raises :class:`InputError` when ``require_labels`` and the mesh has no label
    array. Without labels every point gets label 0.
    """
    pts = np.asarray(mesh.points, dtype=np.float64)
    labels = point_labels(mesh, label_name)
    if labels is None:
        if require_labels:
            raise InputError(f"{what} has no '{label_name}' label array (point or cell data)")
        labels = np.zeros(len(pts), dtype=np.int64)
    for name in sublabels:
        sub = np.asarray(mesh.point_data[name]).reshape(-1).astype(np.int64)
        labels = labels * 1024 + (sub % 1024)
    if weights == "area":
        w = vertex_areas(pts, triangles(mesh))
        if w.sum() <= 0:
            w = np.ones(len(pts))
        else:
            w = np.maximum(w, 1e-6 * w.mean())  # isolated vertices keep a little mass
    else:
        w = np.ones(len(pts))
    return pts, labels, w



def ghdheart_template(mesh):  # noqa: ANN001, ANN201
    """The surfaces of a synthetic-cohort heart that GHDHeart has, labelled as its reader does.

    GHDHeart's ``LV.obj`` is the LV *myocardium* (a closed shell: every ray from its centre
    crosses two walls, endocardium and epicardium), while ``RV.obj``, ``LA.obj`` and ``RA.obj``
    are blood pools (one wall). So: label 1 = the LV myocardium, 2, 3, 4 = the inner surfaces of
    the RV, LA and RA shells. The point array ``heart_index`` gives each vertex's index in
    ``mesh``. Raises :class:`InputError` for a mesh without the synthetic cohort's arrays.
    """
    import pyvista as pv

    if "part" not in mesh.cell_data or "part_names" not in mesh.field_data:
        raise InputError("needs a synthetic-cohort heart (cell array 'part', field array 'part_names')")
    names = [str(n) for n in mesh.field_data["part_names"]]
    tri = triangles(mesh)
    part = np.asarray(mesh.cell_data["part"]).reshape(-1)
    pts, faces, index, labels, off = [], [], [], [], 0
    for tag, name in ((1, "lv_myocardium"), (2, "rv_inner"), (3, "la_inner"), (4, "ra_inner")):
        if name not in names:
            raise InputError(f"the heart has no '{name}' surface")
        f = tri[part == names.index(name)]
        used = np.unique(f)
        remap = np.full(mesh.n_points, -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        pts.append(np.asarray(mesh.points)[used])
        faces.append(remap[f] + off)
        index.append(used)
        labels.append(np.full(len(used), tag))
        off += len(used)
    f = np.vstack(faces)
    out = pv.PolyData(np.vstack(pts), np.hstack([np.full((len(f), 1), 3), f]).ravel())
    lab = np.concatenate(labels).astype(np.int32)
    out.point_data["elemTag"] = lab
    out.point_data["heart_index"] = np.concatenate(index).astype(np.int32)
    out.cell_data["elemTag"] = lab[f[:, 0]]
    return out

