"""The AHA 17-segment model of the left ventricle: a geometric rule, and the template's labels.

The rule (:func:`aha_segments`) needs the LV's apex, the centre of its base (mitral-annulus)
plane, and the directions of the septum and the anterior wall:

* **levels**: the normalised height ``eta = ((p - apex) . u) / ((base - apex) . u)`` along the long
  axis ``u`` (apex to base) splits the LV into the apical cap (segment 17, ``eta < 1/7``) and three
  levels of equal height above it (apical ``eta < 3/7``, mid ``eta < 5/7``, basal above). The AHA
  statement (Cerqueira et al., Circulation 2002) divides the LV into equal thirds perpendicular to
  the long axis with the apex (the cap beyond the cavity) as segment 17; the cap of 1/7 of the
  apex-to-base length (about 10 mm of a 70 mm LV, one apical wall thickness) is the proportion the
  CardioMesh atlas labels follow (``docs/clinical.md``);
* **sectors**: the angle ``alpha`` about the axis from the septum (0°) towards the anterior wall
  (90°). Basal and mid levels: six 60° sectors, the septum spanning the two centred on it:
  anteroseptal [0°, 60°), anterior [60°, 120°), anterolateral [120°, 180°), inferolateral [180°, 240°),
  inferior [240°, 300°), inferoseptal [300°, 360°). Apical level: four 90° sectors, septal centred on
  0°, anterior on 90°, lateral on 180°, inferior on 270°.

The long axis runs from the apex to the base centre, or along the base plane's normal when it is
given (:func:`wall_landmarks`: a real LV whose apex is not straight below its base centre): the
levels are heights along it, the angles are taken about the line through the base centre. The
septum direction is where the RV lies (from the LV axis towards the RV's centroid); the anterior
wall is the side of the septum the aortic valve (LV outflow) is on.

**Template labels.** Every mesh in the template's vertex order gets the labels of one template: the
rule applied once to the default parametric heart (:class:`sono3d.phantoms.heart.HeartShape`
defaults, heart frame: apex = epicardial apex, base = the base plane's centre, septum ``+x``,
anterior ``+y``). The labels are material: a vertex keeps its segment in every phase and every case.
"""

from __future__ import annotations

import functools

import numpy as np

from sono3d.errors import InputError
from sono3d.phantoms.heart import HeartShape, heart_topology, phase_points
from sono3d.phantoms.lv_grid import N_LON, endocardial_grid

__all__ = [
    "AHA_NAMES",
    "CAP_FRACTION",
    "LEVELS",
    "aha_segments",
    "wall_landmarks",
    "segment_level",
    "template_segments",
    "template_endocardial_segments",
    "template_edge_segments",
    "segment_volumes_mm3",
    "cavity_faces_by_segment",
]

AHA_NAMES: dict[int, str] = {
    1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal", 4: "basal inferior",
    5: "basal inferolateral", 6: "basal anterolateral", 7: "mid anterior", 8: "mid anteroseptal",
    9: "mid inferoseptal", 10: "mid inferior", 11: "mid inferolateral", 12: "mid anterolateral",
    13: "apical anterior", 14: "apical septal", 15: "apical inferior", 16: "apical lateral", 17: "apex",
}
LEVELS: dict[str, tuple[int, ...]] = {"basal": (1, 2, 3, 4, 5, 6), "mid": (7, 8, 9, 10, 11, 12),
                                      "apical": (13, 14, 15, 16), "apex": (17,)}
CAP_FRACTION = 1.0 / 7.0

# Basal segments by 60° sector from the septum towards the anterior wall; mid = basal + 6.
_BASAL_BY_SECTOR = np.array([2, 1, 6, 5, 4, 3])
# Apical segments by 90° sector centred on the septum, the anterior wall, ...
_APICAL_BY_SECTOR = np.array([14, 13, 16, 15])


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n < 1e-9:
        raise InputError(f"{what} must be a non-zero finite vector")
    return v / n


def segment_level(segment: int) -> str:
    """``"basal"``, ``"mid"``, ``"apical"`` or ``"apex"`` of an AHA segment number."""
    for name, segs in LEVELS.items():
        if segment in segs:
            return name
    raise InputError(f"AHA segments are numbered 1 to 17, got {segment}")


def aha_segments(points: np.ndarray, apex: np.ndarray, base_centre: np.ndarray, septum: np.ndarray,
                 anterior: np.ndarray, cap_fraction: float = CAP_FRACTION, axis: np.ndarray | None = None
                 ) -> np.ndarray:
    """AHA segment (1 to 17) of each LV point by the rule in the module notes.

    Parameters
    ----------
    points : ndarray [N, 3]
        LV points (mm).
    apex, base_centre : ndarray [3]
        The LV apex and the centre of its base plane (mm).
    septum, anterior : ndarray [3]
        Directions (any length) towards the septum and towards the anterior wall; only their parts
        across the long axis count, and ``anterior`` only fixes the sense of the angle.
    cap_fraction : float
        Height of the apical cap (segment 17) as a fraction of the apex-to-base height.
    axis : ndarray [3], optional
        Direction of the long axis (apex to base); default ``base_centre - apex``. Heights are
        measured along it from the apex to the base centre's level, angles about the line through
        ``base_centre`` along it (with the base plane's normal here, a tilted apex does not tilt
        the levels).

    Returns
    -------
    ndarray [N] int64
        Points above the base level are basal, points below the apex the apex (17).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or not np.isfinite(p).all():
        raise InputError("points must be finite and of shape [N, 3]")
    if not 0.0 <= cap_fraction < 1.0:
        raise InputError(f"cap_fraction must lie in [0, 1), got {cap_fraction}")
    apex = np.asarray(apex, dtype=np.float64)
    base = np.asarray(base_centre, dtype=np.float64)
    u = _unit(base - apex if axis is None else axis, "the long axis")
    height = float((base - apex) @ u)
    if not height > 0:
        raise InputError("the base centre must lie above the apex along the long axis")
    sep = np.asarray(septum, dtype=np.float64)
    e1 = _unit(sep - u * (sep @ u), "the septum direction (across the long axis)")
    e2 = np.cross(u, e1)
    if np.asarray(anterior, dtype=np.float64) @ e2 < 0:
        e2 = -e2
    eta = ((p - apex) @ u) / height
    r = p - base
    alpha = np.degrees(np.arctan2(r @ e2, r @ e1)) % 360.0
    out = np.empty(len(p), dtype=np.int64)
    step = (1.0 - cap_fraction) / 3.0
    level = np.digitize(eta, [cap_fraction, cap_fraction + step, cap_fraction + 2 * step])  # 0 cap .. 3 basal
    basal = _BASAL_BY_SECTOR[np.minimum((alpha // 60.0).astype(np.int64), 5)]
    apical = _APICAL_BY_SECTOR[np.minimum(((alpha + 45.0) % 360.0 // 90.0).astype(np.int64), 3)]
    out[level == 0] = 17
    out[level == 1] = apical[level == 1]
    out[level == 2] = basal[level == 2] + 6
    out[level == 3] = basal[level == 3]
    return out


def wall_landmarks(points: np.ndarray, faces: np.ndarray, wall: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    """Apex, base centre and long axis of a closed LV mesh whose wall vertices are marked.

    ``wall`` (bool ``[N]``) marks the myocardial wall (endocardium and epicardium); the rest is
    the base (valve plane, outflow). The base plane is fitted (least squares) to the wall vertices
    that share a triangle with the base; its centre is their centroid and its normal, pointing
    away from the wall, the long axis; the apex is the wall vertex lowest along it.
    """
    p = np.asarray(points, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    w = np.asarray(wall, dtype=bool)
    if w.shape != (len(p),):
        raise InputError(f"the wall mask needs one value per vertex ({len(p)}), got {w.shape}")
    mixed = f[w[f].any(axis=1) & (~w[f]).any(axis=1)]
    rim = np.unique(mixed[w[mixed]])
    if len(rim) < 3:
        raise InputError("the wall does not border a base region (no base plane to fit)")
    c = p[rim].mean(axis=0)
    n = np.linalg.svd(p[rim] - c, full_matrices=False)[2][2]
    if (p[w].mean(axis=0) - c) @ n > 0:
        n = -n
    h = (p[w] - c) @ n
    return p[w][np.argmin(h)], c, n


@functools.lru_cache(maxsize=1)
def _template_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The default template heart (heart frame): points, apex, base centre."""
    pts, lm = phase_points(HeartShape(), "ed")
    return pts, lm["apex_epi"], lm["lv_base"]


def _template_rule(points: np.ndarray) -> np.ndarray:
    _, apex, base = _template_frame()
    return aha_segments(points, apex, base, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))


@functools.lru_cache(maxsize=1)
def template_segments() -> np.ndarray:
    """AHA segment of every LV-myocardium vertex of the template, 0 for the rest of the heart, ``[V]``."""
    pts = _template_frame()[0]
    topo = heart_topology()
    a, b = topo.point_ranges[0]
    out = np.zeros(topo.n_points, dtype=np.int64)
    out[a:b] = _template_rule(pts[a:b])
    return out


def template_endocardial_segments() -> np.ndarray:
    """AHA segment of each LV endocardial vertex (endocardial order: apex, then rings), ``[561]``."""
    return template_segments()[heart_topology().lv_endo_points]


@functools.lru_cache(maxsize=1)
def template_edge_segments() -> dict[str, np.ndarray]:
    """The endocardium's edges in endocardial vertex order, with the segment of each edge's midpoint.

    Returns ``{"meridian": [E, 2], "meridian_segment": [E], "ring": [E', 2], "ring_segment": [E']}``:
    meridian edges join consecutive vertices of a longitude (from the apex up), ring edges consecutive
    vertices of a ring.
    """
    endo = _template_frame()[0][heart_topology().lv_endo_points]
    apex, rings = endocardial_grid()
    mer = np.concatenate([np.stack([np.full(N_LON, apex), rings[0]], 1),
                          np.stack([rings[:-1].ravel(), rings[1:].ravel()], 1)])
    ring = np.stack([rings.ravel(), np.roll(rings, -1, axis=1).ravel()], 1)
    return {"meridian": mer, "meridian_segment": _template_rule(endo[mer].mean(axis=1)),
            "ring": ring, "ring_segment": _template_rule(endo[ring].mean(axis=1))}


@functools.lru_cache(maxsize=1)
def cavity_faces_by_segment() -> tuple[np.ndarray, np.ndarray]:
    """The closed cavity's faces in endocardial order, and the template segment of each face's
    centroid (the base cap lies in the base plane: a basal segment by its angle)."""
    topo = heart_topology()
    remap = np.full(topo.n_points, -1, dtype=np.int64)
    remap[topo.lv_endo_points] = np.arange(len(topo.lv_endo_points))
    f = remap[topo.lv_cavity_faces]
    endo = _template_frame()[0][topo.lv_endo_points]
    return f, _template_rule(endo[f].mean(axis=1))


def segment_volumes_mm3(endo_points: np.ndarray) -> dict[int, float]:
    """The LV cavity's volume (mm³) in each AHA segment, summing to the whole cavity.

    ``endo_points``: the LV endocardium ``[561, 3]`` in the template's order
    (:func:`sono3d.phantoms.lv_grid.endocardium_points`). The cavity is cut into horizontal wedges
    about its long axis (apex vertex to the base ring's centroid): by the divergence theorem with
    the field ``x_perp / 2`` (the part of ``x`` across the axis, halved; divergence 1), each
    triangle's flux ``(c_perp . n) A / 2`` is the volume between the axis and the triangle, exactly,
    wherever each cross-section is star-shaped about the axis. Triangles take the template segment
    of their centroid; the flat base cap's flux is about zero.
    """
    p = np.asarray(endo_points, dtype=np.float64)
    f, seg = cavity_faces_by_segment()
    apex, rings = endocardial_grid()
    o = p[apex]
    u = _unit(p[rings[-1]].mean(axis=0) - o, "the LV long axis")
    a, b, c = p[f[:, 0]], p[f[:, 1]], p[f[:, 2]]
    n = 0.5 * np.cross(b - a, c - a)
    cen = (a + b + c) / 3.0 - o
    flux = 0.5 * np.einsum("ij,ij->i", cen - np.outer(cen @ u, u), n)
    return {s: float(flux[seg == s].sum()) for s in range(1, 18)}
