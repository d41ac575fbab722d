"""The template's LV endocardium as a grid of rings and longitudes, and its longitudinal strain.

Every heart in the template's vertex order (a generated case, a network's prediction, the template
fitted to a real heart) has the same LV endocardium: an apex vertex and ``N_RINGS`` rings of
``N_LON`` vertices from the apex to the base ring, which lies in the base (valve) plane. Longitude
``j`` sits at the angle ``phi_j = 360° j / N_LON`` about the long axis in the template's heart frame,
measured from the septum (``+x``, towards the RV) towards the anterior wall (``+y``). The vertices
are material points: the same index is the same piece of endocardium in every phase.

Global longitudinal strain (GLS), as echocardiographers report it from the three apical views:

* each apical view's endocardial contour runs from the base ring up one wall to the apex and down
  the opposite wall: the two template meridians (apex to base ring) at the view's longitudes,
  :data:`APICAL_VIEW_LONGITUDES` (A4C: septum 0° and lateral 180°; A2C: anterior 81° and inferior
  261°; A3C: anteroseptal 54° and inferolateral 234°; the nearest template longitudes to the
  cohort's view planes at 0°, 80°/-100° and the aortic valve's 55°);
* the view's strain is the relative change of the contour's polyline length from ED to ES,
  ``(L_ES - L_ED) / L_ED``; negative in contraction;
* GLS is the mean of the three views' strains, in percent.

It is a Lagrangian strain of material lines (the contour follows the same vertices), not the
length of the cut of a fixed plane; twist moves the material meridians out of the ED view planes.
"""

from __future__ import annotations

import functools

import numpy as np

from sono3d.errors import InputError
from sono3d.phantoms.heart import LV_CUP_RES, heart_topology

__all__ = [
    "N_RINGS",
    "N_LON",
    "APICAL_VIEW_LONGITUDES",
    "endocardial_grid",
    "endocardium_points",
    "longitude_angles_deg",
    "view_contour_lengths",
    "global_longitudinal_strain_pct",
]

N_RINGS, N_LON = LV_CUP_RES

# Longitude pairs (template indices) whose meridians form each apical view's contour.
APICAL_VIEW_LONGITUDES: dict[str, tuple[int, int]] = {"a4c": (0, 20), "a2c": (9, 29), "a3c": (6, 26)}


@functools.lru_cache(maxsize=1)
def endocardial_grid() -> tuple[int, np.ndarray]:
    """Indices into the endocardium's own vertex order (:func:`endocardium_points`).

    Returns
    -------
    apex : int
        The apex vertex (0).
    rings : ndarray [N_RINGS, N_LON] int64
        Ring ``k`` (apex to base; the last is the base ring), longitude ``j``.
    """
    rings = 1 + np.arange(N_RINGS * N_LON, dtype=np.int64).reshape(N_RINGS, N_LON)
    return 0, rings


def longitude_angles_deg() -> np.ndarray:
    """Template angle (degrees, from the septum towards the anterior wall) of each longitude."""
    return 360.0 * np.arange(N_LON) / N_LON


def endocardium_points(points: np.ndarray, what: str = "mesh") -> np.ndarray:
    """The LV endocardial vertices ``[561, 3]`` (apex, then rings) of a heart in template order.

    Accepts a whole heart (the template's vertex count) or an LV cavity mesh's vertices (the
    endocardium already). Raises :class:`InputError` for other vertex counts or non-finite points.
    """
    p = np.asarray(points, dtype=np.float64)
    topo = heart_topology()
    n_endo = 1 + N_RINGS * N_LON
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"{what}: points must have shape [N, 3], got {list(p.shape)}")
    if not np.isfinite(p).all():
        raise InputError(f"{what}: points contain NaN or infinite values")
    if len(p) == topo.n_points:
        return p[topo.lv_endo_points]
    if len(p) == n_endo:
        return p
    raise InputError(f"{what} is not in the template's vertex order ({len(p)} vertices; a heart has "
                     f"{topo.n_points}, its LV cavity {n_endo})")


def _meridian_lengths(endo: np.ndarray) -> np.ndarray:
    """Length (mm) of each longitude's meridian, apex to base ring, ``[N_LON]``."""
    apex, rings = endocardial_grid()
    line = np.concatenate([np.broadcast_to(endo[apex], (1, N_LON, 3)), endo[rings]], axis=0)  # [R+1, L, 3]
    return np.linalg.norm(np.diff(line, axis=0), axis=2).sum(axis=0)


def view_contour_lengths(points: np.ndarray) -> dict[str, float]:
    """Endocardial contour length (mm) of each apical view (:data:`APICAL_VIEW_LONGITUDES`)."""
    m = _meridian_lengths(endocardium_points(points))
    return {v: float(m[i] + m[j]) for v, (i, j) in APICAL_VIEW_LONGITUDES.items()}


def global_longitudinal_strain_pct(ed_points: np.ndarray, es_points: np.ndarray) -> float:
    """GLS (percent, negative in contraction): the mean of the three apical views' contour strains.

    ``ed_points``, ``es_points``: the same heart (or LV cavity) in the template's vertex order, mm.
    """
    a = view_contour_lengths(ed_points)
    b = view_contour_lengths(es_points)
    return float(np.mean([(b[v] - a[v]) / a[v] for v in APICAL_VIEW_LONGITUDES]) * 100.0)
