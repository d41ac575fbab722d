"""A physiological heartbeat for the parametric heart: shortening, thickening, twist, a volume curve.

The affine beat of :mod:`sono3d.phantoms.heart` contracts the LV by one linear map, so its GLS is
tied to its EF and the wall never twists. This beat moves the same template vertices (the same
end-diastole) by a non-linear map of the LV wall in cylindrical coordinates ``(r, phi, z)`` about the
long axis (heart frame, mm; ``h = (z - z_apex) / (z_base - z_apex)`` the ED height from the epicardial
apex, 0 to 1). At activation ``a`` (0 at end-diastole, 1 at end-systole):

* **longitudinal shortening towards a nearly fixed apex**: ``z' = z_apex + a s + k_l(a) (z - z_apex)``
  with ``k_l(a) = 1 - a (1 - k_l)``; the epicardial apex moves ``a s`` (``s`` = ``apex_shift_mm``, up
  to 2 mm) towards the base while the base descends by ``(1 - k_l(a)) (z_base - z_apex) - a s``;
* **radial motion of the endocardium**: ``r' = k_r(h, a) r`` with the end-systolic factor
  ``k_r0 (1 + g (1/2 - h))`` (``g`` = ``radial_gradient``: the apex moves in more or less than the base),
  blended linearly with 1 by ``a``;
* **twist**: every slab turns about the long axis by ``psi(h) = a theta (-rho (1 - h) + (1 - rho) h)``
  (radians, right-handed about ``+z``): the apex turns counter-clockwise and the base clockwise when
  seen from the apex, by ``theta`` = ``twist_deg`` between them, a share ``rho`` at the apex;
* **wall thickening with the myocardial volume kept**: the epicardial point at ``(r_e, phi, z)`` moves
  to the same ``z'`` and angle, at ``r_e'`` with ``r_e'² - r_i'² = (r_e² - r_i²) / k_l(a)``, where
  ``r_i`` is the ED endocardial radius at that angle and height and ``r_i' = k_r r_i`` its new value.
  Each slab's wall area (``½ (r_e² - r_i²) dphi`` per direction) times its height (``k_l dz``) is
  unchanged, so the myocardium is incompressible slab by slab (the meshes keep its volume within
  a fraction of a percent). Below the endocardial apex (``r_i = 0``) the apical cap thickens as a
  solid.

``k_l`` and ``k_r0`` are solved (Newton's method on the meshes themselves) so that the end-systolic
LV cavity has the case's EF and the endocardium its target GLS
(:func:`sono3d.phantoms.lv_grid.global_longitudinal_strain_pct`), so EF and GLS are set apart: GLS is
drawn around an EF-dependent mean with its own spread (:func:`sample_beat`).

The rest of the heart follows the LV as in the affine beat (atria and valves descend with the base,
the RV crescent hugs the moving epicardium and empties by ``rv_ef``), with ``a`` as the activation.

A cycle (:func:`beat_times`, :func:`activation`): systole from ED (``t = 0``) to ES at
``t = systole_fraction`` (``a`` rises as a half cosine), then diastole: early (rapid) filling
returns three quarters of the stroke in the first 40% of diastole, diastasis, and the atrial kick
the last quarter in its final 25%.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.mesh import signed_volume_triangles
from sono3d.phantoms.heart import (
    HeartPhase,
    HeartShape,
    LVGeometry,
    Placement,
    heart_points,
    heart_topology,
    lv_ed_geometry,
    phase_points,
    placed_phase,
)
from sono3d.phantoms.lv_grid import global_longitudinal_strain_pct

__all__ = [
    "MOTIONS",
    "BeatParams",
    "Beat",
    "sample_beat",
    "solve_beat",
    "activation",
    "beat_times",
    "physiological_beat",
    "myocardial_volume_mm3",
]

MOTIONS = ("affine", "physiological")


@dataclass(frozen=True)
class BeatParams:
    """Per-case parameters of the physiological beat.

    Attributes
    ----------
    gls_pct : target global longitudinal strain at ES (percent, negative).
    twist_deg : apical-basal twist at ES (degrees).
    apex_rotation_share : share of the twist carried by the apex (the base turns the rest the other way).
    apex_shift_mm : how far the epicardial apex moves towards the base at ES (mm).
    radial_gradient : ``g`` of the endocardial radial factor ``k_r0 (1 + g (1/2 - h))``.
    systole_fraction : ES time as a fraction of the cycle.
    """

    gls_pct: float = -19.0
    twist_deg: float = 14.0
    apex_rotation_share: float = 0.7
    apex_shift_mm: float = 1.0
    radial_gradient: float = 0.0
    systole_fraction: float = 0.35

    def __post_init__(self) -> None:
        for f in fields(self):
            if not np.isfinite(getattr(self, f.name)):
                raise InputError(f"beat parameter {f.name} must be finite")
        if not -40.0 < self.gls_pct < 0.0:
            raise InputError(f"target GLS must lie in (-40, 0) percent, got {self.gls_pct}")
        if not 0.0 <= abs(self.twist_deg) <= 45.0:
            raise InputError(f"twist must lie within ±45 degrees, got {self.twist_deg}")
        if not 0.0 <= self.apex_rotation_share <= 1.0:
            raise InputError(f"apex_rotation_share must lie in [0, 1], got {self.apex_rotation_share}")
        if not 0.0 <= self.apex_shift_mm <= 10.0:
            raise InputError(f"apex_shift_mm must lie in [0, 10], got {self.apex_shift_mm}")
        if not -0.5 <= self.radial_gradient <= 0.5:
            raise InputError(f"radial_gradient must lie in [-0.5, 0.5], got {self.radial_gradient}")
        if not 0.15 <= self.systole_fraction <= 0.6:
            raise InputError(f"systole_fraction must lie in [0.15, 0.6], got {self.systole_fraction}")

    def to_dict(self) -> dict[str, float]:
        """Manifest columns (prefixed ``beat_``; the GLS is the target, ``gls_pct`` the measured one)."""
        d = {k: float(v) for k, v in asdict(self).items()}
        d["gls_target_pct"] = d.pop("gls_pct")
        return {f"beat_{k}": v for k, v in d.items()}


def gls_mean_pct(ef: float) -> float:
    """Mean GLS (percent) of the cohort at ejection fraction ``ef`` (fraction): -9.8 at 0.2, -23 at 0.75."""
    return -(5.0 + 24.0 * ef)


def sample_beat(rng: np.random.Generator, shape: HeartShape) -> BeatParams:
    """Draw a case's beat: GLS = :func:`gls_mean_pct` ± 3.5 points (uniform), twist growing with EF.

    Over the cohort's EF range (0.20 to 0.75) the GLS spans about -6.3 % to -26.5 %; at a given EF it
    still spreads over 7 points, so EF and GLS vary partly independently (Pearson about -0.85).
    """
    gls = gls_mean_pct(shape.ef) + rng.uniform(-3.5, 3.5)
    twist = 4.0 + 16.0 * (shape.ef - 0.2) / 0.55 + rng.uniform(-3.0, 3.0)
    return BeatParams(gls_pct=float(gls), twist_deg=float(max(twist, 0.0)),
                      apex_rotation_share=float(rng.uniform(0.6, 0.8)), apex_shift_mm=float(rng.uniform(0.0, 2.0)),
                      radial_gradient=float(rng.uniform(-0.1, 0.1)), systole_fraction=float(rng.uniform(0.30, 0.40)))


# --------------------------------------------------------------------------------------------
# The LV at one activation
# --------------------------------------------------------------------------------------------

def _endo_radius(ed: LVGeometry, phi: np.ndarray, z: np.ndarray) -> np.ndarray:
    """ED endocardial distance from the long axis at angle ``phi`` and height ``z`` (0 beyond the apex)."""
    u = (np.asarray(z, dtype=np.float64) - ed.zc) / ed.c
    s = np.sqrt(np.clip(1.0 - u * u, 0.0, None))
    return s / np.sqrt((np.cos(phi) / ed.a) ** 2 + (np.sin(phi) / ed.b) ** 2)


@dataclass(frozen=True)
class _BeatLV:
    """The LV at one activation: the interface :func:`sono3d.phantoms.heart.heart_points` needs
    (``zb``, ``apex_epi_z``, ``apex_endo_z``, ``epi_radius``) and the moved myocardium."""

    ed: LVGeometry
    k_l: float  # longitudinal factor at this activation
    k_r0: float  # endocardial radial factor at mid-height (h = 1/2), this activation
    gradient: float  # g, scaled by the activation
    psi_apex: float  # rotation (rad) of the apex slab (h = 0)
    psi_base: float  # rotation of the base slab (h = 1)
    z0: float  # epicardial apex height at this activation

    @property
    def _z0_ed(self) -> float:
        return self.ed.apex_epi_z

    @property
    def _height(self) -> float:
        return self.ed.zb - self._z0_ed

    def h(self, z_ed: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(z_ed) - self._z0_ed) / self._height, 0.0, 1.0)

    def k_r(self, h: np.ndarray) -> np.ndarray:
        return self.k_r0 * (1.0 + self.gradient * (0.5 - h))

    def psi(self, h: np.ndarray) -> np.ndarray:
        return self.psi_apex + (self.psi_base - self.psi_apex) * h

    def z_new(self, z_ed: np.ndarray) -> np.ndarray:
        return self.z0 + self.k_l * (np.asarray(z_ed) - self._z0_ed)

    @property
    def zb(self) -> float:
        return float(self.z_new(self.ed.zb))

    @property
    def apex_epi_z(self) -> float:
        return float(self.z0)

    @property
    def apex_endo_z(self) -> float:
        return float(self.z_new(self.ed.apex_endo_z))

    @property
    def base_k_r(self) -> float:
        return float(self.k_r(np.array(1.0)))

    def move_endocardium(self, p: np.ndarray) -> np.ndarray:
        """ED endocardial points (heart frame) to this activation."""
        r = np.hypot(p[:, 0], p[:, 1])
        phi = np.arctan2(p[:, 1], p[:, 0])
        h = self.h(p[:, 2])
        r2, phi2 = r * self.k_r(h), phi + self.psi(h)
        return np.stack([r2 * np.cos(phi2), r2 * np.sin(phi2), self.z_new(p[:, 2])], 1)

    def move_epicardium(self, p: np.ndarray) -> np.ndarray:
        """ED epicardial points to this activation, keeping each slab's wall area (see the module notes)."""
        r_e = np.hypot(p[:, 0], p[:, 1])
        phi = np.arctan2(p[:, 1], p[:, 0])
        h = self.h(p[:, 2])
        r_i = np.minimum(_endo_radius(self.ed, phi, p[:, 2]), r_e)
        r2 = np.sqrt((self.k_r(h) * r_i) ** 2 + (r_e ** 2 - r_i ** 2) / self.k_l)
        phi2 = phi + self.psi(h)
        return np.stack([r2 * np.cos(phi2), r2 * np.sin(phi2), self.z_new(p[:, 2])], 1)

    def epi_radius(self, phi: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance from the long axis to the moved epicardium at angle ``phi`` and height ``z``."""
        phi = np.asarray(phi, dtype=np.float64)
        z_ed = self._z0_ed + (np.asarray(z, dtype=np.float64) - self.z0) / self.k_l
        h = self.h(z_ed)
        phi_ed = phi - self.psi(h)
        r_e = self.ed.epi_radius(phi_ed, z_ed)
        r_i = np.minimum(_endo_radius(self.ed, phi_ed, z_ed), r_e)
        return np.sqrt((self.k_r(h) * r_i) ** 2 + (r_e ** 2 - r_i ** 2) / self.k_l)


def _lv_state(ed: LVGeometry, beat: BeatParams, k_l: float, k_r0: float, a: float) -> _BeatLV:
    """The LV at activation ``a`` of a beat whose end-systolic factors are ``k_l``, ``k_r0``: every
    factor blends linearly from 1 (ED) to its ES value."""
    theta = np.deg2rad(beat.twist_deg) * a
    rho = beat.apex_rotation_share
    k_r_mid = 1.0 - a * (1.0 - k_r0)
    # k_r(h) = 1 - a (1 - k_r0 (1 + g (1/2 - h))) = k_r_mid (1 + g_a (1/2 - h))
    g_a = beat.radial_gradient * a * k_r0 / k_r_mid
    return _BeatLV(ed, 1.0 - a * (1.0 - k_l), k_r_mid, g_a, -rho * theta, (1.0 - rho) * theta,
                   ed.apex_epi_z + a * beat.apex_shift_mm)


@functools.lru_cache(maxsize=1)
def _lv_parts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heart indices of the LV epicardium and endocardium, and the cavity faces in endocardial order."""
    topo = heart_topology()
    a, b = topo.point_ranges[0]
    n_cup = (b - a) // 2
    endo = topo.lv_endo_points
    remap = np.full(topo.n_points, -1, dtype=np.int64)
    remap[endo] = np.arange(len(endo))
    return np.arange(a, a + n_cup), endo, remap[topo.lv_cavity_faces]


def _myocardium(ed_pts: np.ndarray, lv: _BeatLV) -> np.ndarray:
    """The LV cup's points ``[2 n_cup, 3]`` (epicardium, then endocardium) at ``lv``'s activation."""
    epi, endo, _ = _lv_parts()
    return np.concatenate([lv.move_epicardium(ed_pts[epi]), lv.move_endocardium(ed_pts[endo])])


def _cavity_volume(endo_pts: np.ndarray) -> float:
    return signed_volume_triangles(endo_pts, _lv_parts()[2])


def myocardial_volume_mm3(points: np.ndarray) -> float:
    """Volume (mm³) of the LV myocardium (the closed cup) of a heart in the template's vertex order."""
    topo = heart_topology()
    return signed_volume_triangles(np.asarray(points, dtype=np.float64), topo.faces_of("lv_myocardium"))


def solve_beat(shape: HeartShape, beat: BeatParams, tol: float = 1e-7) -> tuple[float, float]:
    """End-systolic ``(k_l, k_r0)`` whose meshes have the shape's EF and the beat's GLS.

    Newton's method with a finite-difference Jacobian on the heart-frame meshes (a few steps).
    Raises :class:`InputError` when no contraction of this kind reaches both (for example a GLS
    weaker than the radial motion alone gives at a high EF).
    """
    ed = lv_ed_geometry(shape)
    ed_pts, _ = phase_points(shape, "ed")
    _, endo, _ = _lv_parts()
    ed_endo = ed_pts[endo]
    v_ed = _cavity_volume(ed_endo)
    target = np.array([shape.ef, beat.gls_pct / 100.0])

    def f(x: np.ndarray) -> np.ndarray:
        lv = _lv_state(ed, beat, float(x[0]), float(x[1]), 1.0)
        es_endo = lv.move_endocardium(ed_endo)
        ef = 1.0 - _cavity_volume(es_endo) / v_ed
        return np.array([ef, global_longitudinal_strain_pct(ed_endo, es_endo) / 100.0]) - target

    k_l = 1.0 + 0.9 * beat.gls_pct / 100.0
    x = np.array([k_l, np.sqrt((1.0 - shape.ef) / k_l)])
    for _ in range(30):
        r = f(x)
        if np.abs(r).max() < tol:
            break
        J = np.empty((2, 2))
        for i in range(2):
            dx = np.zeros(2)
            dx[i] = 1e-6
            J[:, i] = (f(x + dx) - r) / 1e-6
        step = np.linalg.solve(J, -r)
        x = np.clip(x + step, [0.4, 0.2], [1.2, 1.2])
    else:
        raise InputError(f"no physiological contraction reaches EF {shape.ef:.3f} with GLS {beat.gls_pct:.1f} %")
    if not x[0] <= 1.0 + 1e-9:
        raise InputError(f"GLS {beat.gls_pct:.1f} % is weaker than the radial motion alone gives at EF "
                         f"{shape.ef:.3f} (the LV would have to lengthen)")
    return float(x[0]), float(x[1])


# --------------------------------------------------------------------------------------------
# The cycle
# --------------------------------------------------------------------------------------------

def _smoothstep(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 - np.cos(np.pi * np.clip(x, 0.0, 1.0)))


def activation(t: np.ndarray | float, systole_fraction: float) -> np.ndarray:
    """Activation (0 at ED, 1 at ES) at cycle time ``t`` in [0, 1) (see the module notes)."""
    t = np.mod(np.asarray(t, dtype=np.float64), 1.0)
    ts = float(systole_fraction)
    sys = _smoothstep(t / ts)
    tau = (t - ts) / (1.0 - ts)
    dia = 1.0 - (0.75 * _smoothstep(tau / 0.4) + 0.25 * _smoothstep((tau - 0.75) / 0.25))
    return np.where(t <= ts, sys, dia)


def beat_times(n: int, systole_fraction: float) -> tuple[np.ndarray, int]:
    """``n`` cycle times from ED (``t = 0``) that include ES exactly, and the index of ES.

    Systole gets ``round(n * systole_fraction)`` (at least 1) equal steps, diastole the rest.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise InputError(f"a beat needs at least 2 phases, got {n}")
    ts = float(systole_fraction)
    n_s = int(min(max(round(n * ts), 1), n - 1))
    sys = ts * np.arange(n_s + 1) / n_s
    n_d = n - n_s - 1
    dia = ts + (1.0 - ts) * np.arange(1, n_d + 1) / (n_d + 1)
    return np.concatenate([sys, dia]), n_s


@dataclass
class Beat:
    """A physiological heartbeat of one case.

    Attributes
    ----------
    ed, es : HeartPhase
        End-diastole (identical to the affine beat's) and end-systole, in the torso frame.
    k_l, k_r0 : float
        The solved end-systolic longitudinal and mid-height radial factors.
    times : ndarray [N]
        Cycle times of ``phases`` (``t = 0`` is ED); empty when no cycle was asked for.
    es_index : int
        Index of ES in ``phases`` (-1 without a cycle).
    phases : list of HeartPhase
        The cycle's phases.
    """

    ed: HeartPhase
    es: HeartPhase
    k_l: float
    k_r0: float
    times: np.ndarray
    es_index: int
    phases: list[HeartPhase]


def _phase_at(shape: HeartShape, placement: Placement | None, beat: BeatParams, k_l: float, k_r0: float,
              a: float, ed_pts: np.ndarray) -> HeartPhase:
    if a <= 0.0:
        return placed_phase(*phase_points(shape, "ed"), placement)
    lv = _lv_state(lv_ed_geometry(shape), beat, k_l, k_r0, a)
    return placed_phase(*heart_points(shape, lv, a, lv.base_k_r, _myocardium(ed_pts, lv)), placement)


def physiological_beat(shape: HeartShape, placement: Placement | None = None, beat: BeatParams | None = None,
                       n_phases: int = 0) -> Beat:
    """ED, ES and optionally ``n_phases`` phases of one cycle (:func:`beat_times`) of the physiological beat.

    The recorded EF of the result is the shape's (to float32 rounding of the written points) and its
    GLS the beat's target.
    """
    beat = beat or BeatParams()
    k_l, k_r0 = solve_beat(shape, beat)
    ed_pts, _ = phase_points(shape, "ed")
    ed = _phase_at(shape, placement, beat, k_l, k_r0, 0.0, ed_pts)
    es = _phase_at(shape, placement, beat, k_l, k_r0, 1.0, ed_pts)
    times, es_index, phases = np.zeros(0), -1, []
    if n_phases:
        times, es_index = beat_times(n_phases, beat.systole_fraction)
        acts = activation(times, beat.systole_fraction)
        acts[0], acts[es_index] = 0.0, 1.0
        phases = [ed if a == 0.0 else es if a == 1.0 else _phase_at(shape, placement, beat, k_l, k_r0, float(a), ed_pts)
                  for a in acts]
    return Beat(ed, es, k_l, k_r0, times, es_index, phases)
