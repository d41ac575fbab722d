"""Physics B-mode appearance of the six heart views (``sono3d heart cohort --appearance bmode``).

The pseudo-echo of the heart paper paints tissue white and blood black. This module images the
same label views the way a phased-array probe would, per view and phase:

1. **Echogenicity** (amplitude reflectivity) on the view's pixel grid from the label image: one
   level per tissue class (myocardium, atrial and arterial walls, valves; blood pools, appendage
   and vein stubs dark), a bright pericardial band just outside the heart, and a smooth, spatially
   varying level for the tissue around the heart (3D value noise in tissue coordinates). Boundaries
   facing the beam are brightened and those running along it dimmed (specular reflection: the
   lateral walls of apical views drop out as on a scanner).
2. **Polar grid**: the map is sampled on the sector's (radius, beam angle) grid. Everything that
   follows runs along the beams, not the image rows.
3. **Scatterers**: unit Gaussian amplitudes (plus a label-dependent fraction of strong scatterers)
   hashed from a 0.2 mm lattice in *tissue coordinates*, so the speckle is a property of the
   tissue: two crossing planes see the same speckle along their common line, and at end-systole
   each sample takes the scatterer of the tissue point it held at end-diastole (the vertex
   displacement field of the mesh, interpolated; out-of-plane motion changes the speckle as it
   does on a scanner). Without meshes the lattice is fixed in space.
4. **Beam formation** with :func:`sono3d.simulate.bmode.bmode` on the polar grid: the axial PSF
   along the radius, the lateral PSF across beams with a constant *angular* width (a beam that
   widens with depth), round-trip attenuation with partial time-gain compensation, receiver noise,
   envelope. A steering loss ``cos(angle)^k`` darkens the sector's edges.
5. **Clutter**: incoherent near-field clutter (chest-wall reverberation decaying over about a
   centimetre) and a faint haze decaying over several centimetres that fills the blood pools, added
   in power to the echoes before beam formation.
6. Log compression over the dynamic range, scan conversion (each pixel the mean over its area of
   the bilinearly interpolated polar image, as real frames are block-averaged by the intake), the
   scanner's display smoothing and the sector mask.

Acquisition settings vary between cases (:meth:`HeartEchoParams.sample`), as between scanners and
patients. All lengths are millimetres.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from sono3d.errors import InputError
from sono3d.geometry.sector import sector_for_probe, sector_mask, sector_to_cartesian
from sono3d.simulate.bmode import BModeParams, axial_oversampling, bmode, log_compress
from sono3d.types import Sector

__all__ = ["HeartEchoParams", "bmode_views", "bmode_view", "echogenicity_map", "tissue_coordinates",
           "lattice_normal", "value_noise", "LABEL_CLASSES"]

# View labels (docs/heart_cohort.md) grouped by how they scatter. Appendage, vein and caval stubs
# are painted solid but are blood-filled, so they image as blood.
LABEL_CLASSES: dict[str, tuple[int, ...]] = {
    "myocardium": (1, 2),
    "wall": (3, 4, 5, 6),
    "valve": (7, 8, 9, 10),
    "blood": (11, 12, 13, 14, 15, 16, 17, 25, 26, 27, 28, 29, 30),
}


@dataclass(frozen=True)
class HeartEchoParams:
    """Tissue and acquisition settings of the heart-view B-mode model.

    Echogenicities are amplitude reflectivities; 1 is white at ``gain_db = 0`` before attenuation.

    Attributes
    ----------
    myocardium, wall, valve, blood, pericardium, background : float
        Echogenicity of each class (``background``: mean level of the tissue around the heart).
    background_logstd : float
        Standard deviation of the log of the background level (smooth 3D value noise).
    background_cell_mm : float
        Lattice cell of that noise (its correlation length).
    texture_logstd, texture_cell_mm : float
        Heterogeneity of every tissue's echogenicity (walls, valves, background; not blood): a
        log-normal factor from value noise on a finer lattice (trabeculae, fibre orientation).
    pericardium_mm : float
        Thickness of the pericardial band outside the heart.
    specular_dim, specular_boost : float
        Boundary brightness factor ``1 + w (boost cos^4 - dim sin^2)`` with the angle between the
        boundary normal and the beam (``w`` in [0, 1]: boundary strength).
    strong_fraction, strong_amplitude : float
        Fraction of strong scatterers in tissue (none in blood) and their amplitude relative to the
        ordinary ones; the local variance is renormalised, so the echogenicity keeps its meaning.
    frequency_mhz, axial_fwhm_mm : float
        Centre frequency (attenuation) and axial resolution.
    beam_width_mm, beam_ref_mm : float
        Lateral FWHM of a beam at depth ``beam_ref_mm`` (the beam's angular width is constant).
    attenuation_db_cm_mhz, tgc : float
        Tissue attenuation and the fraction of it that time-gain compensation restores.
    steering_power : float
        Steering loss: amplitude times ``cos(beam angle) ** steering_power``.
    clutter, clutter_mm : float
        Near-field clutter level at the apex and its decay length.
    haze, haze_mm : float
        Reverberation haze level and its decay length.
    dynamic_range_db, gain_db, noise_db : float
        Log compression, overall gain, receiver noise (see :class:`~sono3d.simulate.bmode.BModeParams`).
    smoothing_px : float
        The scanner's display smoothing (speckle reduction): Gaussian sigma in output pixels.
    """

    myocardium: float = 0.22
    wall: float = 0.25
    valve: float = 0.7
    blood: float = 0.012
    pericardium: float = 0.9
    background: float = 0.07
    background_logstd: float = 0.7
    background_cell_mm: float = 9.0
    texture_logstd: float = 0.4
    texture_cell_mm: float = 3.0
    pericardium_mm: float = 2.5
    specular_dim: float = 0.5
    specular_boost: float = 1.0
    strong_fraction: float = 0.03
    strong_amplitude: float = 3.0
    frequency_mhz: float = 2.5
    axial_fwhm_mm: float = 1.0
    beam_width_mm: float = 3.0
    beam_ref_mm: float = 80.0
    attenuation_db_cm_mhz: float = 0.5
    tgc: float = 0.85
    steering_power: float = 1.0
    clutter: float = 0.3
    clutter_mm: float = 10.0
    haze: float = 0.02
    haze_mm: float = 45.0
    dynamic_range_db: float = 50.0
    gain_db: float = -10.0
    noise_db: float = -80.0
    smoothing_px: float = 0.6

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not np.isfinite(v):
                raise InputError(f"B-mode heart setting {f.name} must be finite, got {v}")
            if f.name not in ("gain_db", "noise_db") and v < 0:
                raise InputError(f"B-mode heart setting {f.name} must be >= 0, got {v}")
        for name in ("axial_fwhm_mm", "beam_width_mm", "beam_ref_mm", "frequency_mhz", "dynamic_range_db",
                     "clutter_mm", "haze_mm", "background_cell_mm", "texture_cell_mm"):
            if getattr(self, name) <= 0:
                raise InputError(f"B-mode heart setting {name} must be positive, got {getattr(self, name)}")

    # Per-case ranges (uniform; log-uniform for the reflectivities) used by ``sample``.
    RANGES = {
        "myocardium": (0.14, 0.32), "wall": (0.16, 0.36), "valve": (0.45, 1.0), "blood": (0.01, 0.06),
        "pericardium": (0.6, 1.4), "background": (0.04, 0.16), "background_logstd": (0.4, 0.9),
        "pericardium_mm": (1.5, 4.0), "specular_dim": (0.3, 0.7), "specular_boost": (0.5, 1.8),
        "strong_fraction": (0.0, 0.06), "axial_fwhm_mm": (0.8, 2.0), "beam_width_mm": (2.5, 6.0),
        "frequency_mhz": (2.0, 3.5), "tgc": (0.7, 1.0), "steering_power": (0.0, 2.0),
        "clutter": (0.1, 0.6), "clutter_mm": (5.0, 15.0), "haze": (0.005, 0.06), "haze_mm": (40.0, 150.0),
        "dynamic_range_db": (42.0, 58.0), "gain_db": (-15.0, -5.0), "texture_logstd": (0.2, 0.6),
        "smoothing_px": (0.3, 1.2),
    }
    _LOG = ("myocardium", "wall", "valve", "blood", "pericardium", "background", "clutter", "haze")

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "HeartEchoParams":
        """Settings drawn from :attr:`RANGES` (reflectivities log-uniform), one set per case."""
        kw = {}
        for name, (lo, hi) in cls.RANGES.items():
            if name in cls._LOG:
                kw[name] = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            else:
                kw[name] = float(rng.uniform(lo, hi))
        return cls(**kw)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Hashed random fields in tissue coordinates
# --------------------------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _hash3(ijk: np.ndarray, seed: int) -> np.ndarray:
    """uint64 hash of integer lattice points ``[..., 3]`` and a seed."""
    u = np.asarray(ijk, dtype=np.int64).view(np.uint64)
    h = _splitmix(np.full(u.shape[:-1], np.uint64(seed % 2**63), dtype=np.uint64))
    for k in range(3):
        h = _splitmix(h ^ u[..., k])
    return h


def _to_unit(h: np.ndarray) -> np.ndarray:
    """Uniform in (0, 1) from the top 53 bits of a hash."""
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 2**53)


def lattice_normal(points_mm: np.ndarray, cell_mm: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard normal value and a uniform value of the lattice cell holding each point.

    Parameters
    ----------
    points_mm : ndarray [..., 3]
        Tissue coordinates (mm).
    cell_mm : float
        Lattice spacing.

    Returns
    -------
    normal, uniform : ndarrays [...] float32 (Box-Muller from two hashes; the same cell always
    gives the same values).
    """
    ijk = np.floor(np.asarray(points_mm, dtype=np.float64) / cell_mm).astype(np.int64)
    h = _hash3(ijk, seed)
    h2 = _splitmix(h)
    u1, u2 = _to_unit(h), _to_unit(h2)
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return normal.astype(np.float32), _to_unit(_splitmix(h2)).astype(np.float32)


def value_noise(points_mm: np.ndarray, cell_mm: float, seed: int) -> np.ndarray:
    """Smooth noise: trilinear interpolation of unit normals on a lattice, scaled to unit variance.

    Returns ``[...]`` float32, correlated over about ``cell_mm``.
    """
    p = np.asarray(points_mm, dtype=np.float64) / cell_mm
    base = np.floor(p)
    t = p - base
    base = base.astype(np.int64)
    out = np.zeros(p.shape[:-1], dtype=np.float64)
    wsq = np.zeros(p.shape[:-1], dtype=np.float64)
    for corner in np.ndindex(2, 2, 2):
        c = np.asarray(corner)
        w = np.prod(np.where(c == 1, t, 1.0 - t), axis=-1)
        h = _hash3(base + c, seed)
        n = np.sqrt(-2.0 * np.log(_to_unit(h))) * np.cos(2.0 * np.pi * _to_unit(_splitmix(h)))
        out += w * n
        wsq += w * w
    return (out / np.sqrt(wsq)).astype(np.float32)


def tissue_coordinates(world_mm: np.ndarray, phase_points: np.ndarray | None, ref_points: np.ndarray | None,
                       k: int = 6, inner_mm: float = 10.0, reach_mm: float = 15.0) -> np.ndarray:
    """Where each world point ``[..., 3]`` sat in the reference phase (tissue coordinates, mm).

    The displacement ``ref - phase`` of the ``k`` nearest mesh vertices (inverse-distance weights)
    is carried over in full within ``inner_mm`` of the nearest vertex (the walls, whose vertices are
    a few millimetres apart), fading as ``exp(-((d - inner_mm) / reach_mm)^2)`` beyond (tissue far
    from the heart moves little). Identity when either mesh is ``None`` or the two coincide.
    """
    x = np.asarray(world_mm, dtype=np.float64)
    if phase_points is None or ref_points is None:
        return x
    P = np.asarray(phase_points, dtype=np.float64)
    R = np.asarray(ref_points, dtype=np.float64)
    if P.shape != R.shape:
        raise InputError(f"phase and reference meshes differ in shape: {P.shape} vs {R.shape}")
    disp = R - P
    if not np.any(disp):
        return x
    flat = x.reshape(-1, 3)
    d, idx = cKDTree(P).query(flat, k=k)
    w = 1.0 / np.maximum(d, 1e-3) ** 2
    w /= w.sum(1, keepdims=True)
    fade = np.exp(-(np.maximum(d[:, :1] - inner_mm, 0.0) / reach_mm) ** 2)
    move = np.einsum("nk,nkc->nc", w, disp[idx]) * fade
    return (flat + move).reshape(x.shape)


# --------------------------------------------------------------------------------------------
# Echogenicity
# --------------------------------------------------------------------------------------------

def _class_lut(params: HeartEchoParams) -> tuple[np.ndarray, np.ndarray]:
    """Echogenicity and strong-scatterer fraction of each label value (0-255); background 0."""
    echo = np.zeros(256, dtype=np.float32)
    strong = np.zeros(256, dtype=np.float32)
    for cls, labels in LABEL_CLASSES.items():
        echo[list(labels)] = getattr(params, cls)
        strong[list(labels)] = 0.0 if cls == "blood" else params.strong_fraction
    return echo, strong


def echogenicity_map(labels: np.ndarray, sector: Sector, spacing_mm: float, params: HeartEchoParams,
                     background_field: np.ndarray, texture_field: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Echogenicity and strong-scatterer fraction ``[H, W]`` of one label view.

    Parameters
    ----------
    labels : ndarray [H, W] uint8
        View labels (0 background and outside the sector).
    sector : Sector
        The view's sector (beam directions for the specular term).
    spacing_mm : float
        Square pixel size.
    background_field, texture_field : ndarray [H, W]
        Unit-variance smooth noise at each pixel's tissue coordinates (coarse and fine lattices).
    """
    lab = np.asarray(labels)
    lut, strong_lut = _class_lut(params)
    echo = lut[lab]
    strong = strong_lut[lab]
    heart = lab > 0
    bg = params.background * np.exp(params.background_logstd * background_field
                                    - 0.5 * params.background_logstd ** 2)
    outside = ~heart
    echo[outside] = bg[outside]
    strong[outside] = params.strong_fraction
    if heart.any() and params.pericardium_mm > 0:
        dist = ndimage.distance_transform_edt(outside, sampling=spacing_mm)
        band = outside & (dist <= params.pericardium_mm)
        echo[band] = params.pericardium
    if texture_field is not None and params.texture_logstd > 0:
        not_blood = ~np.isin(lab, LABEL_CLASSES["blood"])
        tex = np.exp(params.texture_logstd * texture_field - 0.5 * params.texture_logstd ** 2)
        echo = np.where(not_blood, echo * tex, echo).astype(np.float32)
    # Specular boundaries: normal of the smoothed tissue map against the beam direction.
    sigma = 1.5
    tissue = (echo > 2.0 * params.blood).astype(np.float32) if params.blood > 0 else (echo > 0).astype(np.float32)
    gy = ndimage.gaussian_filter(tissue, sigma, order=(1, 0))
    gx = ndimage.gaussian_filter(tissue, sigma, order=(0, 1))
    gmag = np.hypot(gx, gy)
    w = np.clip(gmag * sigma * np.sqrt(2.0 * np.pi), 0.0, 1.0)
    H, W = lab.shape
    rows, cols = np.meshgrid(np.arange(H) - sector.apex_px[1], np.arange(W) - sector.apex_px[0], indexing="ij")
    rr = np.hypot(rows, cols)
    cos = np.abs(gy * rows + gx * cols) / np.maximum(gmag * rr, 1e-9)
    factor = 1.0 + w * (params.specular_boost * cos ** 4 - params.specular_dim * (1.0 - cos ** 2))
    echo = echo * np.clip(factor, 0.05, None).astype(np.float32)
    # Edges are not sharp on the scale of a pixel; the polar grid samples this map bilinearly.
    return ndimage.gaussian_filter(echo, 0.7).astype(np.float32), strong


# --------------------------------------------------------------------------------------------
# One view, both phases
# --------------------------------------------------------------------------------------------

def _pixel_to_world(M: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return cols[..., None] * M[:3, 0] + rows[..., None] * M[:3, 1] + M[:3, 3]


def bmode_view(labels: np.ndarray, poses: np.ndarray, sector: Sector, spacing_mm: float, params: HeartEchoParams,
               seed: int, tissue: list | None = None, n_radial: int | None = None, n_beams: int | None = None,
               return_envelope: bool = False) -> np.ndarray:
    """B-mode images of one view in each phase.

    Parameters
    ----------
    labels : ndarray [P, H, W] uint8
    poses : ndarray [P, 4, 4]
        Image-to-world of the view in each phase (mm).
    sector : Sector
        The view's sector (the same in every phase), apex at pixel ``((W-1)/2, 0)``.
    spacing_mm : float
        Square pixel size.
    params : HeartEchoParams
    seed : int
        Seed of the hashed scatterer and background lattices (one per case: the views of a case
        share their tissue).
    tissue : list of callables, optional
        Per phase, a map from world points ``[..., 3]`` to tissue coordinates (default: identity).
    n_radial, n_beams : int, optional
        Polar grid (default ``2 H`` radial samples and ``1.5 W`` beams).
    return_envelope : bool
        Return the scan-converted envelope (before log compression; echogenicity 1 at zero depth
        has RMS 1, blood then has Rayleigh statistics) instead of the grey image.

    Returns
    -------
    ndarray [P, H, W] float32: grey levels in [0, 1] (0 outside the sector) or the envelope.
    """
    lab = np.asarray(labels)
    P, H, W = lab.shape
    n_r = int(n_radial or 2 * H)
    n_b = int(n_beams or round(1.5 * W))
    r0, r1 = sector.radius_mm
    dr = (r1 - r0) / (n_r - 1)
    half = np.deg2rad(sector.angle_deg) / 2
    dth = 2 * half / n_b
    theta = -half + (np.arange(n_b) + 0.5) * dth
    # Attenuation, time-gain compensation and receiver noise are applied around the beam formation,
    # not inside it: the envelope filter's tails would carry a strong near field, 60 dB above the
    # attenuated far field, into the depth where the gain brings it up again. The noise enters as the
    # echogenicity that would give it before attenuation (exact in distribution: independent
    # Gaussian amplitudes add in power).
    bp = BModeParams(frequency_mhz=params.frequency_mhz, axial_fwhm_mm=params.axial_fwhm_mm,
                     lateral_fwhm_mm=params.beam_width_mm, attenuation_db_cm_mhz=0.0, tgc=0.0,
                     dynamic_range_db=params.dynamic_range_db, gain_db=params.gain_db, noise_db=-np.inf)
    lateral_mm = params.beam_ref_mm * dth  # beam spacing (mm) at the reference depth
    U = axial_oversampling(bp, dr)
    radius = r0 + np.arange(n_r) * dr
    radius_fine = r0 + np.arange(n_r * U) / U * dr
    sp = (spacing_mm, spacing_mm)
    rows_c, cols_c = sector_to_cartesian(sector, radius[:, None], theta[None, :], sp)
    rows_f, cols_f = sector_to_cartesian(sector, radius_fine[:, None], theta[None, :], sp)
    pr, pc = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    steer = np.cos(theta)[None, :] ** params.steering_power
    near = (params.clutter * np.exp(-(radius - r0) / params.clutter_mm)
            + params.haze * np.exp(-(radius - r0) / params.haze_mm))[:, None]
    loss_db = params.attenuation_db_cm_mhz * params.frequency_mhz * 2.0 * radius / 10.0
    atten = 10.0 ** (-loss_db / 20.0)
    noise_pre = (10.0 ** (params.noise_db / 20.0) / atten)[:, None]
    gain = (atten * 10.0 ** (params.tgc * loss_db / 20.0)).astype(np.float32)[:, None]
    echo_polar = np.zeros((P, n_r, n_b), dtype=np.float32)
    scat = np.zeros((P, n_r * U, n_b), dtype=np.float32)
    for p in range(P):
        M = np.asarray(poses[p], dtype=np.float64)
        to_tissue = tissue[p] if tissue is not None else (lambda x: x)
        # Tissue coordinates on the pixel grid (for the background) and, interpolated from them, at
        # every fine polar sample (for the scatterers): the displacement field is smooth.
        X_pix = to_tissue(_pixel_to_world(M, pr, pc))
        bgf = value_noise(X_pix, params.background_cell_mm, seed + 1)
        tex = value_noise(X_pix, params.texture_cell_mm, seed + 2)
        echo, strong = echogenicity_map(lab[p], sector, spacing_mm, params, bgf, tex)
        coords = np.stack([rows_c, cols_c])
        e = ndimage.map_coordinates(echo, coords, order=1, mode="nearest")
        echo_polar[p] = np.sqrt((e * e + near * near) * steer ** 2 + noise_pre ** 2)
        fine = np.stack([rows_f, cols_f])
        X_f = np.stack([ndimage.map_coordinates(X_pix[..., c], fine, order=1, mode="nearest") for c in range(3)],
                       axis=-1)
        g, u = lattice_normal(X_f, 0.2, seed)
        frac = ndimage.map_coordinates(strong, fine, order=0, mode="nearest")
        boost = np.where(u < frac, params.strong_amplitude, 1.0)
        norm = np.sqrt(1.0 + frac * (params.strong_amplitude ** 2 - 1.0))
        scat[p] = g * boost / norm
    env = bmode(echo_polar, (dr, lateral_mm), bp, sector=None, return_envelope=True, scatterers=scat) * gain
    mask = sector_mask(sector, (H, W), sp)
    out = np.zeros((P, H, W), dtype=np.float32)
    if return_envelope:
        # The envelope at the nearest polar sample of each pixel centre (averaging would hide the
        # speckle statistics).
        ri, bi = _polar_index(sector, (H, W), sp, r0, dr, half, dth, 1)
        for p in range(P):
            out[p] = ndimage.map_coordinates(env[p], np.stack([ri, bi]), order=0, mode="nearest")[..., 0] * mask
        return out
    # Grey levels: each pixel is the mean of the displayed image over its area (3 x 3 bilinear
    # samples), as a real frame brought to this pixel size by block averaging is (sono3d.intake).
    ri, bi = _polar_index(sector, (H, W), sp, r0, dr, half, dth, _SUPERSAMPLE)
    coords = np.stack([ri, bi])
    for p in range(P):
        img = log_compress(env[p], params.dynamic_range_db, 1.0, params.gain_db)
        disp = ndimage.map_coordinates(img, coords, order=1, mode="nearest").mean(-1)
        if params.smoothing_px > 0:
            disp = ndimage.gaussian_filter(disp, params.smoothing_px)
        out[p] = disp * mask
    return out


_SUPERSAMPLE = 3


def _polar_index(sector: Sector, shape: tuple[int, int], spacing: tuple[float, float], r0: float, dr: float,
                 half: float, dth: float, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (radial, beam) indices ``[H, W, q*q]`` of ``q x q`` points spread over each pixel."""
    H, W = shape
    off = (np.arange(q) + 0.5) / q - 0.5
    oy, ox = [a.ravel() for a in np.meshgrid(off, off, indexing="ij")]
    rows = np.arange(H)[:, None, None] + oy[None, None, :]
    cols = np.arange(W)[None, :, None] + ox[None, None, :]
    dy, dx = spacing
    ax = (rows - sector.apex_px[1]) * dy
    lat = (cols - sector.apex_px[0]) * dx
    radius = np.hypot(ax, lat)
    angle = np.arctan2(lat, ax) - np.deg2rad(sector.tilt_deg)
    return (radius - r0) / dr, (angle + half) / dth - 0.5


def bmode_views(views: dict[str, Any], seed: int, params: HeartEchoParams | None = None,
                points: list[np.ndarray] | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """B-mode echo ``[P, 6, H, W]`` for a case's views (the arrays of ``views.npz``).

    Parameters
    ----------
    views : dict
        ``labels`` [P, 6, H, W], ``poses`` [P, 6, 4, 4], ``opening_deg``, ``depth_mm``, ``spacing_mm`` [6].
    seed : int
        The case's tissue seed (scatterers and background lattices).
    params : HeartEchoParams, optional
        Settings; drawn with :meth:`HeartEchoParams.sample` from ``rng`` when ``None``.
    points : list of ndarray [V, 3], optional
        The mesh vertices of each phase (same vertex order); phase 0 is the reference, so the other
        phases' speckle moves with the tissue. Without them the speckle is fixed in space.
    rng : Generator, optional
        Source of the settings when ``params`` is ``None``.
    """
    lab = np.asarray(views["labels"])
    if lab.ndim != 4 or lab.shape[1] != 6:
        raise InputError(f"view labels must have shape [P, 6, H, W], got {list(lab.shape)}")
    P, _, H, W = lab.shape
    poses = np.asarray(views["poses"], dtype=np.float64)
    if poses.shape != (P, 6, 4, 4):
        raise InputError(f"view poses must have shape [{P}, 6, 4, 4], got {list(poses.shape)}")
    if params is None:
        params = HeartEchoParams.sample(rng if rng is not None else np.random.default_rng(seed))
    tissue = None
    if points is not None:
        if len(points) != P:
            raise InputError(f"{P} phases of views but {len(points)} meshes")
        ref = np.asarray(points[0], dtype=np.float64)
        tissue = [(lambda x, ph=np.asarray(pts, dtype=np.float64): tissue_coordinates(x, ph, ref)) for pts in points]
    out = np.zeros((P, 6, H, W), dtype=np.float32)
    for j in range(6):
        s = float(np.asarray(views["spacing_mm"])[j])
        sector = sector_for_probe((H, W), (s, s), float(np.asarray(views["opening_deg"])[j]),
                                  float(np.asarray(views["depth_mm"])[j]))
        out[:, j] = bmode_view(lab[:, j], poses[:, j], sector, s, params, seed, tissue)
    return out
