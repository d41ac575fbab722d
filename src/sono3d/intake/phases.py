"""End-diastole and end-systole in a cine loop from a blood-pool area per frame.

ED is the frame where the left ventricle holds most blood, ES where it holds least. The cavity
estimate works on the resampled views (apex at the top centre, pixel size known):

1. Each frame is smoothed (Gaussian, sigma 2 mm) so speckle in the blood pool does not punch holes.
2. A band of the fan is searched: radii between :data:`BAND` fractions of the covered depth and
   beam angles within 85 % of the half-opening. In apical views this holds the ventricles and
   leaves out the atria (far field) and the near-field clutter; in short-axis views it holds the LV
   ring.
3. One threshold for the whole loop, Otsu's between blood and tissue over the band's pixels of every
   frame, so areas in different frames are comparable.
4. The *seed* is the largest region that is dark in at least half of the frames, its size discounted
   by the share of its outline on the band's sides (a chamber is walled in; dark ground beside the
   heart runs along the fan's sides). In each frame the cavity is the union of the dark connected
   regions that touch the seed, counted within 10 mm of the seed: regions that never meet it (the
   other ventricle across a septum) do not count, a chamber joined to it through a dropout counts
   only near it, and the cavity may grow and shrink freely around it.

Otsu's threshold is a twenty-line histogram computation, written here rather than taken from
scikit-image (a development-only dependency of sono3d).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sono3d.errors import InputError

__all__ = ["cavity_areas", "choose_phases", "otsu_threshold", "BAND"]

BAND = (0.08, 0.62)
_SMOOTH_MM = 2.0
_ANGLE_FRACTION = 0.85
_REACH_MM = 10.0


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
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[1:][int(np.argmax(between[:-1]))])


def cavity_areas(views: np.ndarray, coverage: np.ndarray, pixel_mm: float, opening_deg: float,
                 band: tuple[float, float] = BAND) -> tuple[np.ndarray, np.ndarray]:
    """Blood-pool area of each frame (mm^2) and the cavity masks.

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
        Radii searched, as fractions of the covered depth.

    Returns
    -------
    areas_mm2 : ndarray [N]
    cavity : ndarray [N, H, W] bool
    """
    v = np.asarray(views, dtype=np.float32)
    N, H, W = v.shape
    rows, cols = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    lat, ax = cols - (W - 1) / 2.0, rows
    r = np.hypot(lat, ax)
    theta = np.abs(np.arctan2(lat, ax))
    depth = float(r[coverage].max()) if coverage.any() else 0.0
    roi = (coverage & (r >= band[0] * depth) & (r <= band[1] * depth)
           & (theta <= _ANGLE_FRACTION * np.deg2rad(opening_deg) / 2))
    if roi.sum() < 16:
        raise InputError("the covered fan is too small to find the heart's cavity in it")
    sigma = _SMOOTH_MM / pixel_mm
    # Smooth inside the coverage only (normalised convolution), so the black outside does not
    # darken the fan's rim.
    w = ndi.gaussian_filter(coverage.astype(np.float32), sigma)
    smooth = np.stack([ndi.gaussian_filter(f * coverage, sigma) for f in v]) / np.maximum(w, 1e-6)
    t = otsu_threshold(smooth[:, roi])
    dark = (smooth < t) & roi
    persistent = dark.mean(0) >= 0.5
    lab, n = ndi.label(persistent)
    if n == 0:
        seed = roi
    else:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
        # A chamber is walled in; dark ground beside the heart runs along the fan's sides. Each
        # region's size counts less by the share of its outline that lies on the band's sides.
        limit = _ANGLE_FRACTION * np.deg2rad(opening_deg) / 2
        side = roi & (theta >= limit - 1.5 / np.maximum(r, 1.0))
        rim = persistent & ~ndi.binary_erosion(persistent)
        on_side = np.bincount(lab[rim & side], minlength=n + 1)[1:]
        outline = np.maximum(np.bincount(lab[rim], minlength=n + 1)[1:], 1)
        score = sizes * np.clip(1.0 - 2.0 * on_side / outline, 0.0, 1.0)
        seed = lab == (1 + int(np.argmax(score if score.max() > 0 else sizes)))
    # count only near the seed: a neighbouring chamber that a dropout joins to it does not count whole
    reach = ndi.binary_dilation(seed, iterations=max(1, int(round(_REACH_MM / pixel_mm))))
    cavity = np.zeros_like(dark)
    for i in range(N):
        lab_i, n_i = ndi.label(dark[i])
        touching = np.unique(lab_i[seed & dark[i]])
        touching = touching[touching > 0]
        cavity[i] = np.isin(lab_i, touching) & reach
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
