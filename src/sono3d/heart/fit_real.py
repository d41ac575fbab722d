"""The template heart fitted to a real patient's beating LV and RV surfaces (e.g. biv-me).

Input: one set of surfaces per phase of a beat, each surface with the same vertex order in every
phase (a model-based segmentation such as biv-me's): the LV endocardium, and optionally the RV
endocardium and the biventricular epicardium. Surfaces open at the valves are capped flat
(:func:`cap_holes`) to measure the LV cavity directly.

Fit (``docs/clinical.md``):

1. **End-diastole** (the phase with the largest capped LV volume): the template's LV endocardium,
   RV blood-pool surface and outer (epicardial) wall are matched to the real LV endocardium, RV
   endocardium and epicardium with the robust optimal-transport correspondence of
   :func:`sono3d.heart.registration.correspond_points` (label by label: global affine, then the
   non-rigid OT + spline levels). Every fitted vertex is then put on its real surface: its nearest
   point there, as a triangle and barycentric coordinates (the vertex's *anchor*).
2. **Every other phase**: the real surfaces share their vertex order across phases, so each anchor
   is the same material point of the real surface in every phase; the fitted vertex follows it.
   The template's other vertices (septal epicardium, atria, vessels) follow the anchored ones by the
   Gaussian interpolation of :func:`sono3d.heart.spline.interpolate_field`.

So the fitted meshes are in the template's vertex order in every phase and follow the real
surfaces' own material motion: GLS, GCS and the AHA segments of :mod:`sono3d.heart.strain` apply.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.mesh import signed_volume_triangles, triangles
from sono3d.heart.registration import CorrespondOptions, correspond_points
from sono3d.heart.spline import interpolate_field
from sono3d.heart.strain import lv_strain
from sono3d.heart.surfaces import vertex_areas
from sono3d.io import read_mesh, write_mesh
from sono3d.io.atomic import atomic_path
from sono3d.phantoms.heart import PART_INDEX, HeartShape, build_heart_phase, heart_mesh, heart_topology
from sono3d.phantoms.lv_grid import N_LON

__all__ = [
    "SURFACES",
    "RealBeat",
    "find_real_beat",
    "read_real_beat",
    "cap_holes",
    "capped_volume_ml",
    "boundary_loops",
    "default_template",
    "landmark_transform",
    "fit_template_labels",
    "FitResult",
    "fit_real_beat",
    "fit_real",
]

# Surfaces of one phase, and the biv-me file-name parts that name them.
SURFACES = ("lv_endo", "rv_endo", "epi")
_BIVME = {"LV_ENDOCARDIAL": "lv_endo", "RV_ENDOCARDIAL": "rv_endo", "EPICARDIAL": "epi"}
_BIVME_NAME = re.compile(r"^(?P<case>.*?)_(?P<surface>LV_ENDOCARDIAL|RV_ENDOCARDIAL|EPICARDIAL)_(?P<phase>\d+)"
                         r"\.(?:vtk|vtp|vtu)$", re.IGNORECASE)
_MESH_SUFFIXES = (".vtk", ".vtp", ".vtu", ".obj", ".stl", ".ply")
# Point labels of the matched surfaces (template and target alike); _RIM: the LV's base ring / valve rims.
_LABEL = {"lv_endo": 1, "rv_endo": 2, "epi": 3}
_RIM = 4


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

@dataclass
class RealBeat:
    """A real beat: per phase, the surfaces (``PolyData``) by name.

    Attributes
    ----------
    phases : list of str
        Phase names in beat order (biv-me's ``NNN``, or the file stems).
    surfaces : dict of name -> list of PolyData
        ``lv_endo`` always; ``rv_endo`` and ``epi`` when given for every phase.
    source : str
    """

    phases: list[str]
    surfaces: dict[str, list[Any]]
    source: str = ""


def find_real_beat(source: str | os.PathLike[str]) -> tuple[list[str], dict[str, list[Path]]]:
    """Phase names and file paths of a real beat.

    ``source`` is a folder with biv-me's names (``<case>_LV_ENDOCARDIAL_<NNN>.vtk``,
    ``..._RV_ENDOCARDIAL_...``, ``..._EPICARDIAL_...``), a folder of other mesh files (each one
    phase's LV endocardium, in name order), or a text file listing one phase per line: the LV
    endocardium's path, optionally followed by the RV endocardium's and the epicardium's (paths
    relative to the list). Raises :class:`InputError` when nothing is recognised.
    """
    src = Path(source)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.is_file())
        named: dict[str, dict[str, Path]] = {}
        for p in files:
            m = _BIVME_NAME.match(p.name)
            if m:
                named.setdefault(m["phase"], {})[_BIVME[m["surface"].upper()]] = p
        if named:
            phases = sorted(named, key=int)
            out = {s: [named[ph].get(s) for ph in phases] for s in SURFACES}
            missing = [ph for ph in phases if out["lv_endo"][phases.index(ph)] is None]
            if missing:
                raise InputError(f"{src}: phase {missing[0]} has no LV_ENDOCARDIAL surface")
            return phases, _complete(out, src)
        meshes = [p for p in files if p.suffix.lower() in _MESH_SUFFIXES]
        if not meshes:
            raise InputError(f"{src}: no recognised meshes (biv-me *_LV_ENDOCARDIAL_NNN.vtk names, or "
                             f"{' '.join(_MESH_SUFFIXES)} files)")
        return [p.stem for p in meshes], {"lv_endo": meshes}
    if src.is_file() and src.suffix.lower() in (".txt", ".lst", ".list"):
        rows = [ln.split() for ln in src.read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
        if not rows:
            raise InputError(f"{src}: the list names no meshes")
        if len({len(r) for r in rows}) != 1 or len(rows[0]) > 3:
            raise InputError(f"{src}: every line must name the same surfaces (LV [RV EPI])")
        out = {s: [src.parent / r[k] for r in rows] for k, s in enumerate(SURFACES[:len(rows[0])])}
        for paths in out.values():
            for p in paths:
                if not p.is_file():
                    raise InputError(f"{src}: listed mesh {p} does not exist")
        return [Path(r[0]).stem for r in rows], out
    raise InputError(f"{src}: not a folder of meshes or a list of mesh files (.txt)")


def _complete(out: dict[str, list[Path | None]], src: Path) -> dict[str, list[Path]]:
    """Keep the surfaces given for every phase; refuse ones given for some phases only."""
    keep: dict[str, list[Path]] = {}
    for s, paths in out.items():
        if all(p is not None for p in paths):
            keep[s] = paths  # type: ignore[assignment]
        elif any(p is not None for p in paths):
            raise InputError(f"{src}: the {s} surface is missing in some phases")
    return keep


def _read_surface(path: Path) -> Any:
    mesh = read_mesh(path)
    if mesh.n_cells == 0:
        raise InputError(f"{path}: the mesh has no faces")
    return mesh if mesh.is_all_triangles else mesh.triangulate()  # triangulating keeps the vertex order


def read_real_beat(source: str | os.PathLike[str]) -> RealBeat:
    """Read a real beat (:func:`find_real_beat`); every surface must keep its vertex count across phases."""
    phases, paths = find_real_beat(source)
    surfaces: dict[str, list[Any]] = {}
    for s, files in paths.items():
        meshes = [_read_surface(p) for p in files]
        counts = {m.n_points for m in meshes}
        if len(counts) != 1:
            raise InputError(f"{source}: the {s} surface has different vertex counts across phases "
                             f"({min(counts)} to {max(counts)}); the phases must share one vertex order")
        faces = [triangles(m) for m in meshes]
        if any(not np.array_equal(faces[0], f) for f in faces[1:]):
            raise InputError(f"{source}: the {s} surface's triangles differ across phases; the phases must "
                             "share one mesh")
        surfaces[s] = meshes
    if len(phases) < 2:
        raise InputError(f"{source}: a beat needs at least two phases, got {len(phases)}")
    return RealBeat(phases, surfaces, str(source))


# --------------------------------------------------------------------------------------------
# Capping
# --------------------------------------------------------------------------------------------

def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """The boundary loops of a triangle surface, each as vertex indices in the order of the
    triangles' own boundary edges (so a cap built on the reversed loop matches their orientation).

    Raises :class:`InputError` when the boundary is not a set of simple closed loops (a
    non-manifold edge, or a vertex where two holes touch).
    """
    f = np.asarray(faces, dtype=np.int64)
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    key = np.sort(directed, axis=1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    if (counts > 2).any():
        raise InputError("the surface has non-manifold edges (an edge shared by more than two triangles)")
    edges = directed[counts[inv] == 1]
    if len(edges) == 0:
        return []
    nxt: dict[int, int] = {}
    for a, b in edges:
        if int(a) in nxt:
            raise InputError("two holes of the surface touch at a vertex; it cannot be capped")
        nxt[int(a)] = int(b)
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        v = nxt[start]
        while v != start:
            if v in seen or v not in nxt:
                raise InputError("the surface's boundary is not made of closed loops")
            loop.append(v)
            seen.add(v)
            v = nxt[v]
        loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def cap_holes(points: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Close every hole with a flat fan about the hole's centroid.

    Returns ``(points [N + H, 3], faces [F + sum(loop lengths), 3])``: one new vertex per hole
    (its centroid), appended. Raises :class:`InputError` when the surface cannot be closed.
    """
    p = np.asarray(points, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    loops = boundary_loops(f)
    if not loops:
        return p, f
    new_pts, new_faces = [p], [f]
    n = len(p)
    for k, loop in enumerate(loops):
        if len(loop) < 3:
            raise InputError("a hole of the surface has fewer than three edges; it cannot be capped")
        c = n + k
        new_pts.append(p[loop].mean(axis=0)[None])
        nb = np.roll(loop, -1)
        new_faces.append(np.stack([nb, loop, np.full(len(loop), c)], 1))  # each boundary edge reversed
    return np.concatenate(new_pts), np.concatenate(new_faces)


def capped_volume_ml(mesh: Any, what: str = "LV endocardium") -> float:
    """Volume (mL) of a surface with its holes capped flat (divergence theorem)."""
    try:
        p, f = cap_holes(np.asarray(mesh.points), triangles(mesh))
    except InputError as exc:
        raise InputError(f"{what} cannot be closed: {exc}") from None
    if len(boundary_loops(f)):  # pragma: no cover - cap_holes closes every loop it finds
        raise InputError(f"{what} cannot be closed")
    v = abs(signed_volume_triangles(p, f)) / 1000.0
    if not v > 0:
        raise InputError(f"{what} encloses no volume once capped")
    return v


# --------------------------------------------------------------------------------------------
# Template
# --------------------------------------------------------------------------------------------

def fit_template_labels(points: np.ndarray, gap_mm: float = 2.5) -> np.ndarray:
    """Labels of a template heart's vertices for the fit: 1 LV endocardium, 2 RV blood pool,
    3 the outer wall of the ventricles (LV epicardium and RV free wall, without the parts that face
    each other across the septum: vertices within ``gap_mm`` of the other ventricle), 0 the rest."""
    from scipy.spatial import cKDTree

    topo = heart_topology()
    p = np.asarray(points, dtype=np.float64)
    part = topo.part_of_point
    lab = np.zeros(topo.n_points, dtype=np.int64)
    lab[topo.lv_endo_points] = 1
    rv_in = np.flatnonzero(part == PART_INDEX["rv_inner"])
    rv_out = np.flatnonzero(part == PART_INDEX["rv_outer"])
    lv = np.flatnonzero(part == PART_INDEX["lv_myocardium"])
    lv_epi = np.setdiff1d(lv, topo.lv_endo_points)
    lab[rv_in] = 2
    d_epi, _ = cKDTree(p[np.concatenate([rv_in, rv_out])]).query(p[lv_epi])
    lab[lv_epi[d_epi > gap_mm]] = 3
    d_rv, _ = cKDTree(p[lv_epi]).query(p[rv_out])
    lab[rv_out[d_rv > gap_mm]] = 3
    return lab


def default_template() -> Any:
    """The default parametric heart (``HeartShape()`` at end-diastole, heart frame) as a mesh."""
    return heart_mesh(build_heart_phase(HeartShape(), None, "ed").points)


# --------------------------------------------------------------------------------------------
# Fit
# --------------------------------------------------------------------------------------------

def _lv_landmarks(points: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apex and base centre of an LV endocardium: the base is the centroid of its holes' rims
    (the valve openings); the apex its vertex farthest from the base. A closed LV (no holes): the
    ends of its principal axis, the apex being the end farther from the centroid."""
    p = np.asarray(points, dtype=np.float64)
    loops = boundary_loops(faces)
    if loops:
        base = p[np.concatenate(loops)].mean(axis=0)
        return p[np.argmax(np.linalg.norm(p - base, axis=1))], base
    c = p.mean(axis=0)
    axis = np.linalg.svd(p - c, full_matrices=False)[2][0]
    t = (p - c) @ axis
    lo, hi = p[np.argmin(t)], p[np.argmax(t)]
    return (lo, hi) if np.linalg.norm(lo - c) > np.linalg.norm(hi - c) else (hi, lo)


def _frame(apex: np.ndarray, base: np.ndarray, side: np.ndarray | None) -> np.ndarray:
    """Columns: long axis (apex to base), the direction towards ``side`` across it, their cross product."""
    u = (base - apex) / np.linalg.norm(base - apex)
    if side is None:
        side = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    s = side - apex
    s = s - u * (s @ u)
    s /= np.linalg.norm(s)
    return np.stack([u, s, np.cross(u, s)], 1)


def landmark_transform(template: Any, beat: RealBeat, phase: int) -> np.ndarray:
    """Similarity ``[4, 4]`` taking the template onto a real phase by the LV's apex and base and the
    RV's side (its centroid): the global fit's start, so that it cannot settle upside down."""
    topo = heart_topology()
    tp = np.asarray(template.points, dtype=np.float64)
    endo = tp[topo.lv_endo_points]
    t_apex, t_base = endo[0], endo[-N_LON:].mean(axis=0)  # apex vertex, base ring
    lv = beat.surfaces["lv_endo"][phase]
    r_apex, r_base = _lv_landmarks(np.asarray(lv.points), triangles(lv))
    t_rv = r_rv = None
    if "rv_endo" in beat.surfaces:
        t_rv = tp[topo.part_of_point == PART_INDEX["rv_inner"]].mean(axis=0)
        r_rv = np.asarray(beat.surfaces["rv_endo"][phase].points, dtype=np.float64).mean(axis=0)
    R = _frame(r_apex, r_base, r_rv) @ _frame(t_apex, t_base, t_rv).T
    scale = np.linalg.norm(r_base - r_apex) / np.linalg.norm(t_base - t_apex)
    T = np.eye(4)
    T[:3, :3] = scale * R
    T[:3, 3] = r_apex - scale * R @ t_apex
    return T

def _anchor(points: np.ndarray, surface: Any) -> tuple[np.ndarray, np.ndarray]:
    """Nearest point of ``surface`` to each point, as its triangle's vertex ids ``[N, 3]`` and
    barycentric weights ``[N, 3]``."""
    cells, closest = surface.find_closest_cell(np.asarray(points, dtype=np.float64), return_closest_point=True)
    f = triangles(surface)[cells]
    v = np.asarray(surface.points, dtype=np.float64)[f]  # [N, 3, 3]
    e0, e1, d = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], closest - v[:, 0]
    d00, d01, d11 = (e0 * e0).sum(1), (e0 * e1).sum(1), (e1 * e1).sum(1)
    d20, d21 = (d * e0).sum(1), (d * e1).sum(1)
    den = np.where(np.abs(d00 * d11 - d01 ** 2) > 0, d00 * d11 - d01 ** 2, 1.0)
    b1 = (d11 * d20 - d01 * d21) / den
    b2 = (d00 * d21 - d01 * d20) / den
    bary = np.clip(np.stack([1 - b1 - b2, b1, b2], 1), 0.0, 1.0)
    return f, bary / bary.sum(1, keepdims=True)


def _rim_edges(surface: Any) -> np.ndarray:
    """Boundary edges ``[E, 2]`` of a surface (its holes' rims)."""
    loops = boundary_loops(triangles(surface))
    if not loops:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate([np.stack([lp, np.roll(lp, -1)], 1) for lp in loops])


def _rim_vertices(surface: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vertices on the holes' rims and their masses (half the adjacent rim edges' lengths, mm)."""
    e = _rim_edges(surface)
    if len(e) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    p = np.asarray(surface.points, dtype=np.float64)
    length = np.linalg.norm(p[e[:, 1]] - p[e[:, 0]], axis=1)
    w = np.zeros(len(p))
    np.add.at(w, e[:, 0], length / 2)
    np.add.at(w, e[:, 1], length / 2)
    v = np.unique(e)
    return v, w[v]


def _ring_weights(ring_points: np.ndarray) -> np.ndarray:
    """Masses of a closed ring's vertices: half the adjacent edges' lengths (mm)."""
    length = np.linalg.norm(np.roll(ring_points, -1, axis=0) - ring_points, axis=1)
    return 0.5 * (length + np.roll(length, 1))


def _anchor_rim(points: np.ndarray, surface: Any) -> tuple[np.ndarray, np.ndarray]:
    """Nearest point of the surface's rims to each point: edge vertex ids and weights (``[N, 3]``,
    the third weight 0)."""
    e = _rim_edges(surface)
    v = np.asarray(surface.points, dtype=np.float64)
    a, b = v[e[:, 0]], v[e[:, 1]]
    ab = b - a
    t = np.clip(np.einsum("nec,ec->ne", points[:, None] - a[None], ab) / (ab * ab).sum(1), 0.0, 1.0)
    d = np.linalg.norm(a[None] + t[..., None] * ab[None] - points[:, None], axis=2)
    j = np.argmin(d, axis=1)
    tj = t[np.arange(len(points)), j]
    ids = np.stack([e[j, 0], e[j, 1], e[j, 1]], 1)
    return ids, np.stack([1 - tj, tj, np.zeros_like(tj)], 1)


def _surface_distances(a_pts: np.ndarray, a_surface: Any, b_pts: np.ndarray, b_surface: Any) -> dict[str, float]:
    """Chamfer (mean of the two directed mean point-to-surface distances) and Hausdorff, mm."""
    _, ca = b_surface.find_closest_cell(a_pts, return_closest_point=True)
    _, cb = a_surface.find_closest_cell(b_pts, return_closest_point=True)
    da = np.linalg.norm(ca - a_pts, axis=1)
    db = np.linalg.norm(cb - b_pts, axis=1)
    return {"chamfer_mm": float(0.5 * (da.mean() + db.mean())), "hausdorff_mm": float(max(da.max(), db.max()))}


def _sub_surface(points: np.ndarray, faces: np.ndarray, keep: np.ndarray) -> tuple[Any, np.ndarray]:
    """The triangles whose three vertices are kept, as ``PolyData`` over all ``points``; and the kept
    vertex ids (for distances from them)."""
    import pyvista as pv

    f = faces[keep[faces].all(axis=1)]
    used = np.unique(f)
    remap = np.full(len(points), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return pv.PolyData(points[used], np.hstack([np.full((len(f), 1), 3), remap[f]]).ravel()), used


@dataclass
class FitResult:
    """A template fitted to every phase of a real beat.

    Attributes
    ----------
    phases : list of str
    points : ndarray [P, V, 3]
        The fitted template's vertices per phase (mm, the real surfaces' frame).
    lv_fitted_ml, lv_real_ml : ndarray [P]
        LV cavity volume of the fitted template and of the capped real endocardium.
    ed_index, es_index : int
        Phases of the largest and smallest real LV volume.
    quality : list of dict
        Per phase: ``chamfer_mm`` (all fitted surfaces), ``chamfer_lv_mm``, and per surface.
    report : dict
        ``report.json``'s contents.
    """

    phases: list[str]
    points: np.ndarray
    lv_fitted_ml: np.ndarray
    lv_real_ml: np.ndarray
    ed_index: int
    es_index: int
    quality: list[dict[str, float]]
    report: dict[str, Any] = field(default_factory=dict)


def fit_real_beat(beat: RealBeat, template: Any = None, options: CorrespondOptions | None = None) -> FitResult:
    """Fit the template (default :func:`default_template`) to every phase of ``beat`` (module notes)."""
    t0 = time.perf_counter()
    tpl = default_template() if template is None else template
    topo = heart_topology()
    if tpl.n_points != topo.n_points:
        raise InputError(f"the template must be a heart in the template's vertex order ({topo.n_points} vertices)")
    tp = np.asarray(tpl.points, dtype=np.float64)
    surface_lab = fit_template_labels(tp)  # which template surface each vertex belongs to
    lab = surface_lab.copy()  # the labels matched (the base ring gets its own)
    names = [s for s in SURFACES if s in beat.surfaces]
    lv_real = np.array([capped_volume_ml(m, f"LV endocardium of phase {ph}")
                        for m, ph in zip(beat.surfaces["lv_endo"], beat.phases, strict=True)])
    ed, es = int(np.argmax(lv_real)), int(np.argmin(lv_real))
    # 1. ED: robust OT from the template's labelled surfaces to the real ones. The template's base
    # ring and the rims of the real LV's openings (the valve annuli) are a label of their own, so
    # the template's cavity reaches up to the real one's openings.
    lv = beat.surfaces["lv_endo"][ed]
    rim, rim_w = _rim_vertices(lv)
    ring = topo.lv_endo_points[-N_LON:]  # the template's base ring
    if len(rim):
        lab[ring] = _RIM
    q, lq, wq = [], [], []
    for name in names:
        m = beat.surfaces[name][ed]
        lab_q = np.full(m.n_points, _LABEL[name])
        w = vertex_areas(m.points, triangles(m))
        if name == "lv_endo" and len(rim):
            lab_q[rim] = _RIM
            w[rim] = rim_w
        q.append(np.asarray(m.points, dtype=np.float64))
        lq.append(lab_q)
        wq.append(w)
    wp = vertex_areas(tp, topo.faces)
    if len(rim):
        wp[ring] = _ring_weights(tp[ring])
    lab_fit = np.where(lab > 0, lab, -1)
    corr = correspond_points(tp, np.concatenate(q), lab_fit, np.concatenate(lq), wp, np.concatenate(wq),
                             options or CorrespondOptions(), initial_transform=landmark_transform(tpl, beat, ed))
    fitted_ed = tp + corr.displacement
    # Anchor every labelled vertex on its real surface at ED: the ring on the rims, the rest on the
    # nearest surface point (real vertex ids [N, 3] and weights [N, 3]).
    anchors = []
    for name in names:
        idx = np.flatnonzero(lab == _LABEL[name])
        anchors.append((name, idx, *_anchor(fitted_ed[idx], beat.surfaces[name][ed])))
    if len(rim):
        anchors.append(("lv_endo", ring, *_anchor_rim(fitted_ed[ring], lv)))
    anchored = np.concatenate([a[1] for a in anchors])
    free = np.setdiff1d(np.arange(topo.n_points), anchored)
    # 2. Every phase follows the anchors' material points.
    P = len(beat.phases)
    pts = np.empty((P, topo.n_points, 3))
    for k in range(P):
        cur = np.empty((topo.n_points, 3))
        for name, idx, ids, w in anchors:
            cur[idx] = np.einsum("nk,nkc->nc", w, np.asarray(beat.surfaces[name][k].points, dtype=np.float64)[ids])
        moved = interpolate_field(fitted_ed[anchored], cur[anchored] - fitted_ed[anchored], fitted_ed[free],
                                  scale_mm=4.0)
        cur[free] = fitted_ed[free] + moved
        pts[k] = cur
    # Volumes and quality per phase.
    cav = topo.lv_cavity_faces
    lv_fit = np.array([abs(signed_volume_triangles(pts[k], cav)) / 1000.0 for k in range(P)])
    quality = []
    for k in range(P):
        row: dict[str, float] = {}
        per = []
        for s in names:
            idx = np.flatnonzero(surface_lab == _LABEL[s])
            mask = np.zeros(topo.n_points, dtype=bool)
            mask[idx] = True
            sub, used = _sub_surface(pts[k], topo.faces, mask)
            real = beat.surfaces[s][k]
            d = _surface_distances(pts[k][used], sub, np.asarray(real.points, dtype=np.float64), real)
            row[f"chamfer_{s}_mm"] = d["chamfer_mm"]
            row[f"hausdorff_{s}_mm"] = d["hausdorff_mm"]
            per.append(d["chamfer_mm"])
        row["chamfer_mm"] = float(np.mean(per))
        row["chamfer_lv_mm"] = row["chamfer_lv_endo_mm"]
        quality.append(row)
    strain = lv_strain(pts[ed], pts[es])
    err = 100.0 * (lv_fit - lv_real) / lv_real
    ef_fit = 100.0 * (lv_fit[ed] - lv_fit[es]) / lv_fit[ed]
    ef_direct = 100.0 * (lv_real[ed] - lv_real[es]) / lv_real[ed]
    report = {
        "source": beat.source, "phases": beat.phases, "surfaces": names,
        "ed_phase": beat.phases[ed], "es_phase": beat.phases[es],
        "ef_fitted": float(ef_fit), "ef_direct": float(ef_direct), "ef_difference": float(ef_fit - ef_direct),
        "edv_fitted_ml": float(lv_fit[ed]), "esv_fitted_ml": float(lv_fit[es]),
        "edv_direct_ml": float(lv_real[ed]), "esv_direct_ml": float(lv_real[es]),
        "gls_pct": strain.gls_pct, "gcs_pct": strain.gcs_pct,
        "max_volume_error_pct": float(np.abs(err).max()), "volume_error_pct": [float(e) for e in err],
        "chamfer_mm": [q_["chamfer_mm"] for q_ in quality],
        "chamfer_lv_mm": [q_["chamfer_lv_mm"] for q_ in quality],
        "quality": quality, "segments": strain.segments,
        "correspondence_seconds": corr.seconds, "seconds": time.perf_counter() - t0,
        "volume_method": "divergence theorem; real endocardium capped by flat fans at its holes' centroids; "
                         "template cavity = its endocardium plus the flat cap on its base ring",
    }
    return FitResult(beat.phases, pts, lv_fit, lv_real, ed, es, quality, report)


def fit_real(source: str | os.PathLike[str], out_dir: str | os.PathLike[str], template: Any = None,
             options: CorrespondOptions | None = None) -> FitResult:
    """``sono3d heart fit-real``: fit, then write ``fitted_<phase>.vtp`` per phase (the template's
    vertex order, with its labels and LV cavity faces), ``volumes.csv`` and ``report.json`` into
    ``out_dir``. Returns the result (its ``report`` lists the files). Everything is computed before
    anything is written.
    """
    beat = read_real_beat(source)
    res = fit_real_beat(beat, template, options)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for k, ph in enumerate(res.phases):
        path = out / f"fitted_{ph}.vtp"
        write_mesh(path, heart_mesh(res.points[k]))
        files.append(path.name)
    with atomic_path(out / "volumes.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["phase", "lv_fitted_ml", "lv_real_ml", "error_pct", "chamfer_mm", "chamfer_lv_mm"])
            for k, ph in enumerate(res.phases):
                w.writerow([ph, f"{res.lv_fitted_ml[k]:.4f}", f"{res.lv_real_ml[k]:.4f}",
                            f"{100 * (res.lv_fitted_ml[k] / res.lv_real_ml[k] - 1):.4f}",
                            f"{res.quality[k]['chamfer_mm']:.4f}", f"{res.quality[k]['chamfer_lv_mm']:.4f}"])
    res.report["files"] = files + ["volumes.csv", "report.json"]
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(res.report, indent=1) + "\n", encoding="utf-8")
    return res
