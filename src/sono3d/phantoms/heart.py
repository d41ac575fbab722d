"""A parametric four-chamber heart at end-diastole and end-systole, with exact ground truth.

Every structure is a smooth map of one fixed template surface (a truncated-ellipsoid cup for the LV,
a latitude-longitude sphere for everything else), so every case of every phase has the same vertex
order and faces: the ground-truth correspondence between cases is the identity on vertex indices.

Frames
------
The *heart frame* (mm) has its origin at the centre of the LV base (valve) plane at end-diastole,
``+z`` along the LV long axis from apex to base, ``+x`` from the LV axis towards the RV (the septum)
and ``+y = z x x``. A :class:`Placement` puts it in the RAS *torso frame*:
``p_world = shift + scale * R @ R0 @ p_heart`` with ``R = Rz Ry Rx`` (the S2MNet paper's controls)
and ``R0`` the canonical orientation (apex left, anterior and inferior; RV anterior-right).

Labels
------
Cells and points carry ``elemTag`` in the 24-label scheme of the public CT cohort (1 LV myocardium,
2 RV myocardium, 3 LA, 4 RA, 5 aorta, 6 pulmonary artery, 7-10 mitral, tricuspid, aortic and
pulmonary valves, 11 LA appendage, 12-15 pulmonary veins, 16 SVC, 17 IVC). The border labels
18-24 are not generated. Walls with a cavity (RV, atria, great arteries) are closed shells made of
an outward outer surface and an inward inner surface; ``part`` (cell and point array) tells them
apart, and the inner surfaces double as the blood pools for the view label images.

ED to ES
--------
The LV contracts by an affine map in its own frame: longitudinal shortening ``k_l`` about the
epicardial apex and radial shortening ``k_r`` of the endocardium about the long axis. Affine maps
scale enclosed volumes by their determinant, so ``ESV = k_r**2 * k_l * EDV`` holds exactly for the
meshes and ``k_r = sqrt((1 - EF) / k_l)`` gives the sampled EF without iteration. The epicardium
shortens radially by the factor that keeps the myocardial volume (wall thickening). The base, atria,
valves and vessels descend with the base; the atria enlarge (they fill), the RV empties.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.mesh import signed_volume_triangles
from sono3d.geometry.transforms import euler_to_matrix
from sono3d.types import PHASES

__all__ = [
    "ELEM_TAGS",
    "PARTS",
    "VIEW_LABELS",
    "HeartShape",
    "Placement",
    "HeartPhase",
    "HeartTopology",
    "heart_topology",
    "build_heart_phase",
    "heart_phases",
    "sample_shape",
    "sample_placement",
    "truncated_ellipsoid_volume",
    "canonical_rotation",
    "heart_mesh",
    "lv_cavity_mesh",
    "lv_cavity_from_heart",
    "with_ef",
    "SHAPE_RANGES",
    # the parts of a phase, for the physiological beat (sono3d.phantoms.heart_motion) and its readers
    "LV_CUP_RES",
    "PART_INDEX",
    "LVGeometry",
    "lv_ed_geometry",
    "lv_es_geometry",
    "phase_points",
    "heart_points",
    "placed_phase",
]

# The public cohort's label scheme (cells' ``elemTag``).
ELEM_TAGS: dict[str, int] = {
    "lv_myocardium": 1, "rv_myocardium": 2, "la": 3, "ra": 4, "aorta": 5, "pulmonary_artery": 6,
    "mitral_valve": 7, "tricuspid_valve": 8, "aortic_valve": 9, "pulmonary_valve": 10,
    "la_appendage": 11, "pv_left_superior": 12, "pv_left_inferior": 13, "pv_right_superior": 14,
    "pv_right_inferior": 15, "svc": 16, "ivc": 17,
}

# Values of the view label images: the walls keep their elemTag; blood pools get their own codes.
VIEW_LABELS: dict[str, int] = {**ELEM_TAGS, "lv_blood": 25, "rv_blood": 26, "la_blood": 27,
                               "ra_blood": 28, "aorta_blood": 29, "pa_blood": 30}

# Template resolution (rings x longitudes); the total is about 5,100 vertices.
LV_CUP_RES = (14, 40)  # LV endocardium and epicardium, each (sono3d.phantoms.lv_grid names the grid)
_RES = {"rv": (16, 32), "atrium": (12, 24), "artery": (10, 20), "valve": (5, 16), "small": (6, 16)}


@dataclass(frozen=True)
class _PartSpec:
    name: str
    tag: int
    res: tuple[int, int] | None  # sphere resolution; None for the LV cup
    inward: bool = False  # inner surface of a shell (faces point into the wall's hole)


PARTS: tuple[_PartSpec, ...] = (
    _PartSpec("lv_myocardium", 1, None),
    _PartSpec("rv_outer", 2, _RES["rv"]),
    _PartSpec("rv_inner", 2, _RES["rv"], True),
    _PartSpec("la_outer", 3, _RES["atrium"]),
    _PartSpec("la_inner", 3, _RES["atrium"], True),
    _PartSpec("ra_outer", 4, _RES["atrium"]),
    _PartSpec("ra_inner", 4, _RES["atrium"], True),
    _PartSpec("aorta_outer", 5, _RES["artery"]),
    _PartSpec("aorta_inner", 5, _RES["artery"], True),
    _PartSpec("pa_outer", 6, _RES["artery"]),
    _PartSpec("pa_inner", 6, _RES["artery"], True),
    _PartSpec("mitral_valve", 7, _RES["valve"]),
    _PartSpec("tricuspid_valve", 8, _RES["valve"]),
    _PartSpec("aortic_valve", 9, _RES["valve"]),
    _PartSpec("pulmonary_valve", 10, _RES["valve"]),
    _PartSpec("la_appendage", 11, _RES["small"]),
    _PartSpec("pv_left_superior", 12, _RES["small"]),
    _PartSpec("pv_left_inferior", 13, _RES["small"]),
    _PartSpec("pv_right_superior", 14, _RES["small"]),
    _PartSpec("pv_right_inferior", 15, _RES["small"]),
    _PartSpec("svc", 16, _RES["small"]),
    _PartSpec("ivc", 17, _RES["small"]),
)
PART_INDEX = {p.name: i for i, p in enumerate(PARTS)}  # part name -> index in PARTS (HeartTopology.part_of_*)


# --------------------------------------------------------------------------------------------
# Shape model
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeartShape:
    """Interpretable shape parameters of one heart (end-diastole, heart frame, mm).

    Attributes
    ----------
    lv_length_mm : LV endocardial length, apex to base plane.
    lv_sphericity : LV endocardial short-axis diameter over length.
    lv_eccentricity : ratio of the two short-axis diameters (y over x).
    lv_base_fraction : how far the base plane lies above the LV's widest section, as a fraction of the
        endocardial semi-long axis (0 cuts at the equator).
    lv_wall_mm : LV wall thickness at end-diastole (apex 80% of it).
    rv_size : scale of the RV crescent's thickness and extent.
    rv_wrap_deg : half the angle the RV wraps around the LV, measured about the long axis.
    rv_wall_mm : RV free-wall thickness.
    la_diameter_mm, ra_diameter_mm : atrial diameters at end-diastole.
    aorta_diameter_mm, pa_diameter_mm : great-artery diameters.
    ef : LV ejection fraction (fraction, 0.2 to 0.75).
    long_shortening : LV longitudinal shortening from ED to ES (fraction).
    rv_ef : RV ejection fraction (fraction).
    """

    lv_length_mm: float = 84.0
    lv_sphericity: float = 0.58
    lv_eccentricity: float = 1.0
    lv_base_fraction: float = 0.2
    lv_wall_mm: float = 9.0
    rv_size: float = 1.0
    rv_wrap_deg: float = 58.0
    rv_wall_mm: float = 4.0
    la_diameter_mm: float = 38.0
    ra_diameter_mm: float = 40.0
    aorta_diameter_mm: float = 28.0
    pa_diameter_mm: float = 25.0
    ef: float = 0.6
    long_shortening: float = 0.14
    rv_ef: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not np.isfinite(v):
                raise InputError(f"heart shape parameter {f.name} must be finite, got {v}")
        if not (0.05 <= self.ef <= 0.9):
            raise InputError(f"ejection fraction must lie in [0.05, 0.9], got {self.ef}")
        if not (0.0 <= self.long_shortening < 0.5):
            raise InputError(f"longitudinal shortening must lie in [0, 0.5), got {self.long_shortening}")
        if not (0.0 <= self.lv_base_fraction < 0.8):
            raise InputError(f"lv_base_fraction must lie in [0, 0.8), got {self.lv_base_fraction}")
        if min(self.lv_length_mm, self.lv_sphericity, self.lv_wall_mm, self.rv_size, self.rv_wall_mm,
               self.la_diameter_mm, self.ra_diameter_mm, self.aorta_diameter_mm, self.pa_diameter_mm) <= 0:
            raise InputError("heart sizes must be positive")
        if (1 - self.ef) / (1 - self.long_shortening) >= 1:
            raise InputError("longitudinal shortening alone exceeds the ejection fraction")
        if not (20.0 <= self.rv_wrap_deg <= 70.0):
            raise InputError(f"rv_wrap_deg must lie in [20, 70], got {self.rv_wrap_deg}")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


# Sampling ranges (uniform) of the shape parameters; ``long_shortening`` follows the EF.
SHAPE_RANGES: dict[str, tuple[float, float]] = {
    "lv_length_mm": (74.0, 95.0), "lv_sphericity": (0.48, 0.70), "lv_eccentricity": (0.9, 1.08),
    "lv_base_fraction": (0.12, 0.32), "lv_wall_mm": (7.0, 12.0), "rv_size": (0.8, 1.2),
    "rv_wrap_deg": (48.0, 64.0), "rv_wall_mm": (3.0, 5.0), "la_diameter_mm": (32.0, 46.0),
    "ra_diameter_mm": (34.0, 48.0), "aorta_diameter_mm": (24.0, 33.0), "pa_diameter_mm": (21.0, 29.0),
    "ef": (0.20, 0.75), "rv_ef": (0.35, 0.6),
}


def sample_shape(rng: np.random.Generator) -> HeartShape:
    """Draw one :class:`HeartShape` (uniform in :data:`SHAPE_RANGES`; shortening grows with EF)."""
    kw = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in SHAPE_RANGES.items()}
    kw["long_shortening"] = float(0.06 + 0.14 * (kw["ef"] - 0.2) / 0.55 + rng.uniform(-0.015, 0.015))
    return HeartShape(**kw)


@dataclass(frozen=True)
class Placement:
    """Where the heart lies in the torso frame: ``p = shift + scale * Rz Ry Rx @ R0 @ p_heart``."""

    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # theta_x, theta_y, theta_z
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise InputError(f"placement scale must be positive, got {self.scale}")

    def matrix(self) -> np.ndarray:
        """4x4 heart-frame to torso-frame matrix."""
        R = euler_to_matrix(*np.deg2rad(self.angles_deg))
        M = np.eye(4)
        M[:3, :3] = self.scale * R @ canonical_rotation()
        M[:3, 3] = self.shift_mm
        return M

    def to_dict(self) -> dict[str, float]:
        return {"shift_x_mm": self.shift_mm[0], "shift_y_mm": self.shift_mm[1], "shift_z_mm": self.shift_mm[2],
                "theta_x_deg": self.angles_deg[0], "theta_y_deg": self.angles_deg[1],
                "theta_z_deg": self.angles_deg[2], "scale": self.scale}


def sample_placement(rng: np.random.Generator, shift_mm: float = 10.0, angle_deg: float = 10.0,
                     scale: tuple[float, float] = (0.92, 1.08)) -> Placement:
    """Random placement: uniform shifts within ``±shift_mm``, angles within ``±angle_deg``, scale range."""
    sh = rng.uniform(-shift_mm, shift_mm, 3)
    an = rng.uniform(-angle_deg, angle_deg, 3)
    return Placement(tuple(float(v) for v in sh), tuple(float(v) for v in an), float(rng.uniform(*scale)))


@functools.lru_cache(maxsize=1)
def canonical_rotation() -> np.ndarray:
    """``R0``: columns are the torso-frame (RAS) directions of the heart frame's x, y, z axes.

    The long axis (apex to base) points right, posterior and superior, so the apex points left,
    anterior and inferior; +x (towards the RV) points anterior and right.
    """
    z = np.array([0.55, -0.45, 0.70])
    z /= np.linalg.norm(z)
    x = np.array([0.45, 0.85, 0.0])
    x -= z * (x @ z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def truncated_ellipsoid_volume(a: float, b: float, c: float, h: float) -> float:
    """Volume (mm³) of the ellipsoid with semi-axes ``a, b, c`` below the plane ``z = h`` (centre at 0).

    ``pi a b (h + c - (h**3 + c**3) / (3 c**2))`` for ``-c <= h <= c``.
    """
    h = float(np.clip(h, -c, c))
    return float(np.pi * a * b * (h + c - (h ** 3 + c ** 3) / (3 * c * c)))


# --------------------------------------------------------------------------------------------
# Template topology
# --------------------------------------------------------------------------------------------

def _ring_band(r0: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """Triangles joining two rings of equal length (periodic), ``[2n, 3]``."""
    n = len(r0)
    j = np.arange(n)
    k = (j + 1) % n
    return np.concatenate([np.stack([r0[j], r1[j], r1[k]], 1), np.stack([r0[j], r1[k], r0[k]], 1)])


def _pole_fan(pole: int, ring: np.ndarray) -> np.ndarray:
    n = len(ring)
    j = np.arange(n)
    return np.stack([np.full(n, pole), ring[j], ring[(j + 1) % n]], 1)


def _sphere_faces(n_rings: int, n_lon: int) -> np.ndarray:
    """Faces of a latitude-longitude sphere: vertex 0 the +Z pole, rings, last the -Z pole.

    Oriented outward for the points of :func:`_sphere_points`.
    """
    rings = [1 + i * n_lon + np.arange(n_lon) for i in range(n_rings)]
    south = 1 + n_rings * n_lon
    f = [_pole_fan(0, rings[0])]
    f += [_ring_band(rings[i], rings[i + 1]) for i in range(n_rings - 1)]
    f.append(_pole_fan(south, rings[-1])[:, [0, 2, 1]])
    return np.concatenate(f).astype(np.int64)


@functools.lru_cache(maxsize=None)
def _sphere_angles(n_rings: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    """Polar angle (0 at +Z) and longitude of every template vertex."""
    th = np.pi * np.arange(1, n_rings + 1) / (n_rings + 1)
    ph = 2 * np.pi * np.arange(n_lon) / n_lon
    T, P = np.meshgrid(th, ph, indexing="ij")
    return (np.concatenate([[0.0], T.ravel(), [np.pi]]), np.concatenate([[0.0], P.ravel(), [0.0]]))


def _sphere_points(n_rings: int, n_lon: int) -> np.ndarray:
    th, ph = _sphere_angles(n_rings, n_lon)
    return np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], 1)


@dataclass(frozen=True)
class HeartTopology:
    """The template's fixed connectivity, shared by every case and phase.

    Attributes
    ----------
    faces : ndarray [F, 3] int64
        Triangles of the whole labelled heart surface.
    part_of_face, part_of_point : ndarray [F], [V] int32
        Index into :data:`PARTS`.
    elem_tag_of_face, elem_tag_of_point : ndarray int32
    point_ranges : list of (start, stop)
        Vertex range of each part.
    lv_endo_points : ndarray [Ve] int64
        Heart vertices of the LV endocardium (apex first, then rings from apex to base).
    lv_cavity_faces : ndarray [Fc, 3] int64
        Triangles of the closed LV cavity (endocardium plus a flat cap on the base ring), in heart
        vertex indices, oriented outward.
    """

    faces: np.ndarray
    part_of_face: np.ndarray
    part_of_point: np.ndarray
    elem_tag_of_face: np.ndarray
    elem_tag_of_point: np.ndarray
    point_ranges: tuple[tuple[int, int], ...]
    lv_endo_points: np.ndarray
    lv_cavity_faces: np.ndarray

    @property
    def n_points(self) -> int:
        return int(self.part_of_point.shape[0])

    def faces_of(self, name: str) -> np.ndarray:
        return self.faces[self.part_of_face == PART_INDEX[name]]


@functools.lru_cache(maxsize=1)
def heart_topology() -> HeartTopology:
    """The template connectivity (cached)."""
    n_r, n_l = LV_CUP_RES
    n_cup = 1 + n_r * n_l
    faces, pf, ranges = [], [], []
    start = 0
    endo_idx = np.array([], dtype=np.int64)
    cavity = np.zeros((0, 3), dtype=np.int64)
    for i, spec in enumerate(PARTS):
        if spec.res is None:
            # LV myocardium: epicardium [0, n_cup) outward, endocardium [n_cup, 2 n_cup) inward,
            # joined by an annulus in the base plane. Apex first, rings from apex to base; the
            # rings run counter-clockwise seen from the base, so apex-to-base bands face outward.
            epi = [start + 1 + k * n_l + np.arange(n_l) for k in range(n_r)]
            endo = [start + n_cup + 1 + k * n_l + np.arange(n_l) for k in range(n_r)]
            out = [_pole_fan(start, epi[0])[:, [0, 2, 1]]]
            out += [_ring_band(epi[k], epi[k + 1])[:, [0, 2, 1]] for k in range(n_r - 1)]
            endo_out = [_pole_fan(start + n_cup, endo[0])[:, [0, 2, 1]]]
            endo_out += [_ring_band(endo[k], endo[k + 1])[:, [0, 2, 1]] for k in range(n_r - 1)]
            endo_out = np.concatenate(endo_out)
            annulus = _ring_band(endo[-1], epi[-1])
            f = np.concatenate(out + [endo_out[:, [0, 2, 1]], annulus])
            n_pts = 2 * n_cup
            endo_idx = np.arange(start + n_cup, start + 2 * n_cup)
            ring = endo[-1]
            cap = np.stack([np.full(n_l - 2, ring[0]), ring[1:-1], ring[2:]], 1)
            cavity = np.concatenate([endo_out, cap])
        else:
            f = start + _sphere_faces(*spec.res)
            if spec.inward:
                f = f[:, [0, 2, 1]]
            n_pts = 2 + spec.res[0] * spec.res[1]
        faces.append(f)
        pf.append(np.full(len(f), i, dtype=np.int32))
        ranges.append((start, start + n_pts))
        start += n_pts
    faces_a = np.concatenate(faces).astype(np.int64)
    part_of_face = np.concatenate(pf)
    part_of_point = np.concatenate([np.full(b - a, i, dtype=np.int32) for i, (a, b) in enumerate(ranges)])
    tags = np.array([p.tag for p in PARTS], dtype=np.int32)
    return HeartTopology(faces_a, part_of_face, part_of_point, tags[part_of_face], tags[part_of_point],
                         tuple(ranges), endo_idx, cavity)


# --------------------------------------------------------------------------------------------
# Geometry of one phase (heart frame)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LVGeometry:
    """The LV of the affine beat at one phase: confocal-axis truncated ellipsoids (heart frame, mm).

    The endocardium has semi-axes ``a``, ``b`` (across) and ``c`` (long), the epicardium ``A``,
    ``B``, ``C``; both are centred at height ``zc`` on the long axis and cut by the base plane
    ``z = zb``.
    """

    a: float  # endocardial semi-axes (x, y) and semi-long axis
    b: float
    c: float
    A: float  # epicardial
    B: float
    C: float
    zc: float  # common centre height of both ellipsoids
    zb: float  # base plane height

    def endo_volume(self) -> float:
        return truncated_ellipsoid_volume(self.a, self.b, self.c, self.zb - self.zc)

    def epi_volume(self) -> float:
        return truncated_ellipsoid_volume(self.A, self.B, self.C, self.zb - self.zc)

    @property
    def apex_epi_z(self) -> float:
        return self.zc - self.C

    @property
    def apex_endo_z(self) -> float:
        return self.zc - self.c

    def epi_radius(self, phi: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance from the long axis to the epicardium at angle ``phi`` and height ``z``."""
        u = np.clip((z - self.zc) / self.C, -1.0, 1.0)
        return np.sqrt(1 - u * u) / np.sqrt((np.cos(phi) / self.A) ** 2 + (np.sin(phi) / self.B) ** 2)


def lv_ed_geometry(s: HeartShape) -> LVGeometry:
    """The end-diastolic LV of shape ``s`` (base plane at ``z = 0``)."""
    L = s.lv_length_mm
    f = s.lv_base_fraction
    c = L / (1 + f)
    zc = -f * c
    a = s.lv_sphericity * L / 2
    b = a * s.lv_eccentricity
    t = s.lv_wall_mm
    C = c + 0.8 * t
    return LVGeometry(a, b, c, a + t, b + t, C, zc, 0.0)


def lv_es_geometry(s: HeartShape, ed: LVGeometry) -> tuple[LVGeometry, float, float, float]:
    """End-systolic LV of the affine beat and its factors ``(k_l, k_r, k_e)`` (long axis, endocardial
    and epicardial radii), from the end-diastolic ``ed``."""
    k_l = 1.0 - s.long_shortening
    k_r = float(np.sqrt((1.0 - s.ef) / k_l))
    v_endo, v_epi = ed.endo_volume(), ed.epi_volume()
    k_e = float(np.sqrt((v_epi - s.ef * v_endo) / (k_l * v_epi)))  # keeps the myocardial volume
    z0 = ed.apex_epi_z
    es = LVGeometry(ed.a * k_r, ed.b * k_r, ed.c * k_l, ed.A * k_e, ed.B * k_e, ed.C * k_l,
                    z0 + k_l * (ed.zc - z0), z0 + k_l * (ed.zb - z0))
    return es, k_l, k_r, k_e


def _cup_points(a: float, b: float, c: float, zc: float, zb: float) -> np.ndarray:
    """Truncated-ellipsoid cup: apex, then rings from apex to the base plane ``z = zb``."""
    n_r, n_l = LV_CUP_RES
    cos_b = np.clip((zc - zb) / c, -1.0, 1.0)
    th_b = np.arccos(cos_b)
    th = th_b * np.arange(1, n_r + 1) / n_r
    ph = 2 * np.pi * np.arange(n_l) / n_l
    T, P = np.meshgrid(th, ph, indexing="ij")
    ring = np.stack([a * np.sin(T) * np.cos(P), b * np.sin(T) * np.sin(P), zc - c * np.cos(T)], -1).reshape(-1, 3)
    ring[-n_l:, 2] = zb  # exactly planar base ring
    return np.concatenate([[[0.0, 0.0, zc - c]], ring])


def _frame(direction: np.ndarray) -> np.ndarray:
    """A rotation whose third column is ``direction`` (unit)."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(helper, d)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(d, u), d], 1)


def _superquadric(res: tuple[int, int], centre: np.ndarray, axis: np.ndarray, radii: tuple[float, float],
                  half_length: float, eps_axial: float, eps_radial: float = 1.0) -> np.ndarray:
    """A closed superquadric of revolution (tube, disc, ellipsoid) about ``axis`` through ``centre``.

    ``eps_axial < 1`` flattens the ends (a tube or a disc); ``1`` gives an ellipsoid.
    """
    th, ph = _sphere_angles(*res)
    ct, st = np.cos(th), np.sin(th)
    sp = np.sign(st) * np.abs(st) ** eps_axial
    zz = half_length * np.sign(ct) * np.abs(ct) ** eps_axial
    cp, sn = np.cos(ph), np.sin(ph)
    xx = radii[0] * sp * np.sign(cp) * np.abs(cp) ** eps_radial
    yy = radii[1] * sp * np.sign(sn) * np.abs(sn) ** eps_radial
    local = np.stack([xx, yy, zz], 1)
    return np.asarray(centre) + local @ _frame(axis).T


def _ellipsoid(res: tuple[int, int], centre: np.ndarray, radii: tuple[float, float, float]) -> np.ndarray:
    return np.asarray(centre) + _sphere_points(*res) * np.asarray(radii)


def _crescent(res: tuple[int, int], lv: LVGeometry, half_angle: float, z_lo: float, z_hi: float,
              thickness: float, gap: float) -> np.ndarray:
    """The RV crescent: a sphere warped into cylindrical coordinates hugging the LV epicardium.

    Sphere point ``(X, Y, Z)`` goes to angle ``phi = Y * half_angle``, height from ``z_lo`` to
    ``z_hi`` with ``Z``, and radius ``epi(phi, z) + gap + thickness * (X + q) / 2`` with
    ``q = sqrt(1 - Y**2 - Z**2)``: the inner sheet lies on the epicardium (plus ``gap``), the outer
    one bulges by up to ``thickness``, and both meet at the horns. The map is injective on the ball
    with a positive Jacobian, so the surface is closed, simple and outward.
    """
    P = _sphere_points(*res)
    X, Y, Z = P[:, 0], P[:, 1], P[:, 2]
    q = np.sqrt(np.clip(1 - Y * Y - Z * Z, 0.0, None))
    phi = Y * half_angle
    z = 0.5 * (z_lo + z_hi) + 0.5 * (z_hi - z_lo) * Z
    rho = lv.epi_radius(phi, z) + gap + 0.5 * thickness * (X + q)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], 1)


def _rv_extent(lv: LVGeometry, shrink: float) -> tuple[float, float]:
    """Heights of the RV crescent's ends: from 20% above the epicardial apex to just below the base."""
    z_hi = lv.zb - 3.0
    z_lo = lv.apex_epi_z + 0.2 * (lv.zb - lv.apex_epi_z)
    return z_hi - shrink * (z_hi - z_lo), z_hi


def _crescent_volume(lv: LVGeometry, half_angle: float, z_lo: float, z_hi: float, thickness: float) -> float:
    p = _crescent(_RES["rv"], lv, half_angle, z_lo, z_hi, thickness, 1.0)
    return signed_volume_triangles(p, _sphere_faces(*_RES["rv"]))


@dataclass
class HeartPhase:
    """One phase of one heart, in the torso frame.

    Attributes
    ----------
    points : ndarray [V, 3] float64
        Vertices (mm) in the template's order.
    landmarks : dict of name -> ndarray [3]
        ``apex`` (LV endocardial apex), ``apex_epi``, ``lv_base`` (centre of the LV base plane),
        ``mitral``, ``tricuspid``, ``aortic``, ``pulmonary`` (valve centres), ``lv_axis`` (unit,
        apex to base).
    lv_volume_mm3 : float
        Volume of the closed LV cavity mesh (divergence theorem).
    """

    points: np.ndarray
    landmarks: dict[str, np.ndarray]
    lv_volume_mm3: float


def phase_points(s: HeartShape, phase: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """All template vertices of one phase of the affine beat in the heart frame, and its landmarks."""
    ed = lv_ed_geometry(s)
    if phase == "ed":
        return heart_points(s, ed, 0.0, 1.0)
    if phase == "es":
        lv, _, k_r, _ = lv_es_geometry(s, ed)
        return heart_points(s, lv, 1.0, k_r)
    raise InputError(f"phase must be 'ed' or 'es', got {phase!r}")


def heart_points(s: HeartShape, lv, activation: float, k_r: float,  # noqa: ANN001 - LVGeometry or a beat LV
                 lv_myocardium: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """All template vertices in the heart frame, and the landmarks, for one state of the LV.

    ``lv`` gives the LV's base height ``zb``, apices ``apex_epi_z`` and ``zc - c`` and epicardial
    radius ``epi_radius(phi, z)`` (an :class:`LVGeometry`, or the physiological beat's LV of
    :mod:`sono3d.phantoms.heart_motion`); ``activation`` runs from 0 (end-diastole) to 1
    (end-systole) and drives the atria and the RV; ``k_r`` is the radial factor of the LV base
    (the annuli shrink with it). ``lv_myocardium`` replaces the LV cup's points (default: the
    truncated ellipsoids of ``lv``).
    """
    ed = lv_ed_geometry(s)
    dz = lv.zb
    atrial = 1.25 ** (activation / 3)  # atria fill during systole
    rv_t = 1.0 - s.rv_ef * activation  # first guess, refined below
    rv_h = 1.0 - 0.1 * activation
    annulus = 0.5 * (1 + k_r)
    topo_ranges = heart_topology().point_ranges
    pts: dict[str, np.ndarray] = {}
    if lv_myocardium is None:
        lv_myocardium = np.concatenate([_cup_points(lv.A, lv.B, lv.C, lv.zc, lv.zb),
                                        _cup_points(lv.a, lv.b, lv.c, lv.zc, lv.zb)])
    pts["lv_myocardium"] = lv_myocardium
    # RV crescent (blood pool) and its wall.
    w = np.deg2rad(s.rv_wrap_deg)
    T = 24.0 * s.rv_size
    z_lo, z_hi = _rv_extent(lv, rv_h)
    if activation > 0:
        # RV thickness that empties the RV by rv_ef (volume is nearly linear in it: a few secant steps).
        lo_ed, hi_ed = _rv_extent(ed, 1.0)
        target = (1.0 - s.rv_ef * activation) * _crescent_volume(ed, w, lo_ed, hi_ed, T)
        t_es = T * rv_t
        for _ in range(4):
            t_es *= target / _crescent_volume(lv, w, z_lo, z_hi, t_es)
        T = t_es
    gap_in, gap_out, wall = 1.0, 0.2, s.rv_wall_mm
    pts["rv_inner"] = _crescent(_RES["rv"], lv, w, z_lo, z_hi, T, gap_in)
    pts["rv_outer"] = _crescent(_RES["rv"], lv, w + np.deg2rad(6.0), z_lo - wall, z_hi + 1.5, T + (gap_in - gap_out) + wall,
                                gap_out)
    # Base-plane landmarks (ED geometry, descending with the base).
    rb_x = ed.a * np.sqrt(max(1 - s.lv_base_fraction ** 2, 0.0))
    rb_y = ed.b * np.sqrt(max(1 - s.lv_base_fraction ** 2, 0.0))
    up = np.array([0.0, 0.0, 1.0])
    mitral = np.array([-0.25 * rb_x, -0.15 * rb_y, 1.0 + dz])
    r_mv = 0.62 * rb_x * annulus
    phi_ao = np.deg2rad(55.0)
    aortic = np.array([0.9 * rb_x * np.cos(phi_ao), 0.9 * rb_y * np.sin(phi_ao), 4.0 + dz])
    ao_dir = np.array([0.35, 0.1, 1.0])
    r_ao = s.aorta_diameter_mm / 2
    # Tricuspid: on top of the RV cavity, on the septal-lateral line (phi = 0).
    z_tv = z_hi - 2.0
    rho_tv = float(lv.epi_radius(np.array(0.0), np.array(z_tv))) + gap_in + 0.5 * T
    tricuspid = np.array([rho_tv, 0.0, z_tv + 3.0])
    r_tv = 0.45 * 24.0 * s.rv_size * annulus + 3.0
    phi_pv = np.deg2rad(80.0)
    rho_pv = ed.B + 24.0 * s.rv_size * 0.6 + 4.0
    pulmonary = np.array([rho_pv * np.cos(phi_pv), rho_pv * np.sin(phi_pv), 12.0 + dz])
    pa_dir = np.array([-0.35, -0.15, 1.0])
    r_pa = s.pa_diameter_mm / 2
    art_wall = 2.0
    art_len = 46.0
    pts["aorta_outer"] = _superquadric(_RES["artery"], aortic + (art_len / 2 - 2) * ao_dir / np.linalg.norm(ao_dir),
                                       ao_dir, (r_ao + art_wall, r_ao + art_wall), art_len / 2, 0.25)
    pts["aorta_inner"] = _superquadric(_RES["artery"], aortic + (art_len / 2 - 2) * ao_dir / np.linalg.norm(ao_dir),
                                       ao_dir, (r_ao, r_ao), art_len / 2 - art_wall, 0.25)
    pa_c = pulmonary + (art_len / 2 - 2) * pa_dir / np.linalg.norm(pa_dir)
    pts["pa_outer"] = _superquadric(_RES["artery"], pa_c, pa_dir, (r_pa + art_wall, r_pa + art_wall), art_len / 2, 0.25)
    pts["pa_inner"] = _superquadric(_RES["artery"], pa_c, pa_dir, (r_pa, r_pa), art_len / 2 - art_wall, 0.25)
    # Atria (blood pool radii; walls 2 mm) sit on the base plane.
    a_wall = 2.0
    la_r = s.la_diameter_mm / 2 * atrial
    la_rad = np.array([1.0 * la_r, 0.85 * la_r, 1.2 * la_r])  # taller than wide, as in A4C
    la_c = np.array([mitral[0] - 2.0, mitral[1] - 5.0, dz + 1.5 + a_wall + la_rad[2]])
    ra_r = s.ra_diameter_mm / 2 * atrial
    ra_rad = np.array([0.95 * ra_r, 0.85 * ra_r, 1.15 * ra_r])
    ra_x = max(tricuspid[0], la_c[0] + la_rad[0] + ra_rad[0] + 2 * a_wall + 3.0)
    ra_c = np.array([ra_x, -0.25 * ra_r, dz + 1.5 + a_wall + ra_rad[2]])
    pts["la_outer"] = _ellipsoid(_RES["atrium"], la_c, tuple(la_rad + a_wall))
    pts["la_inner"] = _ellipsoid(_RES["atrium"], la_c, tuple(la_rad))
    pts["ra_outer"] = _ellipsoid(_RES["atrium"], ra_c, tuple(ra_rad + a_wall))
    pts["ra_inner"] = _ellipsoid(_RES["atrium"], ra_c, tuple(ra_rad))
    # Valves: thin discs (2 mm) in their annuli.
    pts["mitral_valve"] = _superquadric(_RES["valve"], mitral, up, (r_mv, r_mv), 1.0, 0.3)
    pts["tricuspid_valve"] = _superquadric(_RES["valve"], tricuspid, up, (r_tv, r_tv), 1.0, 0.3)
    pts["aortic_valve"] = _superquadric(_RES["valve"], aortic, ao_dir, (r_ao + art_wall, r_ao + art_wall), 1.0, 0.3)
    pts["pulmonary_valve"] = _superquadric(_RES["valve"], pulmonary, pa_dir, (r_pa + art_wall, r_pa + art_wall),
                                           1.0, 0.3)
    # LA appendage, pulmonary veins, caval veins.
    laa_dir = np.array([-0.75, 0.6, 0.25])
    laa_dir /= np.linalg.norm(laa_dir)
    pts["la_appendage"] = _superquadric(_RES["small"], la_c + laa_dir * (la_rad[0] * 0.95 + 6.0), laa_dir,
                                        (6.0, 4.5), 11.0, 1.0)
    for name, sx, sz in (("pv_left_superior", -1, 1), ("pv_left_inferior", -1, -1),
                         ("pv_right_superior", 1, 1), ("pv_right_inferior", 1, -1)):
        d = np.array([0.55 * sx, -0.75, 0.35 * sz])
        d /= np.linalg.norm(d)
        reach = float(np.linalg.norm(la_rad * d))
        pts[name] = _superquadric(_RES["small"], la_c + d * (reach + 6.0), d, (5.5, 5.5), 9.0, 0.3)
    pts["svc"] = _superquadric(_RES["small"], ra_c + np.array([0.0, -0.1 * ra_r, ra_rad[2] + 14.0]), up,
                               (9.0, 9.0), 16.0, 0.3)
    ivc_dir = np.array([0.0, -1.0, -0.6])
    ivc_dir /= np.linalg.norm(ivc_dir)
    pts["ivc"] = _superquadric(_RES["small"], ra_c + ivc_dir * (float(np.linalg.norm(ra_rad * ivc_dir)) + 10.0),
                               ivc_dir, (11.0, 11.0), 13.0, 0.3)
    out = np.empty((topo_ranges[-1][1], 3))
    for spec, (a, b) in zip(PARTS, topo_ranges):
        p = pts[spec.name]
        if p.shape != (b - a, 3):  # pragma: no cover - template bookkeeping
            raise AssertionError(f"{spec.name}: {p.shape} points, template expects {b - a}")
        out[a:b] = p
    landmarks = {
        "apex": np.array([0.0, 0.0, lv.apex_endo_z]),
        "apex_epi": np.array([0.0, 0.0, lv.apex_epi_z]),
        "lv_base": np.array([0.0, 0.0, lv.zb]),
        "mitral": mitral,
        "tricuspid": tricuspid,
        "aortic": aortic,
        "pulmonary": pulmonary,
    }
    return out, landmarks


def build_heart_phase(shape: HeartShape, placement: Placement | None = None, phase: str = "ed",
                      dtype: type = np.float32) -> HeartPhase:
    """Vertices and landmarks of one phase, placed in the torso frame.

    The points are rounded to ``dtype`` (float32 by default, as written to disk) before the LV
    volume is measured, so that a volume recomputed from the written file agrees exactly.
    """
    p, lm = phase_points(shape, phase)
    return placed_phase(p, lm, placement, dtype)


def placed_phase(p: np.ndarray, lm: dict[str, np.ndarray], placement: Placement | None,
                 dtype: type = np.float32) -> HeartPhase:
    """Heart-frame vertices and landmarks placed in the torso frame (see :func:`build_heart_phase`)."""
    placement = placement or Placement()
    M = placement.matrix()
    world = (p @ M[:3, :3].T + M[:3, 3]).astype(dtype).astype(np.float64)
    marks = {k: v @ M[:3, :3].T + M[:3, 3] for k, v in lm.items()}
    axis = M[:3, :3] @ np.array([0.0, 0.0, 1.0])
    marks["lv_axis"] = axis / np.linalg.norm(axis)
    vol = signed_volume_triangles(world, heart_topology().lv_cavity_faces)
    return HeartPhase(world, marks, float(vol))


def heart_phases(shape: HeartShape, placement: Placement | None = None) -> dict[str, HeartPhase]:
    """Both phases: ``{"ed": ..., "es": ...}``."""
    return {ph: build_heart_phase(shape, placement, ph) for ph in PHASES}


def with_ef(shape: HeartShape, ef: float) -> HeartShape:
    """The same heart with another ejection fraction (shortening follows as in :func:`sample_shape`)."""
    return replace(shape, ef=ef, long_shortening=float(np.clip(0.06 + 0.14 * (ef - 0.2) / 0.55, 0.0, 0.3)))


# --------------------------------------------------------------------------------------------
# Meshes
# --------------------------------------------------------------------------------------------

def heart_mesh(points: np.ndarray):  # noqa: ANN201 - pyvista.PolyData
    """The labelled heart surface of one phase: ``elemTag`` and ``part`` as cell and point arrays.

    ``part`` indexes :data:`PARTS` (its names are also stored as the field array ``part_names``);
    the point array ``lv_endocardium`` marks the LV endocardial vertices, and the field array
    ``lv_cavity_faces`` holds the closed LV cavity's triangles in this mesh's vertex indices, so a
    deformed copy of the template still yields its cavity (:func:`lv_cavity_from_heart`).
    """
    import pyvista as pv

    topo = heart_topology()
    pts = np.asarray(points, dtype=np.float32)
    if pts.shape != (topo.n_points, 3):
        raise InputError(f"heart points must have shape [{topo.n_points}, 3], got {pts.shape}")
    faces = np.hstack([np.full((len(topo.faces), 1), 3), topo.faces]).ravel()
    mesh = pv.PolyData(pts, faces)
    mesh.cell_data["elemTag"] = topo.elem_tag_of_face
    mesh.cell_data["part"] = topo.part_of_face
    mesh.point_data["elemTag"] = topo.elem_tag_of_point
    mesh.point_data["part"] = topo.part_of_point
    endo = np.zeros(topo.n_points, dtype=np.uint8)
    endo[topo.lv_endo_points] = 1
    mesh.point_data["lv_endocardium"] = endo
    mesh.field_data["part_names"] = np.array([p.name for p in PARTS])
    mesh.field_data["lv_cavity_faces"] = topo.lv_cavity_faces.astype(np.int32)
    return mesh


def lv_cavity_mesh(points: np.ndarray):  # noqa: ANN201 - pyvista.PolyData
    """The closed LV blood pool (endocardium capped by the base plane), outward oriented.

    Its vertices are the heart's LV endocardial vertices in the template order; the point array
    ``heart_index`` gives each one's index in :func:`heart_mesh`.
    """
    import pyvista as pv

    topo = heart_topology()
    idx = topo.lv_endo_points
    remap = np.full(topo.n_points, -1, dtype=np.int64)
    remap[idx] = np.arange(len(idx))
    f = remap[topo.lv_cavity_faces]
    pts = np.asarray(points, dtype=np.float32)[idx]
    mesh = pv.PolyData(pts, np.hstack([np.full((len(f), 1), 3), f]).ravel())
    mesh.point_data["heart_index"] = idx.astype(np.int32)
    return mesh


def lv_cavity_from_heart(mesh):  # noqa: ANN001, ANN201
    """The closed LV cavity of a heart surface that carries the template's ``lv_cavity_faces``.

    Works for any mesh in the template's vertex order (a generated case, or the template deformed by
    a correspondence or a network). Raises :class:`InputError` for other meshes.
    """
    if "lv_cavity_faces" not in mesh.field_data:
        raise InputError("mesh does not carry the template's LV cavity (no 'lv_cavity_faces' field array)")
    import pyvista as pv

    f = np.asarray(mesh.field_data["lv_cavity_faces"], dtype=np.int64).reshape(-1, 3)
    if f.size == 0 or f.max() >= mesh.n_points:
        raise InputError("the mesh's 'lv_cavity_faces' refer to vertices it does not have")
    used = np.unique(f)
    remap = np.full(mesh.n_points, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    out = pv.PolyData(np.asarray(mesh.points)[used], np.hstack([np.full((len(f), 1), 3), remap[f]]).ravel())
    out.point_data["heart_index"] = used.astype(np.int32)
    return out
