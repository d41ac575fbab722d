"""Template correspondences by robust optimal transport: the deformation labels S2MNet learns.

S2MNet (paper eq. 4) labels every training mesh with the displacement of a reference ("template")
heart's vertices onto it. The assignment between template vertices ``p_i`` (weights ``α_i``) and
target vertices ``q_j`` (weights ``β_j``) is entropic optimal transport with KL-relaxed marginals,

    min_π  Σ_ij π_ij |p_i - q_j|² / 2 + ε KL(π | α⊗β) + ρ KL(π 1 | α) + ρ KL(πᵀ 1 | β),
    ε = blur², ρ = reach²   (geomloss's convention: blur σ and reach τ in mm),

solved with geomloss's ε-scaling Sinkhorn (``SamplesLoss("sinkhorn", p=2, ...)``, tensorized, CPU).
The plan is recovered from the dual potentials in log space,

    log π_ij = log α_i + log β_j + (f_i + g_j - C_ij) / ε,   C_ij = |p_i - q_j|² / 2,

and gives the soft barycentric map ``v_i = Σ_j π_ij (q_j - p_i) / Σ_j π_ij`` and a per-point
confidence ``Σ_j π_ij / α_i`` (about 1 for a point with a counterpart, near 0 for one that the
relaxed marginal lets go). Matching is done label by label (LV to LV, ...) so chambers cannot swap.

Refinement (the paper trains a PointPWC-Net and fine-tunes with a Gaussian-kernel spline) is done
here on the CPU by alternating matching and smoothing, coarse to fine:

1. a global transform (affine by default) fitted by weighted least squares to the OT matches at a
   few coarse blurs;
2. non-rigid levels with a decreasing blur: match the current deformed template, smooth the
   residual displacements with a confidence-weighted Gaussian kernel whose scale follows the blur
   (:func:`sono3d.heart.spline.gaussian_smooth`), add them to the field.

This is coherent-point-drift in spirit: the OT matches say where the surface is, the kernel
smoothing keeps the field coherent, so neighbouring vertices move together and slide along the
surface only as much as the target's shape demands. The template's own vertices are the moving
set, so the result is a displacement ``[V, 3]`` of exactly the template's vertices.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from sono3d.errors import InputError

__all__ = [
    "CorrespondOptions",
    "Correspondence",
    "Match",
    "transport_plan",
    "ot_match",
    "ot_match_local",
    "grid_reduce",
    "fit_global",
    "correspond_points",
    "mesh_points_labels_weights",
    "correspond_meshes",
    "template_hash",
]

_GLOBAL_KINDS = ("affine", "similarity", "rigid", "translation", "none")


@dataclass(frozen=True)
class CorrespondOptions:
    """Settings of the template-to-target correspondence (lengths in mm).

    Parameters
    ----------
    blur_mm : float
        Finest OT blur σ (ε = σ²): the scale below which matching stops resolving detail.
    reach_mm : float or None
        Marginal relaxation τ (ρ = τ²): points farther than a few τ from any counterpart lose
        their mass instead of pulling the match. ``None`` is balanced OT.
    coarse_blur_mm : float
        Blur of the first global step; the global steps halve it.
    global_transform : str
        ``"affine"``, ``"similarity"``, ``"rigid"``, ``"translation"`` or ``"none"``.
    global_steps : int
        Number of match-and-fit steps of the global transform.
    levels : int
        Non-rigid match-and-smooth levels, blur geometric from ``nonrigid_blur_mm`` to ``blur_mm``.
    nonrigid_blur_mm : float
        Blur of the first non-rigid level.
    spline_factor : float
        Kernel scale of each level's smoothing spline as a multiple of its blur.
    spline_min_mm : float
        Smallest kernel scale of the spline.
    final_iters : int
        Extra match-and-smooth iterations at the finest blur.
    scaling : float
        geomloss ε-scaling ratio (closer to 1: slower and more accurate annealing).
    anneal_factor : float
        Non-rigid levels start their ε-annealing at (anneal_factor × blur)² instead of the
        diameter², since the template is already close (see :func:`ot_match_local`).
    polish_iters : int
        Extra Sinkhorn iterations at the final ε after geomloss's annealing (geomloss does a
        single iteration per ε).
    pool_factor : float
        Each non-rigid level pools both point sets on a grid of cell ``pool_factor × blur``
        (:func:`grid_reduce`) before matching; the spline carries the result to every vertex.
    weights : str
        ``"area"`` (a vertex carries a third of its triangles' area; meshings of different
        density match fairly) or ``"uniform"``.
    """

    blur_mm: float = 1.0
    reach_mm: float | None = 20.0
    coarse_blur_mm: float = 16.0
    global_transform: str = "affine"
    global_steps: int = 3
    levels: int = 5
    nonrigid_blur_mm: float = 8.0
    spline_factor: float = 1.5
    spline_min_mm: float = 2.0
    final_iters: int = 1
    scaling: float = 0.6
    anneal_factor: float = 1.5
    polish_iters: int = 2
    pool_factor: float = 1.0
    weights: str = "area"

    def __post_init__(self) -> None:
        if not self.blur_mm > 0 or not self.coarse_blur_mm > 0 or not self.nonrigid_blur_mm > 0:
            raise InputError("blur must be positive (mm)")
        if self.reach_mm is not None and not self.reach_mm > 0:
            raise InputError(f"reach must be positive (mm) or None, got {self.reach_mm}")
        if self.global_transform not in _GLOBAL_KINDS:
            raise InputError(f"global_transform must be one of {_GLOBAL_KINDS}, got {self.global_transform!r}")
        if self.weights not in ("area", "uniform"):
            raise InputError(f"weights must be 'area' or 'uniform', got {self.weights!r}")
        if not 0.0 < self.scaling < 1.0:
            raise InputError(f"scaling must be in (0, 1), got {self.scaling}")
        if min(self.global_steps, self.levels, self.final_iters, self.polish_iters) < 0:
            raise InputError("step and level counts must be >= 0")
        if not self.spline_factor > 0 or not self.spline_min_mm > 0:
            raise InputError("spline scales must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Match:
    """Soft barycentric OT match of moving points onto a target.

    Attributes
    ----------
    target : ndarray [N, 3]
        ``Σ_j π_ij q_j / Σ_j π_ij`` (mm); the point itself where it has no counterpart.
    confidence : ndarray [N]
        ``Σ_j π_ij / α_i`` (0 where the label is absent from the target).
    """

    target: np.ndarray
    confidence: np.ndarray


@dataclass
class Correspondence:
    """Result of one template-to-target correspondence.

    Attributes
    ----------
    displacement : ndarray [V, 3]
        Displacement of each template vertex (mm): deformed = template + displacement.
    confidence : ndarray [V]
        Confidence of the last OT match of each vertex.
    global_transform : ndarray [4, 4]
        The global (affine) part, template -> target.
    seconds : float
        Wall time of the computation.
    """

    displacement: np.ndarray
    confidence: np.ndarray
    global_transform: np.ndarray
    seconds: float = 0.0
    history: list = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Optimal transport
# ----------------------------------------------------------------------------------------------

# Cost added between points of different labels (mm²): exp(-_CROSS / ε) is exactly 0 in float32
# for every ε the annealing visits, so no mass ever crosses labels.
_CROSS = 1e8


def _as_points(x: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise InputError(f"{what} must be points [N, 3], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what} contains NaN or infinite coordinates")
    return a


def _as_weights(w: np.ndarray | None, n: int, what: str) -> np.ndarray:
    if w is None:
        return np.ones(n)
    a = np.asarray(w, dtype=np.float64).reshape(-1)
    if len(a) != n or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise InputError(f"{what} must be {n} non-negative finite weights")
    return a


def _as_labels(lab: np.ndarray | None, n: int, what: str) -> np.ndarray:
    if lab is None:
        return np.zeros(n, dtype=np.int64)
    a = np.asarray(lab).reshape(-1)
    if len(a) != n:
        raise InputError(f"{what} must have one label per point ({n}), got {len(a)}")
    return a.astype(np.int64)


def _normalise_per_label(w: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Weights rescaled to total 1 within each label of ``keep``; 0 for the other labels."""
    out = np.zeros(len(w))
    for lab in keep:
        i = labels == lab
        s = w[i].sum()
        out[i] = w[i] / s if s > 0 else 1.0 / i.sum()
    return out


def _problem(x, y, a, b, lx, ly):  # noqa: ANN001, ANN202
    """Validate, keep the labels both sides have, normalise the masses per label."""
    x, y = _as_points(x, "x"), _as_points(y, "y")
    lx, ly = _as_labels(lx, len(x), "labels_x"), _as_labels(ly, len(y), "labels_y")
    a, b = _as_weights(a, len(x), "a"), _as_weights(b, len(y), "b")
    shared = np.intersect1d(lx, ly)
    a = _normalise_per_label(a, lx, shared)
    b = _normalise_per_label(b, ly, shared)
    ix, iy = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    return x, y, a, b, lx, ly, ix, iy


def _cost(x, y):  # noqa: ANN001, ANN202
    """geomloss cost for points carrying their label as a 4th coordinate: |x - y|²/2 within a
    label, + _CROSS across labels. Differences are taken directly (no |x|² + |y|² - 2xy), so
    float32 keeps sub-micrometre precision."""
    import torch

    d = torch.cdist(x[..., :3], y[..., :3], compute_mode="donot_use_mm_for_euclid_dist").square_().mul_(0.5)
    return d + _CROSS * (x[..., None, 3] != y[..., None, :, 3]).to(d.dtype)


def _dense_potentials(X, Y, A, B, blur, reach, scaling, diameter, polish):  # noqa: ANN001, ANN202
    """geomloss's dual potentials (f, g), refined by ``polish`` plain iterations at the final ε
    (geomloss does one iteration per ε of its annealing), and the cost matrix."""
    import torch
    from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=2, blur=float(blur), reach=None if reach is None else float(reach),
                       debias=False, potentials=True, backend="tensorized", scaling=float(scaling),
                       diameter=float(diameter), cost=_cost)
    f, g = loss(A, X, B, Y)
    f, g = f.reshape(-1), g.reshape(-1)
    eps = float(blur) ** 2
    C = _cost(X, Y)
    damp = 1.0 if reach is None else 1.0 / (1.0 + eps / float(reach) ** 2)
    la, lb = A.log(), B.log()
    for _ in range(polish):
        f = -damp * eps * torch.logsumexp(lb[None, :] + (g[None, :] - C) / eps, dim=1)
        g = -damp * eps * torch.logsumexp(la[:, None] + (f[:, None] - C) / eps, dim=0)
    return f, g, C, eps


def _dense_inputs(x, y, a, b, lx, ly):  # noqa: ANN001, ANN202
    import torch

    origin = 0.5 * (x.mean(axis=0) + y.mean(axis=0))  # centring keeps float32 costs exact enough
    X = torch.from_numpy(np.column_stack([x - origin, lx])).float()
    Y = torch.from_numpy(np.column_stack([y - origin, ly])).float()
    span = np.ptp(np.vstack([x, y]), axis=0)
    diameter = float(np.linalg.norm(span)) or 1.0
    return X, Y, torch.from_numpy(a).float(), torch.from_numpy(b).float(), origin, diameter


def transport_plan(
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    blur: float = 1.0,
    reach: float | None = None,
    labels_x: np.ndarray | None = None,
    labels_y: np.ndarray | None = None,
    scaling: float = 0.9,
    polish_iters: int = 50,
) -> np.ndarray:
    """The full entropic (unbalanced) transport plan ``π [N, M]`` (small problems and tests).

    ``log π_ij = log α_i + log β_j + (f_i + g_j - C_ij) / ε`` with geomloss's potentials,
    ``C = |x - y|² / 2`` (+ an infinite cost across labels), ``ε = blur²``; ``reach`` τ gives
    ρ = τ² (``None``: balanced). Masses are normalised to 1 per label.
    """
    import torch

    x, y, a, b, lx, ly, ix, iy = _problem(x, y, a, b, labels_x, labels_y)
    plan = np.zeros((len(x), len(y)))
    if len(ix) == 0 or len(iy) == 0:
        return plan
    X, Y, A, B, _, diameter = _dense_inputs(x[ix], y[iy], a[ix], b[iy], lx[ix], ly[iy])
    with torch.no_grad():
        f, g, C, eps = _dense_potentials(X, Y, A, B, blur, reach, scaling, diameter, polish_iters)
        logpi = A.log()[:, None] + B.log()[None, :] + (f[:, None] + g[None, :] - C) / eps
    plan[np.ix_(ix, iy)] = torch.exp(logpi).double().numpy()
    return plan


def ot_match(
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    blur: float = 1.0,
    reach: float | None = None,
    labels_x: np.ndarray | None = None,
    labels_y: np.ndarray | None = None,
    scaling: float = 0.6,
    polish_iters: int = 3,
) -> Match:
    """Soft barycentric match of points ``x [N, 3]`` onto ``y [M, 3]`` by robust OT (dense).

    One geomloss solve per label, so a point only ever receives mass from points of its own
    label; masses (default uniform) are normalised to 1 per label. The row-normalised plan is
    ``softmax_j(log β_j + (g_j - C_ij)/ε)`` (``f`` cancels) and the confidence is
    ``Σ_j π_ij / α_i = exp(f_i/ε + logsumexp_j(log β_j + (g_j - C_ij)/ε))``. Points whose label
    the target lacks keep their place with confidence 0.
    """
    import torch

    x, y, a, b, lx, ly, ix, iy = _problem(x, y, a, b, labels_x, labels_y)
    target, conf = x.copy(), np.zeros(len(x))
    # One geomloss solve per label: the blocks are independent, and small blocks are far cheaper
    # than one masked N x M problem.
    for lab in np.unique(lx[ix]):
        bx, by = ix[lx[ix] == lab], iy[ly[iy] == lab]
        X, Y, A, B, origin, diameter = _dense_inputs(x[bx], y[by], a[bx], b[by], lx[bx], ly[by])
        with torch.no_grad():
            f, g, C, eps = _dense_potentials(X, Y, A, B, blur, reach, scaling, diameter, polish_iters)
            logits = (B.log() + g / eps)[None, :] - C / eps
            lse = torch.logsumexp(logits, dim=1)
            bary = torch.softmax(logits, dim=1) @ Y[:, :3]
            c = torch.exp(f / eps + lse)
        target[bx] = bary.double().numpy() + origin
        conf[bx] = c.double().numpy()
    return Match(target, conf)


def _segment_logsumexp(vals, idx, n):  # noqa: ANN001, ANN202
    """``out[k] = log Σ_{idx == k} exp(vals)`` (-inf for empty segments)."""
    import torch

    mx = torch.full((n,), -torch.inf, dtype=vals.dtype).scatter_reduce(0, idx, vals, "amax")
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    s = torch.zeros(n, dtype=vals.dtype).index_add_(0, idx, torch.exp(vals - mx[idx]))
    return torch.log(s) + mx


def ot_match_local(
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    blur: float = 1.0,
    reach: float | None = None,
    labels_x: np.ndarray | None = None,
    labels_y: np.ndarray | None = None,
    scaling: float = 0.6,
    anneal_factor: float = 1.5,
    truncate: float = 3.0,
    polish_iters: int = 2,
) -> Match:
    """:func:`ot_match` for points that are already close: a kernel-truncated Sinkhorn.

    Same problem, potentials and update rule as geomloss's (log domain, damping
    ``1 / (1 + ε/ρ)`` of the KL-relaxed marginals), but only over the same-label pairs closer
    than ``truncate × anneal_factor × blur`` (KD-tree), with ε annealed from
    ``(anneal_factor × blur)²`` down to ``blur²`` by ``scaling²`` per step, then ``polish_iters``
    more iterations. The pairs left out carry a kernel weight below ``exp(-truncate² / 2)`` at the
    first ε; a point with no pair within the radius keeps its place with confidence 0. The cost is
    linear in the number of pairs instead of N × M, which makes the fine levels of a 5,000-vertex
    template affordable on a CPU.
    """
    import torch
    from scipy.spatial import cKDTree

    x, y, a, b, lx, ly, ix, iy = _problem(x, y, a, b, labels_x, labels_y)
    target, conf = x.copy(), np.zeros(len(x))
    if len(ix) == 0 or len(iy) == 0:
        return Match(target, conf)
    start = max(anneal_factor, 1.0) * blur
    radius = truncate * start
    # The label as a 4th coordinate, spaced beyond the radius: the tree never pairs two labels.
    sep = 4.0 * radius + float(np.ptp(np.vstack([x, y]))) + 1.0
    xs = np.column_stack([x[ix], lx[ix] * sep])
    ys = np.column_stack([y[iy], ly[iy] * sep])
    pairs = cKDTree(xs).sparse_distance_matrix(cKDTree(ys), radius, output_type="ndarray")
    N, M = len(ix), len(iy)
    i = torch.from_numpy(pairs["i"].astype(np.int64))
    j = torch.from_numpy(pairs["j"].astype(np.int64))
    C = torch.from_numpy(0.5 * pairs["v"] ** 2)
    la = torch.from_numpy(np.log(a[ix]))
    lb = torch.from_numpy(np.log(b[iy]))
    eps_list = []
    e = start ** 2
    while e > blur ** 2 * 1.0001:
        eps_list.append(e)
        e *= scaling ** 2
    eps_list += [blur ** 2] * (1 + polish_iters)
    f = torch.zeros(N, dtype=torch.float64)
    g = torch.zeros(M, dtype=torch.float64)
    zero_n, zero_m = torch.zeros(N, dtype=torch.float64), torch.zeros(M, dtype=torch.float64)
    for eps in eps_list:
        damp = 1.0 if reach is None else 1.0 / (1.0 + eps / float(reach) ** 2)
        f = -damp * eps * _segment_logsumexp(lb[j] + (g[j] - C) / eps, i, N)
        f = torch.where(torch.isfinite(f), f, zero_n)  # unpaired points: any finite value
        g = -damp * eps * _segment_logsumexp(la[i] + (f[i] - C) / eps, j, M)
        g = torch.where(torch.isfinite(g), g, zero_m)
    eps = blur ** 2
    logits = lb[j] + (g[j] - C) / eps
    lse = _segment_logsumexp(logits, i, N)
    has = torch.isfinite(lse)
    lse0 = torch.where(has, lse, zero_n)
    wgt = torch.exp(logits - lse0[i])
    Y = torch.from_numpy(y[iy])
    bary = torch.zeros(N, 3, dtype=torch.float64).index_add_(0, i, wgt[:, None] * Y[j])
    hasn = has.numpy()
    target[ix[hasn]] = bary.numpy()[hasn]
    conf[ix[hasn]] = torch.exp(f / eps + lse0).numpy()[hasn]
    return Match(target, conf)


def grid_reduce(points: np.ndarray, labels: np.ndarray, weights: np.ndarray, cell_mm: float):
    """Pool points of the same label on a grid of cell ``cell_mm``.

    Returns ``(centres [K, 3], labels [K], masses [K], index [N])``: mass-weighted centres, summed
    masses, and the cell of each input point. A coarse OT level needs no more resolution than
    about half its blur, so pooling makes its cost independent of the mesh resolution.
    """
    p = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    key = np.column_stack([np.asarray(labels).reshape(-1, 1), np.floor(p / cell_mm).astype(np.int64)])
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n = len(uniq)
    m = np.bincount(inv, w, minlength=n)
    cnt = np.bincount(inv, minlength=n)
    wc = np.where(m > 0, m, 1.0)
    ww = np.where((m > 0)[inv], w, 1.0)  # zero-mass cells: plain mean of their points
    c = np.stack([np.bincount(inv, ww * p[:, k], minlength=n) for k in range(3)], axis=1)
    c /= np.where(m > 0, wc, cnt)[:, None]
    return c, uniq[:, 0], m, inv


# ----------------------------------------------------------------------------------------------
# Global transform
# ----------------------------------------------------------------------------------------------

def fit_global(p: np.ndarray, q: np.ndarray, w: np.ndarray | None = None, kind: str = "affine") -> np.ndarray:
    """Weighted least-squares transform ``T [4, 4]`` minimising ``Σ w_i |T p_i - q_i|²``.

    ``kind``: ``"affine"`` (12 parameters), ``"similarity"`` (rotation, isotropic scale,
    translation; Umeyama), ``"rigid"`` (Kabsch), ``"translation"`` or ``"none"``.
    """
    p, q = _as_points(p, "p"), _as_points(q, "q")
    w = np.ones(len(p)) if w is None else np.clip(np.asarray(w, dtype=np.float64), 0, None)
    T = np.eye(4)
    if kind == "none" or w.sum() <= 0:
        return T
    w = w / w.sum()
    mp, mq = w @ p, w @ q
    P, Q = p - mp, q - mq
    if kind == "translation":
        T[:3, 3] = mq - mp
        return T
    if kind == "affine":
        S = (P * w[:, None]).T @ P
        if np.linalg.cond(S) > 1e8:  # degenerate (planar, linear) support: fall back to similarity
            return fit_global(p, q, w, "similarity")
        M = np.linalg.solve(S, (P * w[:, None]).T @ Q).T
    elif kind in ("rigid", "similarity"):
        H = (Q * w[:, None]).T @ P
        U, s, Vt = np.linalg.svd(H)
        D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
        R = U @ D @ Vt
        scale = 1.0
        if kind == "similarity":
            var = float((w * (P ** 2).sum(axis=1)).sum())
            scale = float(np.trace(np.diag(s) @ D)) / var if var > 0 else 1.0
        M = scale * R
    else:
        raise InputError(f"unknown global transform {kind!r}")
    T[:3, :3] = M
    T[:3, 3] = mq - M @ mp
    return T


def _apply(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ T[:3, :3].T + T[:3, 3]


# ----------------------------------------------------------------------------------------------
# Correspondence
# ----------------------------------------------------------------------------------------------

def _label_weighted_centroid(p, labels, w, keep):  # noqa: ANN001, ANN202
    """Mean over labels (in ``keep``) of each label's weighted centroid: robust to a target that
    holds extra structures, and to labels of very different sizes."""
    cs = []
    for lab in keep:
        i = np.flatnonzero(labels == lab)
        ww = w[i] / w[i].sum() if w[i].sum() > 0 else np.full(len(i), 1.0 / len(i))
        cs.append(ww @ p[i])
    return np.mean(cs, axis=0)


def correspond_points(
    template: np.ndarray,
    target: np.ndarray,
    template_labels: np.ndarray | None = None,
    target_labels: np.ndarray | None = None,
    template_weights: np.ndarray | None = None,
    target_weights: np.ndarray | None = None,
    options: CorrespondOptions | None = None,
) -> Correspondence:
    """Displacement of every template point onto the target: global fit, then OT + spline levels.

    Parameters
    ----------
    template : ndarray [V, 3]
        The moving points (the template's own vertices), mm.
    target : ndarray [M, 3]
        Target points (a target mesh's vertices), mm.
    template_labels, target_labels : ndarray [V], [M], optional
        Integer labels; matching happens within each label only.
    template_weights, target_weights : ndarray, optional
        Point masses (e.g. vertex areas); default uniform. Renormalised per label.
    options : CorrespondOptions

    Returns
    -------
    Correspondence
    """
    from sono3d.heart.spline import gaussian_smooth

    opt = options or CorrespondOptions()
    t0 = time.perf_counter()
    P0 = _as_points(template, "template points")
    Q = _as_points(target, "target points")
    if len(P0) == 0 or len(Q) == 0:
        raise InputError("template and target must both have points")
    lx = _as_labels(template_labels, len(P0), "template labels")
    ly = _as_labels(target_labels, len(Q), "target labels")
    a = _as_weights(template_weights, len(P0), "template weights")
    b = _as_weights(target_weights, len(Q), "target weights")
    shared = np.intersect1d(np.unique(lx), np.unique(ly))
    if len(shared) == 0:
        raise InputError("template and target share no label, so nothing can be matched")

    history = []
    # Global part: start from matched label centroids, then match-and-fit at coarse blurs on
    # grid-pooled copies of both sets (dense geomloss: the plan is not yet local).
    T = np.eye(4)
    if opt.global_transform != "none" and opt.global_steps > 0:
        T[:3, 3] = _label_weighted_centroid(Q, ly, b, shared) - _label_weighted_centroid(P0, lx, a, shared)
        cell = opt.coarse_blur_mm / 2.0
        pc, pl, pm, _ = grid_reduce(P0, lx, a, cell)
        qc, ql, qm, _ = grid_reduce(Q, ly, b, cell)
        for k in range(opt.global_steps):
            blur = opt.coarse_blur_mm / 2.0 ** k
            m = ot_match(_apply(T, pc), qc, pm, qm, blur=blur, reach=opt.reach_mm, labels_x=pl,
                         labels_y=ql, scaling=opt.scaling, polish_iters=opt.polish_iters)
            T = fit_global(pc, m.target, m.confidence * pm, opt.global_transform)
            history.append(("global", float(blur), len(pc), len(qc), time.perf_counter() - t0))
    base = _apply(T, P0)

    # Non-rigid part: match the current shape (kernel-truncated Sinkhorn, both sets pooled on a
    # grid of half the blur), smooth the residual with the spline, accumulate.
    u = np.zeros_like(P0)
    blurs = list(np.geomspace(opt.nonrigid_blur_mm, opt.blur_mm, opt.levels)) if opt.levels else []
    blurs += [opt.blur_mm] * opt.final_iters
    conf = np.ones(len(P0))
    for blur in blurs:
        cur = base + u
        cell = opt.pool_factor * blur
        pc, pl, pm, pinv = grid_reduce(cur, lx, a, cell)
        qc, ql, qm, _ = grid_reduce(Q, ly, b, cell)
        m = ot_match_local(pc, qc, pm, qm, blur=blur, reach=opt.reach_mm, labels_x=pl, labels_y=ql,
                           scaling=opt.scaling, anneal_factor=opt.anneal_factor,
                           polish_iters=opt.polish_iters)
        scale = max(opt.spline_factor * blur, opt.spline_min_mm)
        w = m.confidence * pm
        u = u + gaussian_smooth(pc, m.target - pc, scale, weights=w, at=cur)
        conf = m.confidence[pinv]
        history.append(("nonrigid", float(blur), float(scale), len(pc), len(qc), time.perf_counter() - t0))
    disp = base + u - P0
    return Correspondence(disp, conf, T, time.perf_counter() - t0, history)


# ----------------------------------------------------------------------------------------------
# Meshes
# ----------------------------------------------------------------------------------------------

def _point_labels(mesh, name: str = "elemTag") -> np.ndarray | None:  # noqa: ANN001
    """Point labels: the point array ``name``, else derived from the cell array (each point takes
    the smallest label of its cells), else ``None``."""
    if name in mesh.point_data:
        return np.asarray(mesh.point_data[name]).reshape(-1).astype(np.int64)
    if name in mesh.cell_data:
        from sono3d.geometry.mesh import triangles

        cl = np.asarray(mesh.cell_data[name]).reshape(-1).astype(np.int64)
        tri = triangles(mesh)
        if len(tri) != len(cl):  # polygons were split: label them through pyvista's triangulation
            t = mesh.triangulate()
            cl = np.asarray(t.cell_data[name]).reshape(-1).astype(np.int64)
        out = np.full(mesh.n_points, np.iinfo(np.int64).max)
        for k in range(3):
            np.minimum.at(out, tri[:, k], cl)
        out[out == np.iinfo(np.int64).max] = -1
        return out
    return None


def vertex_areas(points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """A third of the area of each vertex's triangles, mm² ``[V]`` (0 for isolated vertices)."""
    p = np.asarray(points, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    out = np.zeros(len(p))
    if len(f):
        ar = 0.5 * np.linalg.norm(np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]]), axis=1)
        for k in range(3):
            np.add.at(out, f[:, k], ar / 3.0)
    return out


def mesh_points_labels_weights(mesh, weights: str = "area", label_name: str = "elemTag",  # noqa: ANN001
                               require_labels: bool = True, what: str = "mesh"):  # noqa: ANN201
    """Vertices ``[V, 3]``, point labels ``[V]`` and point masses ``[V]`` of a surface mesh.

    Raises :class:`InputError` when ``require_labels`` and the mesh has no ``label_name`` array.
    Without labels every point gets label 0.
    """
    from sono3d.geometry.mesh import triangles

    pts = np.asarray(mesh.points, dtype=np.float64)
    labels = _point_labels(mesh, label_name)
    if labels is None:
        if require_labels:
            raise InputError(f"{what} has no '{label_name}' label array (point or cell data)")
        labels = np.zeros(len(pts), dtype=np.int64)
    if weights == "area":
        w = vertex_areas(pts, triangles(mesh))
        if w.sum() <= 0:
            w = np.ones(len(pts))
        else:
            w = np.maximum(w, 1e-6 * w.mean())  # isolated vertices keep a little mass
    else:
        w = np.ones(len(pts))
    return pts, labels, w


def correspond_meshes(template, target, options: CorrespondOptions | None = None,  # noqa: ANN001, ANN201
                      label_name: str = "elemTag", require_labels: bool = True) -> Correspondence:
    """:func:`correspond_points` between two labelled PyVista surfaces (template's own vertices)."""
    opt = options or CorrespondOptions()
    p, lp, wp = mesh_points_labels_weights(template, opt.weights, label_name, require_labels, "template")
    q, lq, wq = mesh_points_labels_weights(target, opt.weights, label_name, require_labels, "target")
    return correspond_points(p, q, lp, lq, wp, wq, opt)


def template_hash(mesh) -> str:  # noqa: ANN001
    """SHA-1 of a template's vertices and faces: identifies the template a deformation belongs to."""
    from sono3d.geometry.mesh import triangles

    h = hashlib.sha1()
    h.update(np.ascontiguousarray(np.asarray(mesh.points, dtype=np.float64)).tobytes())
    h.update(np.ascontiguousarray(triangles(mesh)).tobytes())
    return h.hexdigest()
