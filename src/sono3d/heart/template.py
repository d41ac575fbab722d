"""The template heart: the reference whose vertices every deformation and every prediction moves.

It has two forms, both defined here:

* :class:`Template`, the **mesh form**: a labelled PyVista surface with its id, its SHA-1
  (:func:`template_hash`) and, for a mesh file, its separate LV cavity. The correspondences
  (:mod:`sono3d.heart.correspond`) deform it onto every case; :func:`load_template` finds it.
* the **record**, the form a network and its checkpoint carry: a mapping of plain arrays (tensors
  in a checkpoint, so that ``torch.load(weights_only=True)`` reads it; numpy arrays once loaded)

  ===================== ============ ==============================================================
  key                   shape        meaning
  ===================== ============ ==============================================================
  points                [V, 3] f32   the network's template vertices (mm, echo frame)
  faces                 [F, 3] i64   triangles
  cell_elemTag, ...     [F] i64      cell arrays ``elemTag`` and ``part``, when the mesh has them
  point_elemTag, ...    [V] i64      point arrays ``elemTag``, ``part``, ``lv_endocardium``
  lv_cavity_faces       [K, 3] i64   the closed LV blood pool in vertex indices (see
                                     :func:`sono3d.phantoms.heart.lv_cavity_from_heart`)
  ===================== ============ ==============================================================

  :func:`template_record` makes it from a mesh, :func:`record_arrays` turns a checkpoint's tensors
  into arrays, :func:`template_mesh_with` and :func:`lv_cavity_with` give the mesh and the LV cavity
  over any vertices in the template's order (a prediction).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.mesh import triangles
from sono3d.heart.cohort import case_ids, load_case, read_case_mesh, read_labelled_mesh
from sono3d.heart.surfaces import point_labels
from sono3d.phantoms.heart import lv_cavity_from_heart
from sono3d.types import PHASES

__all__ = [
    "Template",
    "load_template",
    "template_hash",
    "template_record",
    "record_arrays",
    "record_faces",
    "template_mesh_with",
    "lv_cavity_with",
]


@dataclass
class Template:
    """The reference heart whose vertices every case's deformation moves.

    Attributes
    ----------
    id : str
        A case id of the cohort, or the path of the mesh file.
    mesh : pyvista.PolyData
        The labelled surface (``elemTag``), mm.
    sha1 : str
        :func:`template_hash` of ``mesh``: identifies the template a deformation belongs to.
    cavity : pyvista.PolyData or None
        The closed LV cavity, when it is a separate mesh (a template without ``lv_cavity_faces``).
    """

    id: str
    mesh: Any
    sha1: str
    cavity: Any = None


def template_hash(mesh: Any) -> str:
    """SHA-1 of a template's vertices and faces: identifies the template a deformation belongs to."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(np.asarray(mesh.points, dtype=np.float64)).tobytes())
    h.update(np.ascontiguousarray(triangles(mesh)).tobytes())
    return h.hexdigest()


def load_template(cohort_dir: str | os.PathLike[str], template: str | None = None) -> Template:
    """The template: a case id of the cohort (its ED surface), a mesh file, or by default the
    first case's ED surface. Raises :class:`InputError` when it cannot be found or has no labels."""
    ids = case_ids(cohort_dir)
    if template is None or str(template) in ids:
        if not ids:
            raise InputError(f"{cohort_dir}: the cohort has no cases")
        cid = ids[0] if template is None else str(template)
        case = load_case(cohort_dir, cid, views=False)
        mesh, cavity, name = case.ed, case.lv_cavity_ed, cid
    else:
        path = Path(template)
        if not path.is_file():
            raise InputError(f"template {template!r} is neither a case of {cohort_dir} nor a mesh file")
        mesh, cavity, name = read_labelled_mesh(path), None, str(path)
        sibling = path.parent / f"lv_cavity_{path.stem}{path.suffix}"  # a case folder's ed.vtp / es.vtp
        if path.stem in PHASES and sibling.is_file():
            cavity = read_case_mesh(sibling)
    if point_labels(mesh) is None:
        raise InputError(f"template {name} has no 'elemTag' labels")
    return Template(name, mesh, template_hash(mesh), cavity)


def template_record(mesh: Any, points: np.ndarray) -> dict[str, Any]:
    """The record of a template (tensors, see the module notes): ``mesh``'s faces and labels over
    ``points [V, 3]`` (mm)."""
    import torch

    rec: dict[str, Any] = {
        "points": torch.as_tensor(np.asarray(points, dtype=np.float32)),
        "faces": torch.as_tensor(triangles(mesh).astype(np.int64)),
    }
    for name in ("elemTag", "part"):
        if name in mesh.cell_data:
            rec[f"cell_{name}"] = torch.as_tensor(np.asarray(mesh.cell_data[name]).astype(np.int64))
        if name in mesh.point_data:
            rec[f"point_{name}"] = torch.as_tensor(np.asarray(mesh.point_data[name]).astype(np.int64))
    if "lv_endocardium" in mesh.point_data:
        rec["point_lv_endocardium"] = torch.as_tensor(np.asarray(mesh.point_data["lv_endocardium"]).astype(np.int64))
    if "lv_cavity_faces" in mesh.field_data:
        rec["lv_cavity_faces"] = torch.as_tensor(np.asarray(mesh.field_data["lv_cavity_faces"]).astype(np.int64).reshape(-1, 3))
    return rec


def record_arrays(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A checkpoint's record (CPU tensors) as numpy arrays."""
    return {k: v.numpy() for k, v in record.items()}


def record_faces(record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Triangles ``[F, 3]`` and LV-cavity triangles ``[K, 3]`` (``None`` without a cavity) of a record."""
    faces = np.asarray(record["faces"], dtype=np.int64)
    cav = record.get("lv_cavity_faces")
    cav = None if cav is None or np.size(cav) == 0 else np.asarray(cav, dtype=np.int64)
    return faces, cav


def template_mesh_with(template: Mapping[str, Any], points: np.ndarray) -> Any:
    """A ``PolyData`` with the record's faces and labels over ``points [V, 3]`` (mm).

    Carries ``elemTag`` (and ``part``) as cell and point arrays and the field array
    ``lv_cavity_faces``, like the cohort's own meshes.
    """
    import pyvista as pv

    pts = np.asarray(points, dtype=np.float32)
    f = np.asarray(template["faces"], dtype=np.int64)
    mesh = pv.PolyData(pts, np.hstack([np.full((len(f), 1), 3), f]).ravel())
    for key, arr in template.items():
        if key.startswith("cell_"):
            mesh.cell_data[key[5:]] = np.asarray(arr).astype(np.int32)
        elif key.startswith("point_"):
            a = np.asarray(arr)
            mesh.point_data[key[6:]] = a.astype(np.uint8 if key == "point_lv_endocardium" else np.int32)
    if "lv_cavity_faces" in template:
        mesh.field_data["lv_cavity_faces"] = np.asarray(template["lv_cavity_faces"]).astype(np.int32)
    return mesh


def lv_cavity_with(template: Mapping[str, Any], points: np.ndarray) -> Any:
    """The closed LV cavity (``PolyData``) of the record's ``lv_cavity_faces`` over ``points [V, 3]``.

    Raises :class:`InputError` when the record carries no LV cavity.
    """
    if "lv_cavity_faces" not in template:
        raise InputError("the run's template carries no LV cavity (lv_cavity_faces); no volumes can be computed")
    return lv_cavity_from_heart(template_mesh_with(template, points))
