"""The six standard echo views of a labelled heart: label images, pseudo-echo images and poses.

Views (the S2MNet paper's Table 1), all from landmarks of the placed heart:

- ``a4c``, ``a2c``, ``a3c``: apical views. The sector apex (probe) sits beyond the LV apex on the
  long axis, the central beam runs along the long axis towards the mitral valve, and the plane is
  turned about the long axis through the tricuspid valve centre (A4C), through the aortic valve
  centre (A3C), or by ``a2c_angle_deg`` from A4C away from the RV (A2C).
- ``sax_basal``, ``sax_mid``, ``sax_apical``: short-axis planes perpendicular to the long axis at
  three fractions of the apex-to-base distance, imaged from a parasternal probe placed anteriorly
  in the plane, the beam aimed at the LV axis.

Each view gets a random opening angle and small random probe perturbations (shift and tilt).
Pixels are square; each view kind has a fixed field of view (mm) so pixel size does not vary
between cases. The views follow the heart over the cycle: each phase's planes come from its own
landmarks with the same random probe perturbations, so a basal plane stays basal when the base
descends in systole (the apical probe hardly moves, as the apex is nearly still).

Label images come from cutting closed surfaces by the plane and filling each cross-section by the
even-odd rule on the pixel grid (scanline crossings counted with one ``bincount``), which works for
any closed triangle mesh, synthetic or real.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.mesh import triangles
from sono3d.geometry.planes import image_to_world_matrix, plane_rigid
from sono3d.geometry.sector import sector_for_probe, sector_mask
from sono3d.geometry.transforms import axis_angle_to_matrix, euler_to_matrix, matrix_to_euler
from sono3d.phantoms.heart import PARTS, VIEW_LABELS, heart_topology
from sono3d.simulate.bmode import pseudo_echo
from sono3d.types import Sector

__all__ = [
    "VIEW_NAMES",
    "ViewOptions",
    "EchoView",
    "ViewLayers",
    "phantom_layers",
    "mesh_layers",
    "slice_segments",
    "fill_even_odd",
    "render_labels",
    "plan_views",
    "simulate_views",
    "tissue_mask",
]

VIEW_NAMES: tuple[str, ...] = ("a4c", "a2c", "a3c", "sax_basal", "sax_mid", "sax_apical")
# First view label of the blood pools (walls, valves and vessels keep elemTag values below it).
BLOOD_LABEL_START = 25


@dataclass(frozen=True)
class ViewOptions:
    """Geometry and appearance of the six views.

    Attributes
    ----------
    size : int
        Image height and width in pixels.
    apical_fov_mm, sax_fov_mm : float
        Image extent (both axes) of apical and short-axis views; pixel size is ``fov / size``.
    apical_depth_mm, sax_depth_mm : float
        Sector depth from the probe.
    opening_deg : (float, float)
        Range of the sector's full opening angle (drawn per view).
    apical_standoff_mm : float
        Probe distance beyond the epicardial apex, along the long axis.
    sax_standoff_mm : float
        Probe distance from the LV axis in short-axis views (anterior chest wall).
    sax_fractions : (float, float, float)
        Basal, mid and apical plane positions as fractions of the apex-to-base distance.
    a2c_angle_deg : float
        A2C plane's rotation about the long axis from A4C, away from the RV.
    probe_shift_mm, probe_tilt_deg, plane_jitter : float
        Uniform random probe translation (each axis), tilt (each axis), and jitter of the SAX
        fractions.
    blur_sigma_px, noise_std : float
        Pseudo-echo blur and additive noise.
    """

    size: int = 128
    apical_fov_mm: float = 200.0
    sax_fov_mm: float = 150.0
    apical_depth_mm: float = 175.0
    sax_depth_mm: float = 135.0
    opening_deg: tuple[float, float] = (70.0, 84.0)
    apical_standoff_mm: float = 12.0
    sax_standoff_mm: float = 70.0
    sax_fractions: tuple[float, float, float] = (0.78, 0.5, 0.25)
    a2c_angle_deg: float = 100.0
    probe_shift_mm: float = 2.0
    probe_tilt_deg: float = 2.0
    plane_jitter: float = 0.02
    blur_sigma_px: float = 1.5
    noise_std: float = 0.08

    def __post_init__(self) -> None:
        if not (isinstance(self.size, (int, np.integer)) and 16 <= self.size <= 2048):
            raise InputError(f"view size must be an integer number of pixels in [16, 2048], got {self.size}")
        lo, hi = self.opening_deg
        if not (0 < lo <= hi < 180):
            raise InputError(f"sector opening angles must satisfy 0 < lo <= hi < 180, got {self.opening_deg}")
        for name in ("apical_fov_mm", "sax_fov_mm", "apical_depth_mm", "sax_depth_mm"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"{name} must be positive, got {v}")


@dataclass(frozen=True)
class EchoView:
    """One view's geometry.

    Attributes
    ----------
    name : str
    image_to_world : ndarray (4, 4)
        Pixel ``(col, row, 0, 1)`` to torso mm; the sector apex is pixel ``((W-1)/2, 0)``.
    sector : Sector
    spacing_mm : (dy, dx)
    probe_mm : ndarray (3,)
        Sector apex in the torso frame.
    """

    name: str
    image_to_world: np.ndarray
    sector: Sector
    spacing_mm: tuple[float, float]
    probe_mm: np.ndarray


@dataclass(frozen=True)
class ViewLayers:
    """Closed surfaces to paint, in order: ``layers[i] = (label, face ids)`` into ``faces``."""

    faces: np.ndarray
    layers: tuple[tuple[int, np.ndarray], ...]
    membership: np.ndarray = field(repr=False)  # [n_layers, F] bool

    @classmethod
    def build(cls, faces: np.ndarray, layers: list[tuple[int, np.ndarray]]) -> "ViewLayers":
        faces = np.asarray(faces, dtype=np.int64)
        member = np.zeros((len(layers), len(faces)), dtype=bool)
        for i, (_, ids) in enumerate(layers):
            member[i, ids] = True
        return cls(faces, tuple((int(v), np.asarray(ids)) for v, ids in layers), member)


@functools.lru_cache(maxsize=1)
def phantom_layers() -> ViewLayers:
    """Paint order of the parametric heart: vessels, great arteries, atria, RV, LV, valves.

    Shells (outer + inner surface) paint the wall; the inner surface alone paints the blood pool.
    """
    topo = heart_topology()
    n = len(topo.faces)
    faces = np.concatenate([topo.faces, topo.lv_cavity_faces])
    idx = {p.name: np.flatnonzero(topo.part_of_face == i) for i, p in enumerate(PARTS)}
    lay: list[tuple[int, np.ndarray]] = []
    for name in ("svc", "ivc", "pv_left_superior", "pv_left_inferior", "pv_right_superior", "pv_right_inferior"):
        lay.append((VIEW_LABELS[name], idx[name]))
    for wall, blood, prefix in (("aorta", "aorta_blood", "aorta"), ("pulmonary_artery", "pa_blood", "pa"),
                                ("la", "la_blood", "la"), ("ra", "ra_blood", "ra"),
                                ("rv_myocardium", "rv_blood", "rv")):
        lay.append((VIEW_LABELS[wall], np.concatenate([idx[f"{prefix}_outer"], idx[f"{prefix}_inner"]])))
        lay.append((VIEW_LABELS[blood], idx[f"{prefix}_inner"]))
        if prefix == "la":
            lay.append((VIEW_LABELS["la_appendage"], idx["la_appendage"]))
    lay.append((VIEW_LABELS["lv_myocardium"], idx["lv_myocardium"]))
    lay.append((VIEW_LABELS["lv_blood"], n + np.arange(len(topo.lv_cavity_faces))))
    for name in ("mitral_valve", "tricuspid_valve", "aortic_valve", "pulmonary_valve"):
        lay.append((VIEW_LABELS[name], idx[name]))
    return ViewLayers.build(faces, lay)


# Paint order of the public cohort's labels when slicing a real labelled mesh.
_TAG_ORDER = (16, 17, 12, 13, 14, 15, 5, 6, 3, 11, 4, 2, 1, 7, 8, 9, 10)


def mesh_layers(mesh, label: str = "elemTag") -> ViewLayers:  # noqa: ANN001 - pyvista.PolyData
    """Layers of a labelled surface: one per label value (its cells), veins first, valves last.

    Each label's cells should form closed surfaces (a wall region's boundary); the even-odd fill
    then paints the wall. Raises :class:`InputError` when the mesh has no cell label array.
    """
    if label not in mesh.cell_data:
        raise InputError(f"mesh has no cell label array '{label}'")
    tri = mesh if mesh.is_all_triangles else mesh.triangulate()
    tags = np.asarray(tri.cell_data[label]).astype(np.int64)
    faces = triangles(tri)
    values = list(np.unique(tags))
    order = [v for v in _TAG_ORDER if v in values] + [v for v in values if v not in _TAG_ORDER and v > 0]
    return ViewLayers.build(faces, [(int(v), np.flatnonzero(tags == v)) for v in order])


def slice_segments(points: np.ndarray, faces: np.ndarray, image_to_world: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Cut triangles by an image plane.

    Returns
    -------
    segments : ndarray [S, 2, 2]
        End points ``(col, row)`` in (fractional) pixels of each cut.
    face_ids : ndarray [S]
        The triangle each segment comes from.
    """
    M = np.asarray(image_to_world, dtype=np.float64)
    A = M[:3, :3]
    # Pixel coordinates and distance: solve p = A @ (c, r, d) + t (A's columns are orthogonal).
    inv = np.linalg.inv(A)
    local = (np.asarray(points, dtype=np.float64) - M[:3, 3]) @ inv.T
    d = local[:, 2]
    pos = d >= 0  # points on the plane count as above it, consistently for every triangle
    f = np.asarray(faces)
    s = pos[f]
    n_pos = s.sum(1)
    cut = np.flatnonzero((n_pos == 1) | (n_pos == 2))
    if cut.size == 0:
        return np.zeros((0, 2, 2)), np.zeros(0, dtype=np.int64)
    fs, ss = f[cut], s[cut]
    # The lone vertex is the one whose side differs from the other two.
    lone = np.where(ss[:, 0] == ss[:, 1], 2, np.where(ss[:, 0] == ss[:, 2], 1, 0))
    rows = np.arange(len(cut))
    i0 = fs[rows, lone]
    i1 = fs[rows, (lone + 1) % 3]
    i2 = fs[rows, (lone + 2) % 3]
    d0, d1, d2 = d[i0], d[i1], d[i2]
    xy = local[:, :2]
    t1 = (d0 / (d0 - d1))[:, None]
    t2 = (d0 / (d0 - d2))[:, None]
    a = xy[i0] + t1 * (xy[i1] - xy[i0])
    b = xy[i0] + t2 * (xy[i2] - xy[i0])
    return np.stack([a, b], 1), cut


def fill_even_odd(segments: np.ndarray, groups: np.ndarray, n_groups: int, shape: tuple[int, int]) -> np.ndarray:
    """Fill closed cross-sections on the pixel grid by the even-odd rule.

    A pixel centre ``(c, r)`` is inside a group when an odd number of that group's segments cross
    row ``r`` to its left. Rows follow the half-open rule so that shared end points count once.

    Parameters
    ----------
    segments : ndarray [S, 2, 2]
        ``(col, row)`` end points in pixels.
    groups : ndarray [S] int
        Group (layer) of each segment.
    shape : (H, W)

    Returns
    -------
    ndarray [n_groups, H, W] bool
    """
    H, W = shape
    if len(segments) == 0:
        return np.zeros((n_groups, H, W), dtype=bool)
    x0, y0 = segments[:, 0, 0], segments[:, 0, 1]
    x1, y1 = segments[:, 1, 0], segments[:, 1, 1]
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    r_lo = np.maximum(np.ceil(ylo), 0).astype(np.int64)
    r_hi = np.minimum(np.ceil(yhi) - 1, H - 1).astype(np.int64)  # rows r with ylo <= r < yhi
    count = np.maximum(r_hi - r_lo + 1, 0)
    total = int(count.sum())
    if total == 0:
        return np.zeros((n_groups, H, W), dtype=bool)
    seg = np.repeat(np.arange(len(segments)), count)
    start = np.cumsum(count) - count
    r = r_lo[seg] + (np.arange(total) - start[seg])
    dy = y1[seg] - y0[seg]
    x = x0[seg] + (r - y0[seg]) * (x1[seg] - x0[seg]) / dy
    k = np.clip(np.floor(x).astype(np.int64) + 1, 0, W)
    # Only the groups present are accumulated; parity survives uint8 wrap-around.
    present, g = np.unique(groups[seg], return_inverse=True)
    flat = (g.astype(np.int64) * H + r) * (W + 1) + k
    acc = np.bincount(flat, minlength=len(present) * H * (W + 1)).astype(np.uint8)
    acc = acc.reshape(len(present), H, W + 1)
    out = np.zeros((n_groups, H, W), dtype=bool)
    out[present] = (np.cumsum(acc, axis=2, dtype=np.uint8)[:, :, :W] & 1).astype(bool)
    return out


def render_labels(points: np.ndarray, layers: ViewLayers, image_to_world: np.ndarray,
                  shape: tuple[int, int], mask: np.ndarray | None = None) -> np.ndarray:
    """Label image ``[H, W]`` uint8 of a plane through a layered surface (later layers on top)."""
    seg, fid = slice_segments(points, layers.faces, image_to_world)
    n = len(layers.layers)
    lay_idx, seg_idx = np.nonzero(layers.membership[:, fid])
    filled = fill_even_odd(seg[seg_idx], lay_idx, n, shape)
    out = np.zeros(shape, dtype=np.uint8)
    for i in np.unique(lay_idx):
        out[filled[i]] = layers.layers[i][0]
    if mask is not None:
        out[~mask] = 0
    return out


def tissue_mask(labels: np.ndarray) -> np.ndarray:
    """Tissue (walls, valves, vessels) as opposed to blood pools and background."""
    lab = np.asarray(labels)
    return (lab > 0) & (lab < BLOOD_LABEL_START)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _view(name: str, probe: np.ndarray, beam: np.ndarray, lateral: np.ndarray, depth: float, fov: float,
          angle: float, rng: np.random.Generator, opt: ViewOptions) -> EchoView:
    """Pose a sector: apex at ``probe``, rows along ``beam``, columns along ``lateral``."""
    beam = _unit(beam)
    lateral = _unit(lateral - beam * (lateral @ beam))
    normal = np.cross(lateral, beam)
    R = np.stack([lateral, beam, normal], 1)
    tilt = euler_to_matrix(*np.deg2rad(rng.uniform(-opt.probe_tilt_deg, opt.probe_tilt_deg, 3)))
    R = R @ tilt  # tilt about the probe's own axes
    probe = probe + rng.uniform(-opt.probe_shift_mm, opt.probe_shift_mm, 3)
    size = opt.size
    px = fov / size
    spacing = (px, px)
    origin = probe - R[:, 0] * px * (size - 1) / 2.0
    M = image_to_world_matrix(R, origin, spacing)
    sector = sector_for_probe((size, size), spacing, angle, depth)
    return EchoView(name, M, sector, spacing, probe)


def plan_views(landmarks: dict[str, np.ndarray], rng: np.random.Generator, options: ViewOptions | None = None
               ) -> list[EchoView]:
    """The six views of :data:`VIEW_NAMES` from a heart's landmarks (torso mm).

    ``landmarks`` needs ``apex``, ``apex_epi``, ``lv_base``, ``mitral``, ``tricuspid``, ``aortic``;
    ``lv_axis`` (apex to base) is derived from ``apex`` and ``lv_base`` when absent.
    """
    opt = options or ViewOptions()
    need = ("apex", "apex_epi", "lv_base", "mitral", "tricuspid", "aortic")
    missing = [k for k in need if k not in landmarks]
    if missing:
        raise InputError(f"landmarks missing for the echo views: {', '.join(missing)}")
    lm = {k: np.asarray(v, dtype=np.float64) for k, v in landmarks.items()}
    u = _unit(lm.get("lv_axis", lm["lv_base"] - lm["apex"]))
    angles = rng.uniform(*opt.opening_deg, size=6)

    def perp(p: np.ndarray) -> np.ndarray:
        v = p - lm["apex"]
        return _unit(v - u * (v @ u))

    probe = lm["apex_epi"] - u * opt.apical_standoff_mm
    e4 = perp(lm["tricuspid"])
    e3 = perp(lm["aortic"])
    # A2C: turn the A4C plane about the long axis, on the side away from the aortic valve (and RV).
    sense = -np.sign(np.cross(e4, e3) @ u) or 1.0
    e2 = axis_angle_to_matrix(u, sense * np.deg2rad(opt.a2c_angle_deg)) @ e4
    views = [
        _view("a4c", probe, u, -e4, opt.apical_depth_mm, opt.apical_fov_mm, angles[0], rng, opt),
        _view("a2c", probe, u, -e2, opt.apical_depth_mm, opt.apical_fov_mm, angles[1], rng, opt),
        _view("a3c", probe, u, -e3, opt.apical_depth_mm, opt.apical_fov_mm, angles[2], rng, opt),
    ]
    length = float((lm["lv_base"] - lm["apex"]) @ u)
    anterior = np.array([0.0, 1.0, 0.0])
    ant = _unit(anterior - u * (anterior @ u))
    for i, (name, frac) in enumerate(zip(VIEW_NAMES[3:], opt.sax_fractions)):
        frac = frac + rng.uniform(-opt.plane_jitter, opt.plane_jitter)
        centre = lm["apex"] + u * (frac * length)
        p = centre + ant * opt.sax_standoff_mm
        lateral = np.cross(-ant, u)  # columns x rows = u: the normal points to the base
        views.append(_view(name, p, -ant, lateral, opt.sax_depth_mm, opt.sax_fov_mm, angles[3 + i], rng, opt))
    return views


def simulate_views(points_by_phase: list[np.ndarray], landmarks: dict[str, np.ndarray] | list[dict[str, np.ndarray]],
                   rng: np.random.Generator, options: ViewOptions | None = None, layers: ViewLayers | None = None
                   ) -> dict[str, np.ndarray]:
    """Label images, pseudo-echo images and poses of the six views for each phase.

    Parameters
    ----------
    points_by_phase : list of ndarray [V, 3]
        Vertices of each phase (same topology), torso mm.
    landmarks : dict or list of dict
        Landmarks that place the views: one dict per phase (the views follow the heart, so the
        basal plane stays basal when the base descends in systole), or one dict for every phase
        (a probe that stays put). The random probe perturbations are the same in every phase.
    rng : Generator
        Draws the probe perturbations and the pseudo-echo noise.
    layers : ViewLayers, optional
        What to paint; the parametric heart's layers by default.

    Returns
    -------
    dict with ``labels`` uint8 [P, 6, H, W], ``echo`` float32 [P, 6, H, W], ``poses`` float64
    [P, 6, 4, 4] (image_to_world), ``euler_deg`` [P, 6, 3] (``theta_x, theta_y, theta_z`` of the
    plane's rotation, ``R = Rz Ry Rx``; columns lateral, beam, normal), ``probe_mm`` [P, 6, 3]
    (sector apex), ``opening_deg`` [6], ``depth_mm`` [6],
    ``spacing_mm`` [6], ``view_names`` [6] str.
    """
    opt = options or ViewOptions()
    layers = layers or phantom_layers()
    P = len(points_by_phase)
    marks = [landmarks] * P if isinstance(landmarks, dict) else list(landmarks)
    if len(marks) != P:
        raise InputError(f"{P} phases of points but {len(marks)} sets of landmarks")
    view_seed = int(rng.integers(2**63))
    views = [plan_views(m, np.random.default_rng(view_seed), opt) for m in marks]
    H = W = opt.size
    labels = np.zeros((P, 6, H, W), dtype=np.uint8)
    # the sector (angle, depth, spacing) is the same in every phase
    masks = [sector_mask(v.sector, (H, W), v.spacing_mm) for v in views[0]]
    for p, pts in enumerate(points_by_phase):
        for j, v in enumerate(views[p]):
            labels[p, j] = render_labels(pts, layers, v.image_to_world, (H, W), masks[j])
    echo = np.zeros((P, 6, H, W), dtype=np.float32)
    for j in range(6):
        echo[:, j] = pseudo_echo(tissue_mask(labels[:, j]).astype(np.uint8), masks[j], opt.blur_sigma_px,
                                 opt.noise_std, rng)
    poses = np.stack([np.stack([v.image_to_world for v in vs]) for vs in views])
    rigid = plane_rigid(poses)
    euler = np.array([[np.rad2deg(matrix_to_euler(r[:3, :3])) for r in ph] for ph in rigid])
    return {
        "labels": labels,
        "echo": echo,
        "poses": poses,
        "euler_deg": euler,
        "probe_mm": np.stack([np.stack([v.probe_mm for v in vs]) for vs in views]),
        "opening_deg": np.array([v.sector.angle_deg for v in views[0]]),
        "depth_mm": np.array([v.sector.radius_mm[1] for v in views[0]]),
        "spacing_mm": np.array([v.spacing_mm[0] for v in views[0]]),
        "view_names": np.array(VIEW_NAMES),
    }
