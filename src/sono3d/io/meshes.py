"""Surface meshes: VTK legacy, VTP, STL, PLY (PyVista, meshio as fallback) and OBJ (our own).

Vertex order is kept as stored. Point and cell data arrays survive the round trip where the
format can hold them: ``.vtp``/``.vtk`` keep every point, cell and field array; ``.ply`` keeps
1-D point and cell arrays as vertex and face properties (written here, read back by meshio); ``.obj`` keeps integer cell labels as groups named ``<array>_<value>``
(``g elemTag_3``) and reads them back as that cell array; ``.stl`` keeps geometry only.
OBJ is parsed and written here because VTK's OBJ reader splits vertices that carry several
texture/normal indices, which would reorder them; numbers are written with ``repr`` (exact).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import FileFormatError, InputError
from sono3d.io.atomic import atomic_path, full_suffix
from sono3d.io.registry import reason

__all__ = ["read_mesh_file", "write_mesh_file", "read_obj", "write_obj"]

_GROUP_LABEL = re.compile(r"^(\w+?)_(-?\d+)$")


def _polydata(points: np.ndarray, faces: list[np.ndarray] | np.ndarray):  # noqa: ANN202
    import pyvista as pv

    faces = [np.asarray(f, dtype=np.int64) for f in faces]
    if faces:
        flat = np.concatenate([np.concatenate([[len(f)], f]) for f in faces])
    else:
        flat = np.zeros(0, dtype=np.int64)
    return pv.PolyData(np.asarray(points, dtype=np.float64), flat if len(flat) else None)


def read_obj(path: str | Path):  # noqa: ANN201 - pyvista.PolyData
    """Read a Wavefront OBJ (``v`` and ``f`` records; ``g``/``o`` groups become cell labels)."""
    path = Path(path)
    points: list[list[float]] = []
    faces: list[list[int]] = []
    group_of_face: list[str] = []
    group = ""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            tag = parts[0]
            try:
                if tag == "v":
                    if len(parts) < 4:
                        raise ValueError("vertex needs x y z")
                    points.append([float(parts[1]), float(parts[2]), float(parts[3])])
                elif tag == "f":
                    idx = [int(p.split("/")[0]) for p in parts[1:]]
                    if len(idx) < 3:
                        raise ValueError("face needs 3 or more vertices")
                    # OBJ indices are 1-based; negative ones count back from the latest vertex.
                    faces.append([i - 1 if i > 0 else len(points) + i for i in idx])
                    group_of_face.append(group)
                elif tag in ("g", "o"):
                    group = " ".join(parts[1:])
            except ValueError as exc:
                raise FileFormatError(f"{path}: line {lineno} is not valid OBJ ({exc})") from None
    if not points:
        raise FileFormatError(f"{path}: OBJ file has no vertices")
    pts = np.asarray(points, dtype=np.float64)
    for f in faces:
        if min(f) < 0 or max(f) >= len(pts):
            raise FileFormatError(f"{path}: OBJ face refers to a vertex that does not exist")
    mesh = _polydata(pts, faces)
    _groups_to_labels(mesh, group_of_face)
    return mesh


def _groups_to_labels(mesh, groups: list[str]) -> None:  # noqa: ANN001
    if not groups or all(g == "" for g in groups):
        return
    parsed = [_GROUP_LABEL.match(g) for g in groups]
    names = {m.group(1) for m in parsed if m}
    if all(parsed) and len(names) == 1:
        mesh.cell_data[names.pop()] = np.array([int(m.group(2)) for m in parsed], dtype=np.int32)  # type: ignore[union-attr]
    else:
        uniq = list(dict.fromkeys(groups))
        mesh.cell_data["obj_group"] = np.array([uniq.index(g) for g in groups], dtype=np.int32)
        mesh.field_data["obj_group_names"] = np.array(uniq)


def write_obj(path: str | Path, mesh, label: str | None = None) -> Path:  # noqa: ANN001
    """Write points and polygon faces as OBJ; an integer cell array (``elemTag`` by default) as groups."""
    pts = np.asarray(mesh.points, dtype=np.float64)
    faces = _faces_list(mesh)
    labels = None
    names = [label] if label else ["elemTag", "labels", "label", "RegionId"]
    for n in names:
        if n in mesh.cell_data and np.issubdtype(np.asarray(mesh.cell_data[n]).dtype, np.integer):
            labels = (n, np.asarray(mesh.cell_data[n]))
            break
    lines = ["# written by sono3d"]
    lines += [f"v {float(x)!r} {float(y)!r} {float(z)!r}" for x, y, z in pts]
    current = None
    for i, f in enumerate(faces):
        if labels is not None and labels[1][i] != current:
            current = labels[1][i]
            lines.append(f"g {labels[0]}_{int(current)}")
        lines.append("f " + " ".join(str(int(v) + 1) for v in f))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def _faces_list(mesh) -> list[np.ndarray]:  # noqa: ANN001
    if mesh.n_cells and (mesh.lines.size or mesh.verts.size):
        raise InputError("OBJ writing supports polygon surfaces only (the mesh has lines or vertices)")
    flat = np.asarray(mesh.faces)
    out, i = [], 0
    while i < len(flat):
        n = int(flat[i])
        out.append(flat[i + 1 : i + 1 + n])
        i += n + 1
    return out


@contextlib.contextmanager
def _quiet_vtk() -> Iterator[None]:
    """Silence VTK's own error printing: a corrupt file must give one line, not a page of VTK log."""
    import pyvista as pv
    from vtkmodules.vtkCommonCore import vtkObject

    shown = vtkObject.GetGlobalWarningDisplay()
    vtkObject.GlobalWarningDisplayOff()
    try:
        with pv.vtk_verbosity("off"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        vtkObject.SetGlobalWarningDisplay(shown)


def read_mesh_file(path: str | Path, scale: float = 1.0):  # noqa: ANN201
    """Read one mesh file as ``PolyData`` (see module notes); ``scale`` multiplies the points."""
    import pyvista as pv

    path = Path(path)
    suffix = full_suffix(path)
    if suffix == ".obj":
        mesh = read_obj(path)
    else:
        try:
            with _quiet_vtk():
                mesh = pv.read(str(path))
        except Exception as first:  # VTK readers fail on some PLY/VTK variants meshio handles
            try:
                mesh = _read_meshio(path)
            except Exception:
                raise FileFormatError(f"{path}: cannot read mesh ({reason(first)})") from first
        if not isinstance(mesh, pv.PolyData):
            mesh = mesh.extract_surface() if hasattr(mesh, "extract_surface") else mesh
        if suffix == ".ply" and mesh.n_cells:
            # VTK's PLY reader drops face properties; meshio keeps them, with the same vertex order,
            # but groups faces by type, so it is used only when all faces have one type.
            try:
                import meshio

                m = meshio.read(str(path))
                blocks = [b for b in m.cells if b.type not in ("vertex", "line")]
                if len(blocks) == 1 and len(m.points) == mesh.n_points:
                    mesh = _read_meshio(path, m)
            except Exception:  # noqa: BLE001 - meshio is only a second chance
                pass
    check_mesh_points(mesh, path)
    if scale != 1.0:
        if not (np.isfinite(scale) and scale > 0):
            raise InputError(f"mesh scale must be positive, got {scale}")
        mesh.points = np.asarray(mesh.points, dtype=np.float64) * float(scale)
    mesh.field_data["source"] = np.array([str(path)])
    return mesh


def _read_meshio(path: Path, m=None):  # noqa: ANN001, ANN202
    import meshio
    import pyvista as pv

    m = meshio.read(str(path)) if m is None else m
    faces = []
    cell_arrays: dict[str, list[np.ndarray]] = {}
    for b, block in enumerate(m.cells):
        if block.type in ("vertex", "line"):
            continue
        faces += list(block.data)
        for name, per_block in m.cell_data.items():
            cell_arrays.setdefault(name, []).append(np.asarray(per_block[b]))
    mesh = _polydata(np.asarray(m.points, dtype=np.float64), faces)
    for name, arr in m.point_data.items():
        mesh.point_data[name] = np.asarray(arr)
    for name, parts in cell_arrays.items():
        arr = np.concatenate(parts)
        if len(arr) == mesh.n_cells:
            mesh.cell_data[name] = arr
    return pv.wrap(mesh)


def write_mesh_file(path: str | Path, mesh) -> Path:  # noqa: ANN001
    """Write ``PolyData`` (``.vtp .vtk .stl .ply .obj``) atomically."""
    import pyvista as pv

    if not isinstance(mesh, pv.DataSet):
        raise InputError(f"write_mesh needs a pyvista mesh, got {type(mesh).__name__}")
    if not isinstance(mesh, pv.PolyData):
        mesh = mesh.extract_surface()
    suffix = full_suffix(path)
    if suffix == ".obj":
        return write_obj(path, mesh)
    if suffix == ".ply":
        return write_ply(path, mesh)
    clean = mesh.copy()
    if suffix in (".vtp", ".vtk"):
        if "source" in clean.field_data:  # the reader's note of where the mesh came from
            del clean.field_data["source"]
    else:
        clean.field_data.clear()  # STL and PLY cannot hold field arrays
    with atomic_path(path) as tmp, _quiet_vtk():
        clean.save(str(tmp), binary=True)
    return Path(path)


_PLY_TYPES = {"f8": "double", "f4": "float", "i4": "int", "u4": "uint", "i2": "short", "u2": "ushort",
              "i1": "char", "u1": "uchar"}


def _ply_arrays(data) -> list[tuple[str, np.ndarray]]:  # noqa: ANN001
    """The 1-D arrays of a data set, in a type PLY can hold (int64 -> int32, bool -> uint8)."""
    out = []
    for name, arr in data.items():
        a = np.asarray(arr)
        if a.ndim != 1 or not name.isidentifier():
            continue
        if a.dtype == bool:
            a = a.astype(np.uint8)
        elif a.dtype.kind in "iu" and a.dtype.itemsize == 8:
            a = a.astype(np.int32 if a.dtype.kind == "i" else np.uint32)
        if a.dtype.str[1:] not in _PLY_TYPES:
            continue
        out.append((name, a.astype(a.dtype.newbyteorder("<"))))
    return out


def write_ply(path: str | Path, mesh) -> Path:  # noqa: ANN001
    """PLY with float64 points, polygon faces, and 1-D point and cell arrays as properties.

    Binary, except when there are cell arrays: then ASCII with ``repr`` numbers (still exact),
    because meshio's binary reader cannot parse face properties after the index list.
    """
    pts = np.asarray(mesh.points, dtype="<f8")
    faces = _faces_list(mesh)
    if any(len(f) > 255 for f in faces):
        raise InputError("PLY faces may have at most 255 vertices")
    pdat, cdat = _ply_arrays(mesh.point_data), _ply_arrays(mesh.cell_data)
    ascii_ = bool(cdat)
    head = ["ply", f"format {'ascii' if ascii_ else 'binary_little_endian'} 1.0", "comment written by sono3d",
            f"element vertex {len(pts)}", "property double x", "property double y", "property double z"]
    head += [f"property {_PLY_TYPES[a.dtype.str[1:]]} {n}" for n, a in pdat]
    head += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    head += [f"property {_PLY_TYPES[a.dtype.str[1:]]} {n}" for n, a in cdat]
    head.append("end_header")
    chunks = [("\n".join(head) + "\n").encode("ascii")]
    if ascii_:
        def num(v) -> str:  # noqa: ANN001
            return repr(float(v)) if isinstance(v, (float, np.floating)) else str(int(v))

        lines = [" ".join([num(v) for v in p] + [num(a[i]) for _, a in pdat]) for i, p in enumerate(pts)]
        lines += [" ".join([str(len(f))] + [str(int(v)) for v in f] + [num(a[i]) for _, a in cdat])
                  for i, f in enumerate(faces)]
        chunks.append(("\n".join(lines) + "\n").encode("ascii"))
    else:
        vert = np.empty(len(pts), dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8")] + [(n, a.dtype) for n, a in pdat])
        vert["x"], vert["y"], vert["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
        for n, a in pdat:
            vert[n] = a
        chunks.append(vert.tobytes())
        sizes = {len(f) for f in faces}
        if len(sizes) == 1:  # one record layout for every face: write them in one go
            k = sizes.pop()
            rec = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (k,))])
            rec["n"], rec["v"] = k, np.asarray(faces).reshape(len(faces), k)
            chunks.append(rec.tobytes())
        else:
            chunks += [np.uint8(len(f)).tobytes() + np.asarray(f, dtype="<i4").tobytes() for f in faces]
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(chunks))
    return Path(path)


def check_mesh_points(mesh: Any, path: str | os.PathLike[str]) -> None:
    """Refuse a mesh read from ``path`` that has no points or a NaN/infinite coordinate."""
    if mesh.n_points == 0:
        raise FileFormatError(f"{path}: mesh has no points (empty or corrupt file)")
    if not np.all(np.isfinite(np.asarray(mesh.points))):
        raise FileFormatError(f"{path}: mesh has NaN or infinite coordinates")
