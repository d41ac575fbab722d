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

1. a global transform: a similarity fit of the labels' centroids, then an affine transform fitted
   by weighted least squares to the OT matches (dense geomloss on random subsets) with the blur
   halving down to 1.5 mm;
2. non-rigid levels with a decreasing blur: match the current deformed template (both sets pooled
   on a grid of the blur's size, kernel-truncated Sinkhorn :func:`ot_match_local`), smooth the
   residual displacements with a confidence-weighted Gaussian kernel whose scale follows the blur
   (:func:`sono3d.heart.spline.gaussian_smooth`), add them to the field.

See ``docs/correspondence.md`` for the choices and measured figures.

This is coherent-point-drift in spirit: the OT matches say where the surface is, the kernel
smoothing keeps the field coherent, so neighbouring vertices move together and slide along the
surface only as much as the target's shape demands. The template's own vertices are the moving
set, so the result is a displacement ``[V, 3]`` of exactly the template's vertices.
"""

from __future__ import annotations

import contextlib
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
    "ghdheart_template",
    "SUBLABEL_ARRAYS",
    "shared_sublabel_arrays",
    "vertex_areas",
    "deformed_lv_cavity",
    "deformation_quality",
    "Template",
    "load_template",
    "correspond_case",
    "correspond_cohort",
    "write_histogram",
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
        Blur of the first global step.
    global_transform : str
        ``"affine"``, ``"similarity"``, ``"rigid"``, ``"translation"`` or ``"none"``.
    global_steps : int
        Most match-and-fit steps of the global transform: the blur halves from
        ``coarse_blur_mm`` down to ``global_min_blur_mm``, then the steps repeat at that blur until
        the transform moves no point by more than 2% of it.
    global_min_blur_mm : float
        Smallest blur of the global steps.
    global_points : int
        The global steps use a random subset of about this many points of each set.
    local_below_mm : float
        Global steps with a blur at most this use the kernel-truncated solver
        (:func:`ot_match_local`, on the whole target) instead of dense geomloss. Off (0) by
        default: without the global mass balance the affine fit slides along the surface
        (true vertex error 1.2 instead of 0.6 mm on the synthetic hearts).
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
    global_steps: int = 10
    global_min_blur_mm: float = 1.5
    global_points: int = 500
    local_below_mm: float = 0.0
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
        if not self.global_points >= 3 or not self.pool_factor > 0 or not self.anneal_factor >= 1:
            raise InputError("global_points must be >= 3, pool_factor > 0 and anneal_factor >= 1")
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
    history : list of tuple
        One entry per step: stage, blur (mm), ..., elapsed seconds.
    """

    displacement: np.ndarray
    confidence: np.ndarray
    global_transform: np.ndarray
    seconds: float = 0.0
    history: list = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Optimal transport
# ----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _one_thread():
    """Run torch on one thread: the per-label problems are small, intra-op threads only add
    overhead (and spin under CPU contention); parallelism comes from cohort workers instead."""
    import torch

    n = torch.get_num_threads()
    if n == 1:  # already (nested call, or a cohort worker): switching thread pools is not free
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


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
    # Compact label codes (0, 1, ...): ot_match_local spaces the labels apart by code x a distance.
    codes = np.unique(np.concatenate([lx, ly]), return_inverse=True)[1].reshape(-1)
    lx, ly = codes[: len(lx)], codes[len(lx):]
    return x, y, a, b, lx, ly, ix, iy


def _half_sq_dist(x, y):  # noqa: ANN001, ANN202
    """``|x - y|² / 2`` for batches ``[B, N, 3]``, ``[B, M, 3]`` -> ``[B, N, M]`` (geomloss's p = 2
    cost). Differences are taken directly (no |x|² + |y|² - 2xy), so float32 stays exact."""
    import torch

    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").square_().mul_(0.5)


@dataclass
class _Blocks:
    """Dense OT per label, all labels in one padded geomloss batch (see :func:`_dense_blocks`)."""

    index_x: list  # per label: indices into x
    index_y: list
    origin: np.ndarray  # [B, 3] per-label centring
    X: object  # torch [B, N, 3] (centred, padded)
    Y: object  # torch [B, M, 3]
    logA: object  # torch [B, N], -inf on padding
    logB: object  # torch [B, M]
    f: object  # torch [B, N] dual potentials
    g: object  # torch [B, M]
    C: object  # torch [B, N, M]
    eps: float


def _dense_blocks(x, y, a, b, lx, ly, ix, iy, blur, reach, scaling, polish, anneal_from=None):  # noqa: ANN001, ANN202
    """geomloss's dual potentials for every shared label at once.

    Each label is one batch entry, padded to the largest label with zero-mass points (geomloss
    gives them log-weight -1e5: they neither send nor receive mass), so the labels never exchange
    mass and the Python overhead is paid once, not once per label. ``polish`` plain Sinkhorn
    iterations at the final ε follow geomloss's annealing (it does one iteration per ε).
    """
    import torch
    from geomloss import SamplesLoss

    labs = np.unique(lx[ix])
    bxs = [ix[lx[ix] == lab] for lab in labs]
    bys = [iy[ly[iy] == lab] for lab in labs]
    nb, n, m = len(labs), max(len(v) for v in bxs), max(len(v) for v in bys)
    X, Y = np.zeros((nb, n, 3)), np.zeros((nb, m, 3))
    A, B = np.zeros((nb, n)), np.zeros((nb, m))
    origin = np.zeros((nb, 3))
    diameter = float(blur)
    for k, (bx, by) in enumerate(zip(bxs, bys)):
        both = np.vstack([x[bx], y[by]])
        origin[k] = both.mean(axis=0)  # centring keeps float32 costs exact enough
        diameter = max(diameter, float(np.linalg.norm(np.ptp(both, axis=0))))
        X[k] = x[bx[0]] - origin[k]  # padding sits on a real point: distances stay ordinary
        Y[k] = y[by[0]] - origin[k]
        X[k, : len(bx)] = x[bx] - origin[k]
        Y[k, : len(by)] = y[by] - origin[k]
        A[k, : len(bx)] = a[bx]
        B[k, : len(by)] = b[by]
    if anneal_from is not None:
        diameter = max(min(diameter, float(anneal_from)), float(blur))
    Xt, Yt = torch.from_numpy(X).float(), torch.from_numpy(Y).float()
    At, Bt = torch.from_numpy(A).float(), torch.from_numpy(B).float()
    loss = SamplesLoss("sinkhorn", p=2, blur=float(blur), reach=None if reach is None else float(reach),
                       debias=False, potentials=True, backend="tensorized", scaling=float(scaling),
                       diameter=diameter, cost=_half_sq_dist)
    with torch.no_grad():
        f, g = loss(At, Xt, Bt, Yt)
        f, g = f.reshape(nb, n), g.reshape(nb, m)
        eps = float(blur) ** 2
        C = _half_sq_dist(Xt, Yt)
        la, lb = At.log(), Bt.log()  # -inf on padding: exactly no mass
        damp = 1.0 if reach is None else 1.0 / (1.0 + eps / float(reach) ** 2)
        for _ in range(polish):
            f = -damp * eps * torch.logsumexp(lb[:, None, :] + (g[:, None, :] - C) / eps, dim=2)
            g = -damp * eps * torch.logsumexp(la[:, :, None] + (f[:, :, None] - C) / eps, dim=1)
    return _Blocks(bxs, bys, origin, Xt, Yt, la, lb, f, g, C, eps)


@_one_thread()
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
    ``C = |x - y|² / 2``, ``ε = blur²``; ``reach`` τ gives ρ = τ² (``None``: balanced). Masses are
    normalised to 1 per label; the plan is 0 between different labels.
    """
    import torch

    x, y, a, b, lx, ly, ix, iy = _problem(x, y, a, b, labels_x, labels_y)
    plan = np.zeros((len(x), len(y)))
    if len(ix) == 0 or len(iy) == 0:
        return plan
    d = _dense_blocks(x, y, a, b, lx, ly, ix, iy, blur, reach, scaling, polish_iters)
    with torch.no_grad():
        logpi = d.logA[:, :, None] + d.logB[:, None, :] + (d.f[:, :, None] + d.g[:, None, :] - d.C) / d.eps
        pi = torch.exp(logpi).double().numpy()
    for k, (bx, by) in enumerate(zip(d.index_x, d.index_y)):
        plan[np.ix_(bx, by)] = pi[k, : len(bx), : len(by)]
    return plan


@_one_thread()
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
    anneal_from: float | None = None,
) -> Match:
    """Soft barycentric match of points ``x [N, 3]`` onto ``y [M, 3]`` by robust OT (dense).

    geomloss solves every label at once (one padded batch entry per label), so a point only ever
    receives mass from points of its own label; masses (default uniform) are normalised to 1 per
    label. geomloss anneals ε from the diameter² of the sets down to blur², or from
    ``anneal_from``² when that is smaller (for sets that are already roughly aligned). The
    row-normalised plan is ``softmax_j(log β_j + (g_j - C_ij)/ε)`` (``f`` cancels) and the
    confidence is ``Σ_j π_ij / α_i = exp(f_i/ε + logsumexp_j(log β_j + (g_j - C_ij)/ε))``.
    Points whose label the target lacks keep their place with confidence 0. Memory is
    ``labels × N_max × M_max`` floats: meant for subsets of a few thousand points.
    """
    import torch

    x, y, a, b, lx, ly, ix, iy = _problem(x, y, a, b, labels_x, labels_y)
    target, conf = x.copy(), np.zeros(len(x))
    if len(ix) == 0 or len(iy) == 0:
        return Match(target, conf)
    d = _dense_blocks(x, y, a, b, lx, ly, ix, iy, blur, reach, scaling, polish_iters, anneal_from)
    with torch.no_grad():
        logits = (d.logB + d.g / d.eps)[:, None, :] - d.C / d.eps
        lse = torch.logsumexp(logits, dim=2)
        bary = (torch.softmax(logits, dim=2) @ d.Y).double().numpy()
        c = torch.exp(d.f / d.eps + lse).double().numpy()
    for k, bx in enumerate(d.index_x):
        target[bx] = bary[k, : len(bx)] + d.origin[k]
        conf[bx] = c[k, : len(bx)]
    return Match(target, conf)


def _segment_logsumexp(vals, idx, n):  # noqa: ANN001, ANN202
    """``out[k] = log Σ_{idx == k} exp(vals)`` (-inf for empty segments)."""
    import torch

    mx = torch.full((n,), -torch.inf, dtype=vals.dtype).scatter_reduce(0, idx, vals, "amax")
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    s = torch.zeros(n, dtype=vals.dtype).index_add_(0, idx, torch.exp(vals - mx[idx]))
    return torch.log(s) + mx


@_one_thread()
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

def _subsample(labels: np.ndarray, n_max: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a random subset of about ``n_max`` points, each label keeping its share (and at
    least 32 points, or all it has)."""
    n = len(labels)
    if n <= n_max:
        return np.arange(n)
    out = []
    for lab in np.unique(labels):
        i = np.flatnonzero(labels == lab)
        k = min(len(i), max(32, int(round(n_max * len(i) / n))))
        out.append(np.sort(rng.choice(i, size=k, replace=False)))
    return np.concatenate(out)


def _label_centroids(p, labels, w, keep):  # noqa: ANN001, ANN202
    """Weighted centroid and total mass of each label in ``keep``."""
    cs, ms = [], []
    for lab in keep:
        i = np.flatnonzero(labels == lab)
        m = w[i].sum()
        cs.append((w[i] @ p[i]) / m if m > 0 else p[i].mean(axis=0))
        ms.append(m if m > 0 else 1.0)
    return np.asarray(cs), np.asarray(ms)


def _initial_transform(P, lx, a, Q, ly, b, shared):  # noqa: ANN001, ANN202
    """Start of the global fit: a similarity transform between the labels' centroids when at least
    three labels are shared (it finds the heart's orientation whatever the two frames are), else
    the translation between the mean label centroids (robust to one label much larger)."""
    cp, mp = _label_centroids(P, lx, a, shared)
    cq, mq = _label_centroids(Q, ly, b, shared)
    w = np.sqrt(mp / mp.sum() * mq / mq.sum())
    if len(shared) >= 3 and np.linalg.matrix_rank(cp - cp.mean(axis=0), tol=1e-6 * np.ptp(cp) + 1e-12) >= 2:
        return fit_global(cp, cq, w, "similarity")
    T = np.eye(4)
    T[:3, 3] = cq.mean(axis=0) - cp.mean(axis=0)
    return T


@_one_thread()
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

    history: list = []
    # Global part: start from the label centroids, then match-and-fit with a halving blur on
    # random subsets of both sets (dense geomloss, all labels in one batch). The blur must end small:
    # an entropic barycentric map contracts the target by about blur²/radius, and a transform
    # fitted to it would shrink the template.
    T = np.eye(4)
    if opt.global_transform != "none" and opt.global_steps > 0:
        T = _initial_transform(P0, lx, a, Q, ly, b, shared)
        rng = np.random.default_rng(0)
        ip = _subsample(lx, opt.global_points, rng)
        iq_sub = _subsample(ly, opt.global_points, rng)
        for k in range(opt.global_steps):
            blur = max(opt.coarse_blur_mm / 2.0 ** k, opt.global_min_blur_mm)
            if blur > opt.local_below_mm:  # the target subset is dense enough at this blur
                m = ot_match(_apply(T, P0[ip]), Q[iq_sub], a[ip], b[iq_sub], blur=blur, reach=opt.reach_mm,
                             labels_x=lx[ip], labels_y=ly[iq_sub], scaling=opt.scaling,
                             polish_iters=opt.polish_iters)
            else:  # the whole target, so that matches land on its surface, not on a sparse subset
                m = ot_match_local(_apply(T, P0[ip]), Q, a[ip], b, blur=blur, reach=opt.reach_mm,
                                   labels_x=lx[ip], labels_y=ly, scaling=opt.scaling,
                                   anneal_factor=opt.anneal_factor, polish_iters=opt.polish_iters)
            T_new = fit_global(P0[ip], m.target, m.confidence * a[ip], opt.global_transform)
            step = float(np.abs(_apply(T_new, P0[ip]) - _apply(T, P0[ip])).max())
            T = T_new
            history.append(("global", float(blur), len(ip), time.perf_counter() - t0))
            # At the smallest blur, stop once the transform moves no point by more than 0.02 blur.
            if blur <= opt.global_min_blur_mm and step < 0.02 * blur:
                break
    base = _apply(T, P0)

    # Non-rigid part: match the current shape (kernel-truncated Sinkhorn, both sets pooled on a
    # grid of cell pool_factor x blur), smooth the residual with the spline, accumulate.
    u = np.zeros_like(P0)
    first = max(opt.nonrigid_blur_mm, opt.blur_mm)
    blurs = list(np.geomspace(first, opt.blur_mm, opt.levels)) if opt.levels else []
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


# Point arrays of the synthetic cohort that split a label into surfaces that must not mix: the
# inner and outer walls of a shell (``part``), the LV endocardium and epicardium (``lv_endocardium``).
SUBLABEL_ARRAYS = ("part", "lv_endocardium")


def shared_sublabel_arrays(*meshes) -> tuple[str, ...]:  # noqa: ANN002
    """The :data:`SUBLABEL_ARRAYS` that every mesh carries as point data."""
    return tuple(n for n in SUBLABEL_ARRAYS if all(n in m.point_data for m in meshes))


def mesh_points_labels_weights(mesh, weights: str = "area", label_name: str = "elemTag",  # noqa: ANN001
                               require_labels: bool = True, what: str = "mesh",
                               sublabels: tuple[str, ...] = ()):  # noqa: ANN201
    """Vertices ``[V, 3]``, point labels ``[V]`` and point masses ``[V]`` of a surface mesh.

    The label is ``label_name`` (point data, else derived from cell data), refined by the point
    arrays named in ``sublabels`` (e.g. ``("part", "lv_endocardium")``) into one integer per
    combination. Raises :class:`InputError` when ``require_labels`` and the mesh has no label
    array. Without labels every point gets label 0.
    """
    from sono3d.geometry.mesh import triangles

    pts = np.asarray(mesh.points, dtype=np.float64)
    labels = _point_labels(mesh, label_name)
    if labels is None:
        if require_labels:
            raise InputError(f"{what} has no '{label_name}' label array (point or cell data)")
        labels = np.zeros(len(pts), dtype=np.int64)
    for name in sublabels:
        sub = np.asarray(mesh.point_data[name]).reshape(-1).astype(np.int64)
        labels = labels * 1024 + (sub % 1024)
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
    sub = shared_sublabel_arrays(template, target)
    p, lp, wp = mesh_points_labels_weights(template, opt.weights, label_name, require_labels, "template", sub)
    q, lq, wq = mesh_points_labels_weights(target, opt.weights, label_name, require_labels, "target", sub)
    return correspond_points(p, q, lp, lq, wp, wq, opt)


def ghdheart_template(mesh):  # noqa: ANN001, ANN201
    """The surfaces of a synthetic-cohort heart that GHDHeart has, labelled as its reader does.

    GHDHeart's ``LV.obj`` is the LV *myocardium* (a closed shell: every ray from its centre
    crosses two walls, endocardium and epicardium), while ``RV.obj``, ``LA.obj`` and ``RA.obj``
    are blood pools (one wall). So: label 1 = the LV myocardium, 2, 3, 4 = the inner surfaces of
    the RV, LA and RA shells. The point array ``heart_index`` gives each vertex's index in
    ``mesh``. Raises :class:`InputError` for a mesh without the synthetic cohort's arrays.
    """
    import pyvista as pv

    from sono3d.geometry.mesh import triangles

    if "part" not in mesh.cell_data or "part_names" not in mesh.field_data:
        raise InputError("needs a synthetic-cohort heart (cell array 'part', field array 'part_names')")
    names = [str(n) for n in mesh.field_data["part_names"]]
    tri = triangles(mesh)
    part = np.asarray(mesh.cell_data["part"]).reshape(-1)
    pts, faces, index, labels, off = [], [], [], [], 0
    for tag, name in ((1, "lv_myocardium"), (2, "rv_inner"), (3, "la_inner"), (4, "ra_inner")):
        if name not in names:
            raise InputError(f"the heart has no '{name}' surface")
        f = tri[part == names.index(name)]
        used = np.unique(f)
        remap = np.full(mesh.n_points, -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        pts.append(np.asarray(mesh.points)[used])
        faces.append(remap[f] + off)
        index.append(used)
        labels.append(np.full(len(used), tag))
        off += len(used)
    f = np.vstack(faces)
    out = pv.PolyData(np.vstack(pts), np.hstack([np.full((len(f), 1), 3), f]).ravel())
    lab = np.concatenate(labels).astype(np.int32)
    out.point_data["elemTag"] = lab
    out.point_data["heart_index"] = np.concatenate(index).astype(np.int32)
    out.cell_data["elemTag"] = lab[f[:, 0]]
    return out


def template_hash(mesh) -> str:  # noqa: ANN001
    """SHA-1 of a template's vertices and faces: identifies the template a deformation belongs to."""
    from sono3d.geometry.mesh import triangles

    h = hashlib.sha1()
    h.update(np.ascontiguousarray(np.asarray(mesh.points, dtype=np.float64)).tobytes())
    h.update(np.ascontiguousarray(triangles(mesh)).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Quality of one deformation
# ----------------------------------------------------------------------------------------------

def _densified(mesh, spacing_mm: float = 0.6):  # noqa: ANN001, ANN202
    """The surface subdivided (linearly, at most 3 times) until its edges are about ``spacing_mm``:
    vertex-to-nearest-vertex distances to it then approximate point-to-surface distances."""
    from sono3d.geometry.mesh import triangles

    tri = mesh if mesh.is_all_triangles else mesh.triangulate()
    f = triangles(tri)
    if len(f) == 0:
        return np.asarray(tri.points, dtype=np.float64)
    p = np.asarray(tri.points, dtype=np.float64)
    edge = float(np.linalg.norm(p[f[:, 1]] - p[f[:, 0]], axis=1).mean())
    nsub = int(np.clip(np.ceil(np.log2(max(edge / spacing_mm, 1.0))), 0, 2))
    if nsub == 0:
        return p
    import pyvista as pv

    bare = pv.PolyData(p, np.hstack([np.full((len(f), 1), 3), f]).ravel())
    return np.asarray(bare.subdivide(nsub, "linear").points, dtype=np.float64)


def _same_topology(a, b) -> bool:  # noqa: ANN001
    from sono3d.geometry.mesh import triangles

    if a.n_points != b.n_points or a.n_cells != b.n_cells:
        return False
    return bool(np.array_equal(triangles(a), triangles(b)))


def deformed_lv_cavity(template, displacement: np.ndarray, template_cavity=None):  # noqa: ANN001, ANN201
    """The template's closed LV cavity carried by a deformation, or ``None`` if it has none.

    A template in the synthetic vertex order carries its cavity's faces (field array
    ``lv_cavity_faces``); otherwise the cavity mesh ``template_cavity`` is moved by the
    displacement field interpolated at its vertices (:func:`sono3d.heart.spline.interpolate_field`).
    """
    if "lv_cavity_faces" in template.field_data:
        from sono3d.phantoms.heart import lv_cavity_from_heart

        moved = template.copy()
        moved.points = np.asarray(template.points, dtype=np.float64) + displacement
        return lv_cavity_from_heart(moved)
    if template_cavity is None:
        return None
    from sono3d.heart.spline import interpolate_field

    out = template_cavity.copy()
    cp = np.asarray(template_cavity.points, dtype=np.float64)
    out.points = cp + interpolate_field(np.asarray(template.points), displacement, cp)
    return out


def deformation_quality(template, displacement: np.ndarray, target, target_cavity=None,  # noqa: ANN001
                        template_cavity=None) -> dict:
    """Quality figures of a template deformation onto one target surface.

    Returns a dict with ``chamfer_mm`` and ``hausdorff_mm`` (symmetric, between the deformed
    template and the target, each side's vertices against the other side's surface densified to
    about 0.6 mm, with :func:`sono3d.metrics.surface.nearest_distances`), ``vertex_error_mm``
    and ``vertex_error_max_mm`` (mean and max distance to the true corresponding vertex, when
    template and target share the vertex order and faces; else NaN), and
    ``lv_volume_error_pct`` (deformed template LV cavity vs the target's, signed; NaN without
    cavities).
    """
    from sono3d.geometry.mesh import enclosed_volume_mm3
    from sono3d.metrics.surface import nearest_distances

    P = np.asarray(template.points, dtype=np.float64)
    D = P + displacement
    Q = np.asarray(target.points, dtype=np.float64)
    deformed = template.copy()
    deformed.points = D
    d_ab = nearest_distances(D, _densified(target))
    d_ba = nearest_distances(Q, _densified(deformed))
    out = {
        "chamfer_mm": float(0.5 * (d_ab.mean() + d_ba.mean())),
        "hausdorff_mm": float(max(d_ab.max(), d_ba.max())),
        "vertex_error_mm": float("nan"),
        "vertex_error_max_mm": float("nan"),
        "lv_volume_error_pct": float("nan"),
    }
    if _same_topology(template, target):
        e = np.linalg.norm(D - Q, axis=1)
        out["vertex_error_mm"] = float(e.mean())
        out["vertex_error_max_mm"] = float(e.max())
    cav = deformed_lv_cavity(template, displacement, template_cavity)
    if cav is not None and target_cavity is not None:
        v0 = enclosed_volume_mm3(target_cavity)
        v1 = enclosed_volume_mm3(cav, check=False)
        out["lv_volume_error_pct"] = float(100.0 * (v1 - v0) / v0)
    return out


# ----------------------------------------------------------------------------------------------
# Cohort
# ----------------------------------------------------------------------------------------------

PHASES = ("ed", "es")
REPORT_NAME = "correspondence_report.json"
FIGURE_NAME = "correspondence_hist.png"


@dataclass
class Template:
    """The reference heart whose vertices every case's deformation moves."""

    id: str
    mesh: object
    sha1: str
    cavity: object = None


def load_template(cohort_dir, template: str | None = None) -> Template:  # noqa: ANN001
    """The template: a case id of the cohort (its ED surface), a mesh file, or by default the
    first case's ED surface. Raises :class:`InputError` when it cannot be found or has no labels."""
    from pathlib import Path

    from sono3d.heart.cohort import case_ids, load_case, read_labelled_mesh

    ids = case_ids(cohort_dir)
    if template is None or str(template) in ids:
        if not ids:
            raise InputError(f"{cohort_dir}: the cohort has no cases")
        cid = ids[0] if template is None else str(template)
        case = load_case(cohort_dir, cid, views=False)
        mesh, cavity, name = case.ed, case.lv_cavity_ed, cid
    else:
        path = Path(template)
        if not path.is_file():
            raise InputError(f"template {template!r} is neither a case of {cohort_dir} nor a mesh file")
        mesh, cavity, name = read_labelled_mesh(path), None, str(path)
        sibling = path.parent / f"lv_cavity_{path.stem}{path.suffix}"  # a case folder's ed.vtp / es.vtp
        if path.stem in PHASES and sibling.is_file():
            import pyvista as pv

            cavity = pv.read(str(sibling))
    if _point_labels(mesh) is None:
        raise InputError(f"template {name} has no 'elemTag' labels")
    return Template(name, mesh, template_hash(mesh), cavity)


def _case_labels(mesh, what: str) -> np.ndarray:  # noqa: ANN001
    lab = _point_labels(mesh)
    if lab is None:
        raise InputError(f"{what} has no 'elemTag' labels")
    return lab


def correspond_case(template: Template, case, options: CorrespondOptions | None = None) -> dict:  # noqa: ANN001
    """Deform the template onto both phases of one case (a :class:`~sono3d.heart.cohort.HeartCase`).

    Returns ``{"id", "seconds", "phases": {phase: quality dict}, "arrays": {...}}`` where the
    arrays are those of ``deformation.npz``.
    """
    opt = options or CorrespondOptions()
    t0 = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    phases: dict[str, dict] = {}
    for ph in PHASES:
        target = getattr(case, ph, None)
        if target is None:
            continue
        sub = shared_sublabel_arrays(template.mesh, target)
        P, lp, wp = mesh_points_labels_weights(template.mesh, opt.weights, what=f"template {template.id}",
                                               sublabels=sub)
        Q, lq, wq = mesh_points_labels_weights(target, opt.weights, what=f"case {case.id} {ph}", sublabels=sub)
        c0 = time.process_time()
        r = correspond_points(P, Q, lp, lq, wp, wq, opt)
        cpu = time.process_time() - c0
        q = deformation_quality(template.mesh, r.displacement, target, getattr(case, f"lv_cavity_{ph}", None),
                                template.cavity)
        q["seconds"] = r.seconds
        q["cpu_seconds"] = cpu
        q["is_template"] = template_hash(target) == template.sha1  # the template itself: trivially matched
        phases[ph] = q
        arrays[ph] = r.displacement.astype(np.float32)
        arrays[f"confidence_{ph}"] = r.confidence.astype(np.float32)
        arrays[f"affine_{ph}"] = r.global_transform
    if not phases:
        raise InputError(f"case {case.id} has no surfaces")
    names = list(phases)
    arrays.update({
        "phases": np.array(names),
        "template_id": np.array(template.id),
        "template_sha1": np.array(template.sha1),
        "options_json": np.array(_options_json(opt)),
    })
    for key in ("chamfer_mm", "hausdorff_mm", "vertex_error_mm", "lv_volume_error_pct"):
        arrays[key] = np.array([phases[p][key] for p in names])
    arrays["is_template_phase"] = np.array([p for p in names if phases[p]["is_template"]], dtype="<U2")
    return {"id": case.id, "seconds": time.perf_counter() - t0, "phases": phases, "arrays": arrays}


def _options_json(opt: CorrespondOptions) -> str:
    import json

    return json.dumps(opt.to_dict(), sort_keys=True)


def _write_npz(path, arrays: dict) -> None:  # noqa: ANN001
    from sono3d.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _cached(path, template: Template, opt: CorrespondOptions):  # noqa: ANN001, ANN202
    """The phases of an existing deformation.npz made with the same template and options."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if (str(z["template_sha1"]) != template.sha1 or str(z["options_json"]) != _options_json(opt)
                    or "is_template_phase" not in z.files):
                return None
            names = [str(n) for n in z["phases"]]
            own = {str(v) for v in z["is_template_phase"]}
            return {p: {"chamfer_mm": float(z["chamfer_mm"][k]), "hausdorff_mm": float(z["hausdorff_mm"][k]),
                        "vertex_error_mm": float(z["vertex_error_mm"][k]),
                        "lv_volume_error_pct": float(z["lv_volume_error_pct"][k]), "seconds": float("nan"),
                        "is_template": p in own}
                    for k, p in enumerate(names)}
    except (OSError, KeyError, ValueError):
        return None


_TEMPLATE_CACHE: dict = {}


def _work(args: tuple) -> dict:
    """Correspond one case of a cohort and write its deformation.npz (a top-level function, so
    spawned workers can run it)."""
    from pathlib import Path

    from sono3d.heart.cohort import load_case

    cohort_dir, cid, template_spec, opt, single_thread, reuse = args
    if single_thread:
        import torch

        torch.set_num_threads(1)
    key = (str(cohort_dir), template_spec)
    if key not in _TEMPLATE_CACHE:
        _TEMPLATE_CACHE.clear()
        _TEMPLATE_CACHE[key] = load_template(cohort_dir, template_spec)
    template = _TEMPLATE_CACHE[key]
    path = Path(cohort_dir) / "cases" / cid / "deformation.npz"
    if reuse and path.is_file():
        phases = _cached(path, template, opt)
        if phases is not None:
            return {"id": cid, "seconds": float("nan"), "phases": phases, "reused": True}
    case = load_case(cohort_dir, cid, views=False)
    res = correspond_case(template, case, opt)
    _write_npz(path, res.pop("arrays"))
    res["reused"] = False
    return res


def _summary(values: list[float]) -> dict | None:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None
    return {"mean": float(v.mean()), "median": float(np.median(v)), "max": float(v.max()), "n": int(v.size)}


def correspond_cohort(cohort_dir, template: str | None = None, options: CorrespondOptions | None = None,  # noqa: ANN001
                      workers: int = 1, progress: bool = False, reuse: bool = True) -> dict:
    """Deformations of the template onto every case and phase of a generated cohort.

    Writes ``cases/<id>/deformation.npz`` (arrays ``ed``, ``es``: displacement of the template's
    vertices [V, 3] float32 mm; ``confidence_<phase>`` [V]; ``affine_<phase>`` [4, 4];
    ``template_id``, ``template_sha1``, ``options_json``, ``phases``; the per-phase quality
    figures ``chamfer_mm``, ``hausdorff_mm``, ``vertex_error_mm``, ``lv_volume_error_pct``),
    then ``correspondence_report.json`` and ``correspondence_hist.png`` in the cohort folder.
    A case whose deformation.npz was made with the same template and options is not recomputed
    when ``reuse``. The template's own ED phase is left out of the summary figures (it is
    trivially matched). Returns the report dict.
    """
    import json
    from pathlib import Path

    from sono3d.heart.cohort import case_ids
    from sono3d.io.atomic import atomic_path

    opt = options or CorrespondOptions()
    d = Path(cohort_dir)
    if not d.is_dir():
        raise InputError(f"{d}: no such cohort folder")
    if not (d / "cases").is_dir():
        raise InputError(f"{d}: no cases/ folder (not a generated heart cohort)")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers <= 0:
        raise InputError(f"the number of workers must be a positive integer, got {workers}")
    tmpl = load_template(d, template)  # fail early on a bad template
    _TEMPLATE_CACHE.clear()
    _TEMPLATE_CACHE[(str(d), template)] = tmpl
    ids = case_ids(d)
    jobs = [(str(d), cid, template, opt, workers > 1, reuse) for cid in ids]
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="case", desc="correspond")
    results = []
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(_work(job))
            if bar is not None:
                bar.update(1)
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(int(workers), len(jobs))) as pool:
            for r in pool.imap_unordered(_work, jobs, chunksize=1):
                results.append(r)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    results.sort(key=lambda r: r["id"])
    rows = [{"id": r["id"], "phase": p, **q} for r in results for p, q in r["phases"].items()]
    scored = [row for row in rows if not row["is_template"]]
    computed = [r for r in results if not r.get("reused")]
    vol = [row["lv_volume_error_pct"] for row in scored]
    report = {
        "cohort": str(d),
        "template": {"id": tmpl.id, "sha1": tmpl.sha1, "n_vertices": int(tmpl.mesh.n_points)},
        "n_cases": len(results),
        "n_phases_scored": len(scored),
        "chamfer_mm": _summary([row["chamfer_mm"] for row in scored]),
        "hausdorff_mm": _summary([row["hausdorff_mm"] for row in scored]),
        "vertex_error_mm": _summary([row["vertex_error_mm"] for row in scored]),
        "lv_volume_error_pct": _summary([abs(v) for v in vol]),
        "lv_volume_error_signed_pct": _summary(vol),
        "seconds_per_case": (wall / len(computed)) if computed else None,
        "seconds_per_case_one_worker": _summary([r["seconds"] for r in computed]),
        "cpu_seconds_per_phase": _summary([row.get("cpu_seconds", float("nan")) for row in rows]),
        "workers": int(workers),
        "reused_cases": len(results) - len(computed),
        "options": opt.to_dict(),
        "cases": rows,
    }
    with atomic_path(d / REPORT_NAME) as tmp:
        tmp.write_text(json.dumps(_finite_or_none(report), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    write_histogram(rows, d / FIGURE_NAME)
    return report


def _finite_or_none(o):  # noqa: ANN001, ANN202
    """JSON has no NaN: non-finite numbers become null."""
    if isinstance(o, dict):
        return {k: _finite_or_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_or_none(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def write_histogram(rows: list[dict], path) -> None:  # noqa: ANN001
    """Histograms of Chamfer distance, true vertex error and LV volume error over cases and phases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sono3d.io.atomic import atomic_path

    scored = [r for r in rows if not r["is_template"]]
    panels = [("chamfer_mm", "Chamfer distance (mm)"), ("vertex_error_mm", "mean vertex error vs truth (mm)"),
              ("lv_volume_error_pct", "LV cavity volume error (%)")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (key, title) in zip(axes, panels):
        allv = np.asarray([r[key] for r in scored], dtype=np.float64)
        allv = allv[np.isfinite(allv)]
        bins = np.histogram_bin_edges(allv, bins=min(30, max(5, allv.size // 3))) if allv.size else None
        for ph, colour in zip(PHASES, ("tab:blue", "tab:orange")):
            v = np.asarray([r[key] for r in scored if r["phase"] == ph], dtype=np.float64)
            v = v[np.isfinite(v)]
            if v.size:
                ax.hist(v, bins=bins, alpha=0.6, color=colour, label=ph.upper())
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("phases")
        if ax.has_data():
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Template correspondences by robust optimal transport", fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
