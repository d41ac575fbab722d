"""End-diastole and end-systole in a cine loop from a blood-pool area per frame.

ED is the frame where the ventricles hold most blood, ES where they hold least. The estimate works
on the resampled views (apex at the top centre, pixel size known):

1. Each frame is smoothed inside the covered fan (normalised Gaussian convolution, sigma 2 mm) so
   speckle in the blood pool does not punch holes in it.
2. A central wedge of the fan is searched: radii between :data:`BAND` fractions of the covered depth
   and beam angles within half the half-opening. In apical views the central beam runs down the
   ventricles (the LV, the septum and part of the RV) from near the apex to about the valve plane,
   and the atria (far field) and the near-field clutter stay out; in short-axis views it holds the
   middle of the LV ring.
3. One threshold for the whole loop, Otsu's between blood and tissue over the wedge's pixels of
   every frame, so areas in different frames are comparable.
4. The area is the dark part of the wedge in each frame. Whatever else is dark in the wedge (lung,
   the other ventricle) changes little or in step with the LV, so the largest area is ED and the
   smallest ES.

Designs that followed one connected dark region (seeded from the regions dark in most frames) were
tried first and dropped: where the fan shows no tissue beside the heart (the cohort's pseudo-echo)
or the mitral valve is open, the chamber joins the dark ground around it and the region's area
stops following the ventricle.

Otsu's threshold is a twenty-line histogram computation, written here rather than taken from
scikit-image (a development-only dependency of sono3d).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sono3d.errors import InputError
from sono3d.geometry.sector import polar_coordinates
from sono3d.types import Sector

__all__ = ["cavity_areas", "choose_phases", "otsu_threshold", "BAND"]

BAND = (0.08, 0.62)
_SMOOTH_MM = 2.0
_ANGLE_FRACTION = 0.5


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of a set of grey levels (maximises the between-class variance)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise InputError("no pixels to threshold")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = (w0 * w1 * (m0 - m1) ** 2)[:-1]
    # a gap between the classes makes a plateau of equal scores: take its middle
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(edges[1:-1][best].mean())


def cavity_areas(views: np.ndarray, coverage: np.ndarray, pixel_mm: float, opening_deg: float,
                 band: tuple[float, float] = BAND) -> tuple[np.ndarray, np.ndarray]:
    """Blood-pool area of each frame (mm^2) in the fan's central wedge, and the dark masks.

    Parameters
    ----------
    views : ndarray [N, H, W]
        Resampled frames (apex at pixel ``((W - 1) / 2, 0)``, beam down the rows), zero outside
        ``coverage``.
    coverage : ndarray [H, W] bool
        Pixels that hold image data.
    pixel_mm : float
        Pixel size of ``views``.
    opening_deg : float
        Opening angle of the covered fan (the narrower of source and target).
    band : (float, float)
        Radii searched, as fractions of the covered depth (the wedge spans half the half-opening).

    Returns
    -------
    areas_mm2 : ndarray [N]
    cavity : ndarray [N, H, W] bool
    """
    v = np.asarray(views, dtype=np.float32)
    N, H, W = v.shape
    apex_top = Sector(apex_px=((W - 1) / 2.0, 0.0), angle_deg=max(float(opening_deg), 1e-3), radius_mm=(0.0, 1.0))
    r, theta = polar_coordinates(apex_top, (H, W), (1.0, 1.0))  # radius in pixels
    theta = np.abs(theta)
    depth = float(r[coverage].max()) if coverage.any() else 0.0
    roi = (coverage & (r >= band[0] * depth) & (r <= band[1] * depth)
           & (theta <= _ANGLE_FRACTION * np.deg2rad(opening_deg) / 2))
    if roi.sum() < 16:
        raise InputError("the covered fan is too small to find the heart's cavity in it")
    sigma = max(_SMOOTH_MM / pixel_mm, 1.0)
    # Smooth inside the coverage only (normalised convolution), so the black outside does not
    # darken the fan's rim.
    w = ndi.gaussian_filter(coverage.astype(np.float32), sigma)
    smooth = np.stack([ndi.gaussian_filter(f * coverage, sigma) for f in v]) / np.maximum(w, 1e-6)
    t = otsu_threshold(smooth[:, roi])
    cavity = (smooth < t) & roi
    return cavity.sum((1, 2)) * pixel_mm ** 2, cavity


def choose_phases(areas: np.ndarray, ed_frame: int | None = None, es_frame: int | None = None
                  ) -> tuple[int, int]:
    """ED and ES frame indices: the largest and smallest cavity, unless given.

    Raises
    ------
    InputError
        A given frame outside ``0 .. N-1``.
    """
    a = np.asarray(areas, dtype=np.float64)
    n = len(a)
    for name, f in (("ED", ed_frame), ("ES", es_frame)):
        if f is not None and not (0 <= int(f) < n):
            raise InputError(f"{name} frame {f} is out of range: the loop has {n} frames (0..{n - 1})")
    ed = int(ed_frame) if ed_frame is not None else int(np.argmax(a))
    es = int(es_frame) if es_frame is not None else int(np.argmin(a))
    return ed, es
