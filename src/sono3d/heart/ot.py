"""Robust optimal transport between labelled point sets: the matching step of the correspondences.

The assignment between moving points ``p_i`` (weights ``α_i``) and target points ``q_j`` (weights
``β_j``) is entropic optimal transport with KL-relaxed marginals,

    min_π  Σ_ij π_ij |p_i - q_j|² / 2 + ε KL(π | α⊗β) + ρ KL(π 1 | α) + ρ KL(πᵀ 1 | β),
    ε = blur², ρ = reach²   (geomloss's convention: blur σ and reach τ in mm),

solved with geomloss's ε-scaling Sinkhorn (``SamplesLoss("sinkhorn", p=2, ...)``, tensorized, CPU),
or, for sets that are already close, by the same log-domain iterations over a kernel-truncated set
of pairs (:func:`ot_match_local`). The plan is recovered from the dual potentials in log space,

    log π_ij = log α_i + log β_j + (f_i + g_j - C_ij) / ε,   C_ij = |p_i - q_j|² / 2,

and gives the soft barycentric map ``v_i = Σ_j π_ij (q_j - p_i) / Σ_j π_ij`` and a per-point
confidence ``Σ_j π_ij / α_i`` (about 1 for a point with a counterpart, near 0 for one that the
relaxed marginal lets go). Matching is done label by label (LV to LV, ...) so chambers cannot swap.
:mod:`sono3d.heart.correspond` builds the template-to-case deformation from these matches.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from sono3d.errors import InputError

__all__ = [
    "Match",
    "transport_plan",
    "ot_match",
    "ot_match_local",
    "grid_reduce",
    "as_points",
    "as_weights",
    "as_labels",
    "one_torch_thread",
]

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


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one thread: the per-label problems are small, intra-op threads only add
    overhead (and spin under CPU contention); parallelism comes from cohort workers instead."""
    n = torch.get_num_threads()
    if n == 1:  # already (nested call, or a cohort worker): switching thread pools is not free
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def as_points(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` as finite float64 points ``[N, 3]``; :class:`InputError` naming ``what`` otherwise."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise InputError(f"{what} must be points [N, 3], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what} contains NaN or infinite coordinates")
    return a


def as_weights(w: np.ndarray | None, n: int, what: str) -> np.ndarray:
    """``n`` non-negative finite float64 masses (all 1 for ``None``)."""
    if w is None:
        return np.ones(n)
    a = np.asarray(w, dtype=np.float64).reshape(-1)
    if len(a) != n or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise InputError(f"{what} must be {n} non-negative finite weights")
    return a


def as_labels(lab: np.ndarray | None, n: int, what: str) -> np.ndarray:
    """``n`` int64 labels (all 0 for ``None``)."""
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
    x, y = as_points(x, "x"), as_points(y, "y")
    lx, ly = as_labels(lx, len(x), "labels_x"), as_labels(ly, len(y), "labels_y")
    a, b = as_weights(a, len(x), "a"), as_weights(b, len(y), "b")
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
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").square_().mul_(0.5)


@dataclass
class _Blocks:
    """Dense OT per label, all labels in one padded geomloss batch (see :func:`_dense_blocks`)."""

    index_x: list  # per label: indices into x
    index_y: list
    origin: np.ndarray  # [B, 3] per-label centring
    X: torch.Tensor  # [B, N, 3] (centred, padded)
    Y: torch.Tensor  # [B, M, 3]
    logA: torch.Tensor  # [B, N], -inf on padding
    logB: torch.Tensor  # [B, M]
    f: torch.Tensor  # [B, N] dual potentials
    g: torch.Tensor  # [B, M]
    C: torch.Tensor  # [B, N, M]
    eps: float


def _dense_blocks(x, y, a, b, lx, ly, ix, iy, blur, reach, scaling, polish, anneal_from=None):  # noqa: ANN001, ANN202
    """geomloss's dual potentials for every shared label at once.

    Each label is one batch entry, padded to the largest label with zero-mass points (geomloss
    gives them log-weight -1e5: they neither send nor receive mass), so the labels never exchange
    mass and the Python overhead is paid once, not once per label. ``polish`` plain Sinkhorn
    iterations at the final ε follow geomloss's annealing (it does one iteration per ε).
    """
    from geomloss import SamplesLoss  # slow to import: only once a dense problem is solved

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


@one_torch_thread()
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


@one_torch_thread()
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
    mx = torch.full((n,), -torch.inf, dtype=vals.dtype).scatter_reduce(0, idx, vals, "amax")
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    s = torch.zeros(n, dtype=vals.dtype).index_add_(0, idx, torch.exp(vals - mx[idx]))
    return torch.log(s) + mx


@one_torch_thread()
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
