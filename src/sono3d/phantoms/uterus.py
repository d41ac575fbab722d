"""A parametric female pelvic phantom: uterus (fundus, corpus, isthmus, cervix), endometrium, an
optional fibroid, and ovaries with follicles, built from analytic implicit shapes.

Anatomy frame: the uterus is laid out along its own axes ``u`` (external os to fundus), ``v``
(patient's right) and ``w`` (anterior), then tilted forward by the anteversion angle about the
right-left axis and placed with its mid-length point at the RAS origin. A transvaginal probe enters
along the vaginal axis (superior and posterior from the introitus) and its tip rests just below the
external os; :attr:`Phantom.landmarks` records the tip and the point the probe aims at.

Outputs (see :class:`Phantom`): the sweep paper's label volume (exterior 0, interior 0.5, border
1), a per-structure integer label map, a B-mode-like echogenicity volume, and a labelled surface.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.mesh import signed_volume_triangles, triangles
from sono3d.geometry.transforms import rot_x, rot_y
from sono3d.phantoms.shapes import (
    Ellipsoid,
    Grid,
    Structure,
    ellipsoid_structure,
    evaluate,
    shell_labels,
    union,
)
from sono3d.types import Volume

__all__ = ["UterusParams", "Phantom", "LABELS", "ECHOGENICITY", "build_uterus", "build_label_phantom",
           "surface_mesh"]

# Integer labels of the structure map (and of the mesh's ``labels`` cell array).
LABELS: dict[str, int] = {
    "background": 0,
    "myometrium": 1,
    "cervix": 2,
    "endometrium": 3,
    "fibroid": 4,
    "ovary_left": 5,
    "ovary_right": 6,
    "follicle": 7,
}

# Mean echogenicity (0 anechoic .. 1 bright) per structure, as grey levels of a B-mode image are
# ordered in gynaecological scans: fluid-filled follicles black, fibroids hypoechoic relative to
# myometrium, a secretory endometrium bright.
ECHOGENICITY: dict[str, float] = {
    "background": 0.22,
    "myometrium": 0.50,
    "cervix": 0.58,
    "endometrium": 1.00,
    "fibroid": 0.30,
    "ovary_left": 0.40,
    "ovary_right": 0.40,
    "follicle": 0.02,
}

# Plausible adult ranges (mm, degrees) that UterusParams.sample draws from uniformly.
_RANGES: dict[str, tuple[float, float]] = {
    "length_mm": (75.0, 80.0),
    "width_mm": (45.0, 50.0),
    "ap_mm": (30.0, 35.0),
    "cervix_length_mm": (25.0, 30.0),
    "cervix_width_mm": (24.0, 29.0),
    "cervix_ap_mm": (21.0, 26.0),
    "isthmus_blend_mm": (6.0, 10.0),
    "anteversion_deg": (25.0, 50.0),
    "flexion_deg": (0.0, 20.0),
    "lateral_tilt_deg": (-8.0, 8.0),
    "endometrium_thickness_mm": (5.0, 11.0),
    "ovary_length_mm": (25.0, 35.0),
    "ovary_width_mm": (15.0, 21.0),
    "ovary_thickness_mm": (10.0, 15.0),
    "ovary_gap_mm": (4.0, 10.0),
    "vagina_tilt_deg": (20.0, 35.0),
    "probe_offset_mm": (8.0, 14.0),
}


@dataclass(frozen=True)
class UterusParams:
    """Shape of the pelvic phantom (mm and degrees). Defaults are mid-range; :meth:`sample` draws by seed.

    ``fibroid`` is ``(radius_mm, position_along_corpus 0..1, angle_deg about the long axis from
    anterior towards right, radial_fraction 0..1 of the corpus radius)`` or ``None``. Each follicle is
    ``(side -1 left / +1 right, u, v, w, radius_mm)`` with ``(u, v, w)`` in the ovary's own frame (mm).
    """

    length_mm: float = 77.5
    width_mm: float = 47.5
    ap_mm: float = 32.5
    cervix_length_mm: float = 27.5
    cervix_width_mm: float = 26.0
    cervix_ap_mm: float = 23.0
    isthmus_blend_mm: float = 8.0
    anteversion_deg: float = 40.0
    flexion_deg: float = 10.0
    lateral_tilt_deg: float = 0.0
    endometrium_thickness_mm: float = 8.0
    fibroid: tuple[float, float, float, float] | None = None
    ovary_length_mm: float = 30.0
    ovary_width_mm: float = 18.0
    ovary_thickness_mm: float = 12.5
    ovary_gap_mm: float = 7.0
    follicles: tuple[tuple[float, float, float, float, float], ...] = ()
    vagina_tilt_deg: float = 28.0
    probe_offset_mm: float = 11.0
    ovaries: bool = True

    def __post_init__(self) -> None:
        for name in ("length_mm", "width_mm", "ap_mm", "cervix_length_mm", "cervix_width_mm", "cervix_ap_mm",
                     "endometrium_thickness_mm", "ovary_length_mm", "ovary_width_mm", "ovary_thickness_mm"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"uterus parameter {name} must be positive, got {v}")
        if self.cervix_length_mm >= 0.8 * self.length_mm:
            raise InputError("the cervix must be shorter than 80% of the uterus")
        if self.endometrium_thickness_mm >= 0.6 * self.ap_mm:
            raise InputError("the endometrium must be thinner than 60% of the uterine AP diameter")

    @classmethod
    def sample(cls, seed: int | None = 0, fibroid_probability: float = 0.5) -> "UterusParams":
        """Parameters drawn uniformly within plausible adult ranges, reproducibly from ``seed``."""
        rng = np.random.default_rng(seed)
        values = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in _RANGES.items()}
        fibroid = None
        if rng.random() < fibroid_probability:
            fibroid = (float(rng.uniform(6.0, 14.0)), float(rng.uniform(0.3, 0.8)),
                       float(rng.uniform(0.0, 360.0)), float(rng.uniform(0.45, 0.95)))
        values["fibroid"] = fibroid
        radii = (values["ovary_length_mm"] / 2, values["ovary_width_mm"] / 2, values["ovary_thickness_mm"] / 2)
        values["follicles"] = _sample_follicles(rng, radii)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["fibroid"] = None if self.fibroid is None else list(self.fibroid)
        d["follicles"] = [list(f) for f in self.follicles]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UterusParams":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown uterus parameters: {', '.join(sorted(unknown))}")
        d = dict(d)
        if d.get("fibroid") is not None:
            d["fibroid"] = tuple(float(v) for v in d["fibroid"])
        d["follicles"] = tuple(tuple(float(v) for v in f) for f in d.get("follicles", ()))
        return cls(**d)


def _sample_follicles(rng: np.random.Generator, radii: tuple[float, float, float]
                      ) -> tuple[tuple[float, float, float, float, float], ...]:
    """3-8 non-overlapping follicles per ovary, inside it with a 1 mm rim of stroma."""
    out: list[tuple[float, float, float, float, float]] = []
    for side in (-1.0, 1.0):
        placed: list[tuple[np.ndarray, float]] = []
        for _ in range(int(rng.integers(3, 9))):
            r = float(rng.uniform(2.0, 5.0) if rng.random() < 0.85 else rng.uniform(5.0, 8.0))
            room = np.asarray(radii) - r - 1.0
            if np.any(room <= 0):
                continue
            for _try in range(30):
                d = rng.normal(size=3)
                p = d / np.linalg.norm(d) * rng.random() ** (1 / 3) * room
                if all(np.linalg.norm(p - q) > r + rq + 0.5 for q, rq in placed):
                    placed.append((p, r))
                    out.append((side, float(p[0]), float(p[1]), float(p[2]), r))
                    break
    return tuple(out)


@dataclass
class Phantom:
    """A built phantom.

    Attributes
    ----------
    labels : Volume
        The sweep paper's segmentation appearance of the uterus: exterior 0, interior 0.5, border 1
        (float32).
    structures : Volume or None
        Integer label map (uint8), values in :data:`LABELS` (None when not loaded).
    echogenicity : Volume
        Mean echogenicity per structure in [0, 1] (float32), the input of the B-mode model.
    mesh : pyvista.PolyData or None
        Closed surfaces of every structure, world mm, with a ``labels`` cell array.
    params : UterusParams
    landmarks : dict
        World mm: ``probe_tip``, ``probe_axis`` (unit, the vaginal axis, pointing in),
        ``target`` (where the probe aims), ``uterus_axis`` (unit, cervix to fundus), ``external_os``,
        ``fundus``.
    border_mm : float
        Thickness of the border shell of ``labels``.
    echo_background : float
        Echogenicity of the tissue around the structures (B-mode sweeps see it beyond the volume).
    """

    labels: Volume
    structures: Volume | None
    echogenicity: Volume
    mesh: Any
    params: UterusParams
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    border_mm: float = 1.0
    echo_background: float = ECHOGENICITY["background"]

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description (parameters, landmarks, label names, echogenicities)."""
        return {
            "phantom": "uterus",
            "params": self.params.to_dict(),
            "landmarks": {k: [float(x) for x in v] for k, v in self.landmarks.items()},
            "labels": dict(LABELS),
            "echogenicity": dict(ECHOGENICITY),
            "border_mm": float(self.border_mm),
            "spacing_mm": float(self.labels.spacing_mm[0]),
        }


def _uterus_structures(p: UterusParams) -> tuple[dict[str, Structure], dict[str, np.ndarray]]:
    """Every structure's field in RAS mm, and the landmarks."""
    # Local frame columns (u, v, w) -> world: u superior, v right, w anterior before tilting.
    Q0 = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    Q = rot_y(np.deg2rad(p.lateral_tilt_deg)) @ rot_x(-np.deg2rad(p.anteversion_deg)) @ Q0
    L = p.length_mm
    origin = -Q[:, 0] * (L / 2)  # world position of the external os (u = 0)

    def world(u: float, v: float, w: float) -> np.ndarray:
        return origin + Q @ np.array([u, v, w])

    # Cervix: an ellipsoid from the external os up past the internal os.
    cl = p.cervix_length_mm
    cervix = Ellipsoid(tuple(world(0.65 * cl, 0, 0)), (0.65 * cl, p.cervix_width_mm / 2, p.cervix_ap_mm / 2), Q)
    # Corpus and fundus: a larger ellipsoid bent forward (flexion) at the isthmus.
    u0 = 0.6 * cl
    phi = np.deg2rad(p.flexion_deg)
    Qf = Q @ np.array([[np.cos(phi), 0.0, -np.sin(phi)], [0.0, 1.0, 0.0], [np.sin(phi), 0.0, np.cos(phi)]])
    isthmus = world(cl, 0, 0)
    half_corpus = (L - u0) / 2
    corpus_centre = isthmus + Qf[:, 0] * (half_corpus - (cl - u0))
    corpus = Ellipsoid(tuple(corpus_centre), (half_corpus, p.width_mm / 2, p.ap_mm / 2), Qf)
    body = union("uterus_body", LABELS["myometrium"],
                 [ellipsoid_structure("corpus", 1, corpus), ellipsoid_structure("cervix", 2, cervix)],
                 blend_mm=p.isthmus_blend_mm)
    parts: dict[str, Structure] = {}
    if p.fibroid is not None:
        radius, along, angle_deg, radial = p.fibroid
        a = np.deg2rad(angle_deg)
        # Corpus cross-section radius in the fibroid's direction at that position along the axis.
        t = (2 * along - 1) * 0.8
        sec = np.sqrt(max(1 - t * t, 0.0))
        dv, dw = np.sin(a), np.cos(a)
        rad = sec / np.hypot(dv / (p.width_mm / 2), dw / (p.ap_mm / 2))
        centre = corpus_centre + Qf @ np.array([t * half_corpus, radial * rad * dv, radial * rad * dw])
        parts["fibroid"] = ellipsoid_structure("fibroid", LABELS["fibroid"],
                                               Ellipsoid(tuple(centre), (radius, radius, radius)))
        parts["uterus"] = union("uterus", LABELS["myometrium"], [body, parts["fibroid"]])
    else:
        parts["uterus"] = body
    # Endometrium: a flat ellipsoid in the corpus cavity joined to a thin cervical canal.
    endo = Ellipsoid(tuple(corpus_centre + Qf[:, 0] * 0.06 * half_corpus),
                     (0.72 * half_corpus, 0.3 * p.width_mm, p.endometrium_thickness_mm / 2), Qf)
    canal = Ellipsoid(tuple(world(0.5 * cl, 0, 0)), (0.5 * cl, 2.5, 1.5), Q)
    parts["endometrium"] = union("endometrium", LABELS["endometrium"],
                                 [ellipsoid_structure("endometrium", 3, endo),
                                  ellipsoid_structure("canal", 3, canal)], blend_mm=3.0)
    parts["cervix_region"] = ellipsoid_structure("cervix", LABELS["cervix"], cervix)
    if p.ovaries:
        radii = (p.ovary_length_mm / 2, p.ovary_width_mm / 2, p.ovary_thickness_mm / 2)
        for side, name in ((-1.0, "ovary_left"), (1.0, "ovary_right")):
            # Beside the fundus, slightly posterior; long axis along the uterus, thin axis lateral.
            c = world(0.72 * L, side * (p.width_mm / 2 + p.ovary_gap_mm + radii[2]), -0.15 * p.ap_mm)
            Ro = Q @ np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # (u, w, -v) axes
            ov = Ellipsoid(tuple(c), radii, Ro)
            parts[name] = ellipsoid_structure(name, LABELS[name], ov)
            fol = [ellipsoid_structure("follicle", LABELS["follicle"],
                                       Ellipsoid(tuple(c + Ro @ np.array(f[1:4])), (f[4],) * 3))
                   for f in p.follicles if f[0] == side]
            if fol:
                parts[f"follicles_{name.split('_')[1]}"] = union("follicle", LABELS["follicle"], fol)
    # Landmarks: the probe enters along the vaginal axis (superior and posterior) below the os.
    probe_axis = rot_x(np.deg2rad(p.vagina_tilt_deg)) @ np.array([0.0, 0.0, 1.0])
    os_ = origin
    tip = os_ - p.probe_offset_mm * probe_axis
    fundus = corpus_centre + Qf[:, 0] * half_corpus
    target = 0.5 * (os_ + fundus)
    landmarks = {"probe_tip": tip, "probe_axis": probe_axis, "target": target, "uterus_axis": Q[:, 0],
                 "external_os": os_, "fundus": fundus}
    return parts, landmarks


def build_label_phantom(structures: list[Structure], spacing_mm: float, border_mm: float = 1.0,
                        margin_mm: float = 5.0) -> tuple[Volume, Grid, dict[str, tuple]]:
    """The paper's label volume of the union of ``structures`` on a grid that holds them.

    Returns the volume (exterior 0, interior 0.5, border 1), its grid, and each structure's field
    block ``{name: (slices, values)}`` for reuse.
    """
    if not structures:
        raise InputError("a phantom needs at least one structure")
    lo = np.min([s.lo for s in structures], axis=0)
    hi = np.max([s.hi for s in structures], axis=0)
    grid = Grid.around(lo, hi, spacing_mm, margin_mm)
    field = np.full(grid.shape, np.inf, dtype=np.float32)
    blocks = {}
    for s in structures:
        ev = evaluate(s, grid)
        if ev is None:
            continue
        sl, d = ev
        blocks[s.name] = ev
        np.minimum(field[sl], d, out=field[sl])
    t = max(float(border_mm), float(spacing_mm))
    vol = Volume(shell_labels(field, t), grid.affine, meta={"kind": "labels", "border_mm": t})
    return vol, grid, blocks


def build_uterus(params: UterusParams | None = None, *, seed: int | None = 0, spacing_mm: float = 0.5,
                 border_mm: float = 1.0, mesh: bool = True, margin_mm: float = 6.0) -> Phantom:
    """Build the pelvic phantom.

    Parameters
    ----------
    params : UterusParams, optional
        Shape; drawn with :meth:`UterusParams.sample` from ``seed`` when omitted.
    seed : int
        Seed for the parameters (ignored when ``params`` is given).
    spacing_mm : float
        Isotropic voxel size (default 0.5 mm).
    border_mm : float
        Thickness of the border shell in the label volume (at least one voxel).
    mesh : bool
        Also extract the labelled surface mesh.
    margin_mm : float
        Empty space around the structures in the volume.

    Returns
    -------
    Phantom
    """
    if not (np.isfinite(spacing_mm) and spacing_mm > 0):
        raise InputError(f"voxel spacing must be a positive number of mm, got {spacing_mm}")
    if not (np.isfinite(border_mm) and border_mm > 0):
        raise InputError(f"border thickness must be positive, got {border_mm} mm")
    p = params if params is not None else UterusParams.sample(seed)
    parts, landmarks = _uterus_structures(p)
    all_parts = list(parts.values())
    lo = np.min([s.lo for s in all_parts], axis=0)
    hi = np.max([s.hi for s in all_parts], axis=0)
    grid = Grid.around(lo, hi, spacing_mm, margin_mm)
    t = max(float(border_mm), float(spacing_mm))

    lab = np.zeros(grid.shape, dtype=np.uint8)
    blocks: dict[str, tuple] = {}
    # Paint order: ovaries, follicles, uterus (myometrium then cervix), fibroid, endometrium.
    order = ["ovary_left", "follicles_left", "ovary_right", "follicles_right", "uterus", "cervix_region",
             "fibroid", "endometrium"]
    for key in order:
        if key not in parts:
            continue
        ev = evaluate(parts[key], grid)
        if ev is None:
            continue
        blocks[key] = ev
        sl, d = ev
        inside = d <= 0
        if key == "cervix_region":
            # The cervix is the part of the uterus inside the cervix ellipsoid (not the blend region).
            inside &= lab[sl] == LABELS["myometrium"]
        lab[sl][inside] = parts[key].label
    labels = np.zeros(grid.shape, dtype=np.float32)
    sl, d = blocks["uterus"]
    labels[sl] = shell_labels(d, t)
    echo_lut = np.zeros(max(LABELS.values()) + 1, dtype=np.float32)
    for name, v in LABELS.items():
        echo_lut[v] = ECHOGENICITY[name]
    echo = echo_lut[lab]
    aff = grid.affine
    surface = surface_mesh({k: (v, parts[k].label) for k, v in blocks.items() if k != "cervix_region"},
                           grid) if mesh else None
    return Phantom(
        labels=Volume(labels, aff, meta={"kind": "labels", "border_mm": t}),
        structures=Volume(lab, aff, meta={"kind": "structures", "labels": dict(LABELS)}),
        echogenicity=Volume(echo, aff, meta={"kind": "echogenicity"}),
        mesh=surface,
        params=p,
        landmarks=landmarks,
        border_mm=t,
    )


def surface_mesh(blocks: dict[str, tuple[tuple[tuple[slice, slice, slice], np.ndarray], int]], grid: Grid):  # noqa: ANN201
    """Closed zero-level surfaces of field blocks, merged, with a ``labels`` cell array.

    ``blocks`` maps a name to ``((slices, field values), label)``. Triangles are oriented outwards.
    """
    import pyvista as pv

    pieces = []
    for (sl, d), label in blocks.values():
        # Pad with "outside" so that every surface closes even where a box meets the grid edge.
        dd = np.pad(d, 1, mode="constant", constant_values=max(float(d.max()), grid.spacing))
        start = np.array([s.start for s in sl]) - 1
        img = pv.ImageData(dimensions=dd.shape, spacing=(grid.spacing,) * 3,
                           origin=tuple(np.asarray(grid.origin) + start * grid.spacing))
        img.point_data["sdf"] = dd.ravel(order="F")
        surf = img.contour([0.0], scalars="sdf", method="flying_edges")
        if surf.n_points == 0:
            continue
        surf = surf.triangulate().clean()
        if signed_volume_triangles(np.asarray(surf.points), triangles(surf)) < 0:
            surf = surf.flip_faces() if hasattr(surf, "flip_faces") else surf.flip_normals()
        surf.clear_data()
        surf.cell_data["labels"] = np.full(surf.n_cells, label, dtype=np.int32)
        pieces.append(surf)
    if not pieces:
        return pv.PolyData()
    out = pieces[0].merge(pieces[1:], merge_points=False) if len(pieces) > 1 else pieces[0]
    return out if isinstance(out, pv.PolyData) else out.extract_surface()
