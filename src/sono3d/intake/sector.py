"""Finding the imaging sector (the fan) of a phased- or curvilinear-array echo, in pixels.

A scanner's screen shows the fan on a dark background with text, an ECG trace, colour bars, icons,
calipers and depth markers around it. The fan is found in five steps (``docs/echo_intake.md``):

1. **Content map.** One frame as it is; for a cine, the 90th percentile of each pixel over (up to
   16 of) its frames, so a cavity that is dark in one frame is filled in by the others, with
   *static* pixels removed (temporal std below :data:`STATIC_STD`: burnt-in text, markers and icons
   never change, speckle always does).
2. **Region.** Pixels brighter than the background by 2.5 grey levels (or three times the
   background's noise), closed and opened with a disk of about 1/120 of the image size (speckle
   gaps closed; thin text, dotted depth markers and ECG lines cut off), holes filled. The largest
   connected component is kept, with any piece at least 2 % of its size within 6 % of the image
   size of it (a dark band across the fan splits it). A DICOM ultrasound region box bounds the search.
3. **Edges.** The region's boundary pixels (those on the picture's border excluded, so a fan cut by
   the frame still works) go to a sequential RANSAC for up to eight straight lines; near-parallel
   lines a few pixels apart are merged (the outermost is the edge). Every pair that meets at an
   apex behind the region is a candidate fan: its far radius is the one most angular bins of the
   boundary end at, its near radius (curvilinear probes) where the boundary starts in bins it
   crosses twice. Candidates that pass the checks below are ranked by how much of their outline
   runs along the region's boundary, plus their IoU with the region, plus the weaker edge's
   straight share. The winner's two edges are refitted to the outer envelope of the boundary near
   them (:func:`_refine_edge`), which fixes the apex to a pixel or two on real captures.
4. **Checks.** Both edges straight over a quarter of their length, the far arc at one radius in
   40 % of the angular bins the picture does not cut (this is what tells a fan from a rectangle or
   a photograph), 85 % of the region inside the fan and the fan at least half filled. Otherwise
   :class:`~sono3d.errors.InputError` says which check failed for the best candidate.
5. **DICOM depth.** With an ultrasound region box the far arc goes down to the box (the scanner's
   imaged depth), also where the far field is black.

Assumptions: square pixels; the fan is one bright-ish region (or a few pieces) larger than any
overlay; its side edges are straight and meet at the apex; a curvilinear probe's face lies at least
12 % of the depth below its virtual apex (a shorter dark gap is a phased array's near field); the
background is darker than the fan's dimmest speckle over at least part of each edge.

The two-point RANSAC is written here (twenty lines) rather than taken from scikit-image, which is
only a development dependency of sono3d and whose RANSAC API is changing (``estimate`` deprecated
for ``from_estimate`` in 0.26).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from sono3d.errors import InputError
from sono3d.types import Sector

__all__ = ["FanFit", "find_sector", "content_map", "sector_region", "STATIC_STD"]

STATIC_STD = 0.004  # about one 8-bit grey level
_TIME_SAMPLES = 16  # frames used for the cine content map
_N_BINS = 48
_MIN_PRECISION = 0.85
_MIN_RECALL = 0.5
_MIN_ARC = 0.4
_MIN_EDGE = 0.25
_CURVILINEAR = 0.12


@dataclass(frozen=True)
class FanFit:
    """A fan found in an image, in that image's pixels.

    Attributes
    ----------
    apex_px : (float, float)
        ``(col, row)`` of the apex; may lie outside the image (above it for a curvilinear probe or
        a cropped capture).
    angle_deg : float
        Full opening angle.
    tilt_deg : float
        Direction of the central beam, from +row (straight down) towards +col.
    radius_px : (float, float)
        ``(r_min, r_max)`` from the apex in pixels; ``r_min`` is 0 for a phased array.
    clipped : bool
        Part of the fan lies outside the image (or outside the DICOM region box).
    quality : dict
        Fit figures: ``edge_inliers`` (pixels on each straight edge), ``arc_fraction``,
        ``precision``, ``recall``.
    """

    apex_px: tuple[float, float]
    angle_deg: float
    tilt_deg: float
    radius_px: tuple[float, float]
    clipped: bool = False
    quality: dict[str, Any] = field(default_factory=dict, compare=False)

    def polar(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Radius (px) and beam angle (radians, 0 on the central beam, + towards +col after tilt) per pixel."""
        H, W = shape
        rows, cols = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
        return _polar(cols, rows, self.apex_px, self.tilt_deg)

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean ``(H, W)``: pixels inside the fan."""
        r, a = self.polar(shape)
        return (r >= self.radius_px[0]) & (r <= self.radius_px[1]) & (np.abs(a) <= np.deg2rad(self.angle_deg) / 2)

    def outline(self, n: int = 96) -> np.ndarray:
        """The fan's outline ``[K, 2]`` as ``(col, row)`` points (closed: first point repeated)."""
        half = np.deg2rad(self.angle_deg) / 2
        t = np.linspace(-half, half, n)
        r0, r1 = self.radius_px
        arc1 = np.stack([np.full(n, r1), t], 1)
        arc0 = np.stack([np.full(n, r0), t[::-1]], 1) if r0 > 0 else np.array([[0.0, half]])
        rt = np.concatenate([arc1, arc0, arc1[:1]])
        a = rt[:, 1] + np.deg2rad(self.tilt_deg)
        return np.stack([self.apex_px[0] + rt[:, 0] * np.sin(a), self.apex_px[1] + rt[:, 0] * np.cos(a)], 1)

    def sector(self, pixel_mm: float) -> Sector:
        """The fan as a :class:`~sono3d.types.Sector` for square pixels of ``pixel_mm``."""
        return Sector(apex_px=tuple(float(v) for v in self.apex_px), angle_deg=float(self.angle_deg),
                      radius_mm=(float(self.radius_px[0] * pixel_mm), float(self.radius_px[1] * pixel_mm)),
                      tilt_deg=float(self.tilt_deg))

    def to_dict(self) -> dict[str, Any]:
        return {"apex_px": [float(v) for v in self.apex_px], "angle_deg": float(self.angle_deg),
                "tilt_deg": float(self.tilt_deg), "radius_px": [float(v) for v in self.radius_px],
                "clipped": bool(self.clipped), "quality": dict(self.quality)}


def _polar(cols: np.ndarray, rows: np.ndarray, apex: tuple[float, float], tilt_deg: float
           ) -> tuple[np.ndarray, np.ndarray]:
    dc, dr = cols - apex[0], rows - apex[1]
    a = np.arctan2(dc, dr) - np.deg2rad(tilt_deg)
    return np.hypot(dc, dr), (a + np.pi) % (2 * np.pi) - np.pi


def _disk(r: int) -> np.ndarray:
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r


def content_map(grey: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32: what each pixel shows over the clip (see step 1 of the module notes).

    Parameters
    ----------
    grey : ndarray [N, H, W]
        Frames in [0, 1].
    """
    g = np.asarray(grey, dtype=np.float32)
    if g.ndim == 2:
        return g
    if g.shape[0] < 3:
        return g.max(0)
    idx = np.unique(np.linspace(0, g.shape[0] - 1, min(_TIME_SAMPLES, g.shape[0])).round().astype(int))
    s = g[idx]
    k = int(round(0.9 * (len(s) - 1)))
    c = np.partition(s, k, axis=0)[k]
    static = s.std(0) < STATIC_STD
    return np.where(static, 0.0, c).astype(np.float32)


def sector_region(content: np.ndarray, roi: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, int]:
    """The largest bright-ish connected region of a content map (step 2), and the disk radius used.

    Parameters
    ----------
    content : ndarray [H, W]
    roi : (x0, y0, x1, y1) or None
        Inclusive pixel box to search in (a DICOM ultrasound region).
    """
    c = np.asarray(content, dtype=np.float32)
    H, W = c.shape
    inside = np.ones((H, W), dtype=bool)
    if roi is not None:
        x0, y0, x1, y1 = roi
        inside[:] = False
        inside[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = True
    vals = c[inside]
    bg = float(np.percentile(vals, 2))
    dark = vals[vals <= np.percentile(vals, 30)]
    noise = float(np.median(np.abs(dark - np.median(dark)))) * 1.4826 if dark.size else 0.0
    # half-way between grey levels, so float rounding of 8-bit data cannot tip a level across it
    step = max(2.5 / 255.0, 3.0 * noise)
    m = (c > bg + step) & inside
    r = max(2, int(round(min(H, W) / 120)))
    pad = r + 1
    # pad so that closing does not glue the region to the image border
    m = ndi.binary_closing(np.pad(m, pad), _disk(r))[pad:-pad, pad:-pad]
    m = ndi.binary_fill_holes(m)
    m = ndi.binary_opening(m, _disk(r)) & inside
    lab, n = ndi.label(m)
    if n == 0:
        return np.zeros((H, W), dtype=bool), r
    sizes = np.bincount(lab.ravel())[1:]
    big = 1 + int(np.argmax(sizes))
    main = lab == big
    # A dark band across the fan (a fluid layer under a bright near field) splits it in pieces:
    # pieces at least 2 % of the largest and within a gap of it belong to the fan too.
    pieces = [k + 1 for k in range(n) if k + 1 != big and sizes[k] >= 0.02 * sizes[big - 1]]
    if not pieces:
        return main, r
    near = ndi.distance_transform_edt(~main) <= 0.06 * max(H, W)
    keep = [k for k in pieces if near[lab == k].any()]
    return main | np.isin(lab, keep), r


@dataclass(frozen=True)
class _Line:
    point: np.ndarray  # (col, row) on the line
    direction: np.ndarray  # unit
    inliers: np.ndarray  # [K, 2] points


def _tls(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = pts.mean(0)
    _, _, vt = np.linalg.svd(pts - c, full_matrices=False)
    return c, vt[0]


def _ransac_lines(pts: np.ndarray, rng: np.random.Generator, tol: float, min_inliers: int, n_lines: int = 8,
                  trials: int = 400) -> list[_Line]:
    """Up to ``n_lines`` straight runs of boundary points, strongest first (sequential RANSAC)."""
    lines: list[_Line] = []
    left = pts.copy()
    for _ in range(n_lines):
        if len(left) < max(min_inliers, 2):
            break
        i = rng.integers(len(left), size=trials)
        j = rng.integers(len(left), size=trials)
        d = left[j] - left[i]
        length = np.hypot(d[:, 0], d[:, 1])
        ok = length > 4 * tol
        if not ok.any():
            break
        p, d, length = left[i][ok], d[ok], length[ok]
        normal = np.stack([-d[:, 1], d[:, 0]], 1) / length[:, None]
        best, best_count = None, -1
        for s in range(0, len(p), 64):  # chunks bound the [trials, points] distance matrix
            dist = np.abs(left @ normal[s:s + 64].T - np.einsum("tk,tk->t", p[s:s + 64], normal[s:s + 64])).T
            counts = (dist < tol).sum(1)
            k = int(np.argmax(counts))
            if counts[k] > best_count:
                best_count, best = int(counts[k]), s + k
        if best_count < min_inliers:
            break
        nrm = normal[best]
        inl = np.abs((left - p[best]) @ nrm) < tol
        for _refit in range(2):
            c, u = _tls(left[inl])
            nrm = np.array([-u[1], u[0]])
            inl = np.abs((left - c) @ nrm) < tol
        if inl.sum() < min_inliers:
            break
        c, u = _tls(left[inl])
        lines.append(_Line(c, u, left[inl]))
        near = np.abs((left - c) @ np.array([-u[1], u[0]])) < 2.5 * tol
        left = left[~near]
    return lines


def _merge_parallel(lines: list[_Line], centroid: np.ndarray, gap: float) -> list[_Line]:
    """One line per edge: near-parallel lines a few pixels apart are pieces of one ragged edge.

    Where speckle reaches the fan's edge the boundary lies on it; where the edge is dark the
    boundary runs a few pixels inside, parallel to it. The outermost piece (farthest from the
    region's centre) is the edge; it takes the inliers of all pieces as its evidence.
    """
    out: list[_Line] = []
    used = [False] * len(lines)
    for i, a in enumerate(lines):
        if used[i]:
            continue
        group = [a]
        n = np.array([-a.direction[1], a.direction[0]])
        for j in range(i + 1, len(lines)):
            b = lines[j]
            if not used[j] and abs(a.direction @ b.direction) > np.cos(np.deg2rad(4.0)) \
                    and abs((b.point - a.point) @ n) < gap:
                group.append(b)
                used[j] = True
        outer = max(group, key=lambda ln: abs((centroid - ln.point) @ np.array([-ln.direction[1], ln.direction[0]])))
        out.append(_Line(outer.point, outer.direction, np.concatenate([ln.inliers for ln in group])))
    return out


def _intersect(a: _Line, b: _Line) -> np.ndarray | None:
    m = np.stack([a.direction, -b.direction], 1)
    if abs(np.linalg.det(m)) < np.sin(np.deg2rad(8.0)):
        return None
    t = np.linalg.solve(m, b.point - a.point)
    return a.point + t[0] * a.direction


def _outside(cols: np.ndarray, rows: np.ndarray, inside: np.ndarray) -> np.ndarray:
    H, W = inside.shape
    ci, ri = np.round(cols).astype(np.int64), np.round(rows).astype(np.int64)
    out = (ci < 0) | (ri < 0) | (ci >= W) | (ri >= H)
    ok = ~out
    out[ok] = ~inside[ri[ok], ci[ok]]
    return out


def _arc_radius(rmax: np.ndarray) -> tuple[float, float]:
    """The far arc's radius: the radius that most angular bins end at (within 2 %), and their share.

    Bins whose far end is dark (dropout, a fading far field) end short at scattered radii; the bins
    that see the arc agree with each other.
    """
    v = np.sort(rmax)
    w = np.maximum(3.0, 0.02 * v)
    counts = np.searchsorted(v, v + w, side="right") - np.searchsorted(v, v - w, side="left")
    k = len(v) - 1 - int(np.argmax(counts[::-1]))  # the largest radius among the best-supported
    near = np.abs(v - v[k]) <= w[k]
    return float(np.median(v[near])), float(counts[k] / len(v))


@dataclass(frozen=True)
class _Evidence:
    """What candidate fans are scored against (pixel coordinates as ``(col, row)``)."""

    boundary: np.ndarray  # [B, 2] every boundary pixel of the region (frame-cut ones too)
    tree: cKDTree  # of ``boundary``
    sample: np.ndarray  # [S, 2] region pixels on a grid of every ``stride``-th pixel
    grid: np.ndarray  # [G, 2] picture pixels (inside the ROI) on the same kind of grid
    stride: int
    centroid: np.ndarray
    inside: np.ndarray  # [H, W] bool: the picture (or the DICOM region box)


def _candidate(a: _Line, b: _Line, ev: _Evidence, margin: float, shift: float = 0.5) -> FanFit | None:
    """The fan bounded by lines ``a`` and ``b`` that best explains the region, or None.

    ``shift`` moves the edges and the far arc out by that many pixels: 0.5 for RANSAC lines, which
    run through the middle of their inliers (boundary pixel centres, half a pixel inside the edge on
    average); 0 for refitted edges, which follow the outermost boundary pixels.
    """
    centroid, inside = ev.centroid, ev.inside
    apex = _intersect(a, b)
    if apex is None:
        return None
    towards = centroid - apex
    if np.hypot(*towards) < 1e-6:
        return None
    rays = []
    for ln in (a, b):
        u = ln.direction if ln.direction @ towards > 0 else -ln.direction
        # the edge's inliers must lie ahead of the apex, on the ray
        if np.mean((ln.inliers - apex) @ u > 0) < 0.8:
            return None
        rays.append(u)
    ua, ub = rays
    opening = float(np.degrees(np.arccos(np.clip(ua @ ub, -1.0, 1.0))))
    if not 15.0 <= opening <= 170.0:
        return None
    bis = ua + ub
    bis /= np.linalg.norm(bis)
    # the region's centre must lie inside the wedge
    cos_half = np.cos(np.deg2rad(opening / 2))
    if (towards / np.linalg.norm(towards)) @ bis < cos_half:
        return None
    # moving each edge out by ``shift`` moves the apex back along the bisector by shift / sin(half angle)
    apex = apex - bis * shift / np.sin(np.deg2rad(opening / 2))
    tilt = float(np.degrees(np.arctan2(bis[0], bis[1])))
    # the region's largest and smallest radius per angular bin lie on its boundary
    r, t = _polar(ev.boundary[:, 0], ev.boundary[:, 1], (apex[0], apex[1]), tilt)
    half = np.deg2rad(opening) / 2
    inw = np.abs(t) <= half
    if inw.sum() < 20:
        return None
    bins = np.clip(((t[inw] + half) / (2 * half) * _N_BINS).astype(np.int64), 0, _N_BINS - 1)
    rmax = np.full(_N_BINS, -np.inf)
    rmin = np.full(_N_BINS, np.inf)
    np.maximum.at(rmax, bins, r[inw])
    np.minimum.at(rmin, bins, r[inw])
    filled = np.isfinite(rmax)
    if filled.sum() < _N_BINS // 2:
        return None
    centres = -half + (np.arange(_N_BINS) + 0.5) * (2 * half / _N_BINS) + np.deg2rad(tilt)
    probe_r = np.where(filled, rmax, 0) + margin
    clipped_bin = _outside(apex[0] + probe_r * np.sin(centres), apex[1] + probe_r * np.cos(centres), inside) & filled
    # a bin whose largest radius stops short of the frame shows the arc
    free = filled & ~clipped_bin
    if free.sum() >= 3:
        r1, arc = _arc_radius(rmax[free])
    else:
        r1, arc = float(rmax[filled].max()), 1.0
    # the probe-face arc of a curvilinear probe: the region's smallest radius, where the frame does not cut it
    probe_r0 = np.maximum(np.where(filled, rmin, 0) - margin, 0)
    cut0 = _outside(apex[0] + probe_r0 * np.sin(centres), apex[1] + probe_r0 * np.cos(centres), inside) & filled
    # only bins the boundary crosses twice (near and far) say where the fan starts: in a phased
    # array's middle bins the only boundary is the far arc
    near = filled & ~cut0 & (rmin < 0.8 * rmax)
    r0 = float(np.percentile(rmin[near], 25)) if near.sum() >= 3 else 0.0
    # A curvilinear probe's face lies a good way below its virtual apex (a quarter of the depth and
    # more); a shorter gap is a phased array's dark near field, and its depth counts from the apex.
    if r0 < _CURVILINEAR * r1:
        r0 = 0.0
    if r1 <= r0 + 4:
        return None
    fan = FanFit(apex_px=(float(apex[0]), float(apex[1])), angle_deg=opening, tilt_deg=tilt,
                 radius_px=(r0, r1 + shift), clipped=bool(clipped_bin.any() or free.sum() < 3))
    # overlap of fan and region, both counted on a grid of every ``stride``-th pixel
    rs, ts = _polar(ev.sample[:, 0], ev.sample[:, 1], fan.apex_px, tilt)
    inter = float(np.count_nonzero((np.abs(ts) <= half) & (rs >= fan.radius_px[0]) & (rs <= fan.radius_px[1])))
    rg, tg = _polar(ev.grid[:, 0], ev.grid[:, 1], fan.apex_px, tilt)
    fan_area = float(np.count_nonzero((rg >= fan.radius_px[0]) & (rg <= fan.radius_px[1]) & (np.abs(tg) <= half)))
    n_region = float(len(ev.sample))
    precision = inter / max(n_region, 1.0)
    recall = min(inter / max(fan_area, 1.0), 1.0)
    iou = inter / max(fan_area + n_region - inter, 1.0)
    edge_len = max(r1 - r0, 1.0)
    # how much of the fan's outline (where it lies in the picture) runs along the region's boundary
    dense = _outline_points(fan)
    dense = dense[~_outside(dense[:, 0], dense[:, 1], inside)]
    support = float(np.mean(np.isfinite(ev.tree.query(dense, distance_upper_bound=2.5)[0]))) if len(dense) else 0.0
    quality = {"edge_inliers": [int(len(a.inliers)), int(len(b.inliers))],
               "edge_fraction": [round(len(a.inliers) / edge_len, 3), round(len(b.inliers) / edge_len, 3)],
               "arc_fraction": round(arc, 3), "outline_support": round(support, 3), "precision": round(precision, 3), "recall": round(recall, 3), "iou": round(iou, 3)}
    return FanFit(fan.apex_px, fan.angle_deg, fan.tilt_deg, fan.radius_px, fan.clipped, quality)


def _outline_points(fan: FanFit) -> np.ndarray:
    """Points about one pixel apart along the fan's outline, ``[K, 2]`` as ``(col, row)``."""
    r0, r1 = fan.radius_px
    half = np.deg2rad(fan.angle_deg) / 2
    radial = np.arange(r0, r1, 1.0)
    arcs = [np.stack([np.full(m, rad), np.linspace(-half, half, m)], 1)
            for rad in ((r0, r1) if r0 > 0 else (r1,)) for m in [max(int(2 * half * rad), 2)]]
    rt = np.concatenate([np.stack([radial, np.full_like(radial, -half)], 1),
                         np.stack([radial, np.full_like(radial, half)], 1), *arcs])
    a = rt[:, 1] + np.deg2rad(fan.tilt_deg)
    return np.stack([fan.apex_px[0] + rt[:, 0] * np.sin(a), fan.apex_px[1] + rt[:, 0] * np.cos(a)], 1)


def _score(fit: FanFit) -> float:
    """Rank candidate fans: outline along the region's boundary, fan and region overlapping, and
    the weaker edge's straight share (a fan has two straight edges)."""
    q = fit.quality
    return q["outline_support"] + q["iou"] + min(q["edge_fraction"])


def _refine_edge(line: _Line, fan: FanFit, pts: np.ndarray, step: float = 10.0) -> _Line:
    """One side edge of ``fan`` refitted to the outer envelope of the boundary near it.

    RANSAC's inliers are the boundary pixels within 1.5 px of a line; where speckle reaches the edge
    only here and there they can tilt it by a degree, which moves the apex by several pixels. The
    fan's edge is the outermost boundary: along the edge, in bins of ``step`` px, the boundary pixel
    farthest out is taken, and a line is fitted to those, dropping bins that end more than 2 px
    inside it (a dark stretch of the edge) or 4 px outside it (a marker joined to the fan).
    """
    apex = np.asarray(fan.apex_px)
    t = np.deg2rad(fan.tilt_deg)
    bis = np.array([np.sin(t), np.cos(t)])
    u = line.direction if line.direction @ bis > 0 else -line.direction
    n = np.array([-u[1], u[0]])
    if n @ bis > 0:
        n = -n  # outward, away from the fan's centre
    d = pts - apex
    along, off = d @ u, d @ n
    lo, hi = fan.radius_px[0] + 0.1 * (fan.radius_px[1] - fan.radius_px[0]), 0.95 * fan.radius_px[1]
    near = (along > lo) & (along < hi) & (off > -15.0) & (off < 8.0)
    if near.sum() < 10:
        return line
    k = ((along[near] - lo) // step).astype(np.int64)
    env = np.full(k.max() + 1, -np.inf)
    np.maximum.at(env, k, off[near])
    ok = np.isfinite(env)
    s_k = lo + (np.arange(len(env)) + 0.5) * step
    s_k, o_k = s_k[ok], env[ok]
    if len(s_k) < 4:
        return line
    keep = np.ones(len(s_k), dtype=bool)
    for _ in range(4):
        beta, alpha = np.polyfit(s_k[keep], o_k[keep], 1)
        res = o_k - (alpha + beta * s_k)
        new_keep = (res > -2.0) & (res < 4.0)
        if new_keep.sum() < 4 or (new_keep == keep).all():
            break
        keep = new_keep
    p0 = apex + alpha * n
    direction = u + beta * n
    direction /= np.linalg.norm(direction)
    return _Line(p0, direction, line.inliers)


def _failure(fit: FanFit) -> str | None:
    q = fit.quality
    if min(q["edge_fraction"]) < _MIN_EDGE:
        return f"its side edges are not straight (straight over {min(q['edge_fraction']):.0%} of their length)"
    if q["arc_fraction"] < _MIN_ARC:
        return f"its far edge is not an arc about the apex ({q['arc_fraction']:.0%} of it)"
    if q["precision"] < _MIN_PRECISION:
        return f"the bright region is not fan-shaped ({q['precision']:.0%} of it inside the best fan)"
    if q["recall"] < _MIN_RECALL:
        return f"the best fan is mostly empty ({q['recall']:.0%} of it bright)"
    return None


def find_sector(grey: np.ndarray, roi: tuple[int, int, int, int] | None = None, seed: int = 0) -> FanFit:
    """Find the imaging fan of an echo image or cine loop.

    Parameters
    ----------
    grey : ndarray [N, H, W] or [H, W]
        Frames in [0, 1] (colour already turned to grey; coloured pixels may stay, the fan is
        found from brightness).
    roi : (x0, y0, x1, y1) or None
        Inclusive pixel box that holds the fan (a DICOM ultrasound region).
    seed : int
        Seeds the RANSAC draws (the result is the same for the same input and seed).

    Returns
    -------
    FanFit

    Raises
    ------
    InputError
        No fan: nothing bright, no two straight edges, no arc, or a region that is not fan-shaped.
    """
    g = np.asarray(grey, dtype=np.float32)
    if g.ndim == 2:
        g = g[None]
    c = content_map(g)
    H, W = c.shape
    region, r = sector_region(c, roi)
    inside = np.ones((H, W), dtype=bool)
    if roi is not None:
        inside[:] = False
        inside[max(roi[1], 0):roi[3] + 1, max(roi[0], 0):roi[2] + 1] = True
    area = int(region.sum())
    if area < 0.02 * inside.sum():
        raise InputError("no imaging sector found (nothing bright enough covers 2% of the image)")
    edge = region & ~ndi.binary_erosion(region, border_value=0)
    # boundary pixels on the frame (or the region box) are where the picture was cut, not fan edges
    near_border = ~ndi.binary_erosion(inside, iterations=2, border_value=0)
    rows, cols = np.nonzero(edge & ~near_border)
    pts = np.stack([cols, rows], 1).astype(np.float64)
    if len(pts) < 20:
        raise InputError("no imaging sector found (the bright region fills the picture: no fan edges)")
    rng = np.random.default_rng(seed)
    min_inliers = max(15, int(0.06 * np.sqrt(area)))
    lines = _ransac_lines(pts, rng, tol=1.5, min_inliers=min_inliers)
    if len(lines) < 2:
        raise InputError("no imaging sector found (fewer than two straight edges)")
    rr, cc = np.nonzero(region)
    centroid = np.array([cc.mean(), rr.mean()])
    lines = _merge_parallel(lines, centroid, gap=3.0 * r)
    stride = max(1, int(np.ceil(np.sqrt(H * W / 40000))))
    on_grid = (rr % stride == 0) & (cc % stride == 0)
    gr, gc = np.nonzero(inside[::stride, ::stride])
    br, bc = np.nonzero(edge)
    boundary = np.stack([bc, br], 1).astype(np.float64)
    ev = _Evidence(boundary=boundary, tree=cKDTree(boundary), sample=np.stack([cc[on_grid], rr[on_grid]], 1).astype(np.float64),
                   grid=np.stack([gc, gr], 1).astype(np.float64) * stride, stride=stride, centroid=centroid, inside=inside)
    candidates: list[FanFit] = []
    pairs: list[tuple[_Line, _Line]] = []
    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            cand = _candidate(lines[i], lines[j], ev, 2.0 * r)
            if cand is not None:
                candidates.append(cand)
                pairs.append((lines[i], lines[j]))
    if not candidates:
        raise InputError("no imaging sector found (no two straight edges meet at an apex behind the bright region)")
    # the best candidate that passes every check; if none does, the best one says why not
    valid = [c for c in candidates if _failure(c) is None]
    if not valid:
        raise InputError(f"no imaging sector found ({_failure(max(candidates, key=_score))})")
    best = max(valid, key=_score)
    a, b = pairs[candidates.index(best)]
    refined = _candidate(_refine_edge(a, best, pts), _refine_edge(b, best, pts), ev, 2.0 * r, shift=0.0)
    if refined is not None and _failure(refined) is None:
        best = refined
    if roi is not None and inside.mean() < 0.95:
        best = _depth_from_region(best, roi)
    return best


def _depth_from_region(fit: FanFit, roi: tuple[int, int, int, int]) -> FanFit:
    """Extend the fan's depth to where its central beam leaves the DICOM region box.

    The region box bounds the scan; its far side is the imaged depth even where the far field is
    black (an obstetric scan with nothing in it shows only the near field).
    """
    x0, y0, x1, y1 = (float(v) for v in roi)
    u = np.array([np.sin(np.deg2rad(fit.tilt_deg)), np.cos(np.deg2rad(fit.tilt_deg))])
    a = np.asarray(fit.apex_px)
    exits = []
    for k, lo, hi in ((0, x0 - 0.5, x1 + 0.5), (1, y0 - 0.5, y1 + 0.5)):
        if abs(u[k]) > 1e-9:
            exits.append(max((lo - a[k]) / u[k], (hi - a[k]) / u[k]))
    r_box = min(exits)
    if r_box <= fit.radius_px[1]:
        return fit
    q = dict(fit.quality, depth_from="ultrasound region", depth_seen_px=round(fit.radius_px[1], 1))
    return FanFit(fit.apex_px, fit.angle_deg, fit.tilt_deg, (fit.radius_px[0], float(r_box)), fit.clipped, q)
