"""The production CPU slice rasterizer: numba kernels end to end, backend ``"numba"``.

One ``torch.autograd.Function`` (:class:`NumbaRender`) whose forward and backward are compiled and
hand-derived throughout, so a training step pays no per-operation PyTorch overhead:

* **pairs** (:mod:`._numba_pairs`, float64, ``prange`` over slices for large batches): cull
  (slice, Gaussian) pairs and build each pair's 2D conic ``(c0, r0, a, b, c, w)``, ``rad2`` and
  footprint -- the same quantities as :mod:`._conic`, in the Gaussian's whitened frame;
* **binning** (serial, O(pair-tiles)): every pair is listed in each tile its footprint touches;
  tiles are bands of whole rows, about four per thread over the batch (:func:`_tile_shape`;
  counting sort, so a tile's pairs stay in pair order and the sum is deterministic);
* **forward** (``prange`` over tiles, no atomics): a tile accumulates its pairs into a private
  buffer and writes it once;
* **backward, pixels** (``prange`` over pairs, no atomics): a pair reads ``dL/dI`` over its
  footprint and writes only its own ``dL/d(c0, r0, a, b, c, w)`` (the formulas of
  :class:`.culled.FootprintRaster`, with ``w`` and the conic factored out of the pixel loop and
  row sums hoisted out of the column loop);
* **backward, chain** (``prange`` over pairs for large batches, then a serial scatter): the
  hand-derived gradient of the conic w.r.t. means, log-scales, quaternions, opacity logits,
  intensities and the slice vectors of ``image_to_world`` (see :mod:`._numba_pairs`).

Both kernels walk each footprint row between the two roots of ``q(col) = rad2`` rather than over
the whole bounding box (a tilted, elongated ellipse fills a small part of its box); the two ends
are trimmed with the exact test ``q <= rad2`` (``q`` is convex along a row, so the pixels between
pass too), and ``exp(-q/2)`` follows a two-multiplication recurrence along rows and down the
footprint's first column (six ``exp`` per footprint; see :func:`_rect_start`). Pixel
arithmetic is float32 (the backward's sums float64); gradients come back in the inputs' dtypes.
``fastmath`` is on without the no-NaN/no-Inf assumptions (``rad2`` is ``inf`` without cutoff).
Kernels are compiled on first use and cached on disk (``cache=True``); argument types never vary.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange
from torch.autograd.function import once_differentiable

from sono3d.errors import InputError
from sono3d.sweep._numba_runtime import run_threads
from sono3d.sweep.raster import register_backend
from sono3d.sweep.raster import _numba_pairs as _np
from sono3d.sweep.raster.reference import check_slice_args

__all__ = ["NumbaRender", "render_slices_numba", "numba_pairs", "numba_pairs_backward"]


#: the forward's work items are bands of whole rows, at least this many rows high
MIN_BAND = 16
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_MARGIN = np.float32(1e-2)
# The exp-free row recurrence is used while exp(-q/2) stays far from float64 under/overflow over a
# footprint row (q <= rad2 there); without a cutoff (rad2 = inf) every pixel calls exp.
_RECUR_MAX_RAD2 = 200.0


@njit(cache=True, fastmath=_FASTMATH)
def _row_span(c0, a, b, c, rad2, dr, x_lo, x_hi):
    """The columns of row offset ``dr`` with ``q <= rad2``, clipped to ``[x_lo, x_hi]`` (empty: lo > hi)."""
    disc = (b * dr) * (b * dr) - a * (c * dr * dr - rad2)
    if disc < 0:
        return 1, 0
    s = math.sqrt(disc)
    lo = c0 + (-b * dr - s) / a - _MARGIN
    hi = c0 + (-b * dr + s) / a + _MARGIN
    if lo > x_hi or hi < x_lo:
        return 1, 0
    if lo > x_lo:
        x_lo = int(math.ceil(lo))
    if hi < x_hi:
        x_hi = int(math.floor(hi))
    # q is convex along the row: trim the ends to the exact test, then every pixel between passes
    lin = 2.0 * b * dr
    const = c * dr * dr
    while x_lo <= x_hi:
        dc = np.float32(x_lo) - c0
        if dc * (a * dc + lin) + const <= rad2:
            break
        x_lo += 1
    while x_hi > x_lo:
        dc = np.float32(x_hi) - c0
        if dc * (a * dc + lin) + const <= rad2:
            break
        x_hi -= 1
    return x_lo, x_hi


@njit(cache=True, fastmath=_FASTMATH)
def _row_start(c0, a, lin, const, x0):
    """``exp(-q/2)`` at column ``x0`` and its ratio to the next column, in float64.

    Along a row ``q`` is quadratic in the column, so ``exp(-q/2)`` follows the recurrence
    ``E <- E F, F <- F exp(-a)``: two multiplications per pixel instead of an ``exp``. float64
    keeps the accumulated rounding below 1e-12 over a whole row.
    """
    dc = np.float64(x0) - np.float64(c0)
    q = dc * (np.float64(a) * dc + np.float64(lin)) + np.float64(const)
    return math.exp(-0.5 * q), math.exp(-0.5 * (np.float64(a) * (2.0 * dc + 1.0) + np.float64(lin)))


@njit(cache=True, fastmath=_FASTMATH)
def _rect_start(c0, r0, a, b, c, xs, ys, xe, ye):
    """Start of the 2D recurrence over the rectangle ``[xs, xe] x [ys, ye]``, or ``ok = False``.

    Returns ``ok, E, Fy, Fx, Ga, Gb, Gc`` (float64): ``E = exp(-q/2)`` at ``(xs, ys)``; stepping a
    row down multiplies ``E`` by ``Fy`` (then ``Fy *= Gc``, ``Fx *= Gb``), stepping a column right
    multiplies by ``Fx`` (then ``Fx *= Ga``). Six ``exp`` per footprint instead of two per row.
    Refused (``ok = False``) when some corner of the rectangle has ``q > 400`` or the conic is
    extreme, where factors could leave float64's range.
    """
    c0 = np.float64(c0)
    r0 = np.float64(r0)
    a = np.float64(a)
    b = np.float64(b)
    c = np.float64(c)
    if a > 100.0 or c > 100.0:
        return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    qmax = 0.0
    for xx in (xs, xe):
        for yy in (ys, ye):
            dc = np.float64(xx) - c0
            dr = np.float64(yy) - r0
            qmax = max(qmax, a * dc * dc + 2.0 * b * dc * dr + c * dr * dr)
    if qmax > 400.0:
        return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    dc = np.float64(xs) - c0
    dr = np.float64(ys) - r0
    q = a * dc * dc + 2.0 * b * dc * dr + c * dr * dr
    E = math.exp(-0.5 * q)
    Fy = math.exp(-0.5 * (2.0 * b * dc + c * (2.0 * dr + 1.0)))
    Fx = math.exp(-0.5 * (a * (2.0 * dc + 1.0) + 2.0 * b * dr))
    return True, E, Fy, Fx, math.exp(-a), math.exp(-b), math.exp(-c)


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _pair_steps(E, F, Ga):
    """Split the row recurrence ``E <- E F, F <- F Ga`` into two chains stepping two columns.

    From ``E`` and ``F`` at column ``x``: returns ``E1`` (the value at ``x + 1``), ``D0 = F(x) F(x+1)``
    and ``D1 = F(x+1) F(x+2)`` (the two-column ratios of the even and odd chains) and ``Ga^4`` (the
    ratios' own factor). Two independent multiplication chains halve the latency per pixel.
    """
    F1 = F * Ga
    return E * F, F * F1, F1 * F1 * Ga, (Ga * Ga) * (Ga * Ga)


@njit(cache=True)
def _bin_tiles(bbox, sl, B, H, W, TH, TW):
    tx = (W + TW - 1) // TW
    ty = (H + TH - 1) // TH
    start = np.zeros(B * tx * ty + 1, np.int64)
    for p in range(bbox.shape[0]):
        base = sl[p] * tx * ty
        for j in range(bbox[p, 2] // TH, bbox[p, 3] // TH + 1):
            for i in range(bbox[p, 0] // TW, bbox[p, 1] // TW + 1):
                start[base + j * tx + i + 1] += 1
    for t in range(B * tx * ty):
        start[t + 1] += start[t]
    fill = start[:-1].copy()
    entries = np.empty(start[-1], np.int32)
    for p in range(bbox.shape[0]):
        base = sl[p] * tx * ty
        for j in range(bbox[p, 2] // TH, bbox[p, 3] // TH + 1):
            for i in range(bbox[p, 0] // TW, bbox[p, 1] // TW + 1):
                t = base + j * tx + i
                entries[fill[t]] = p
                fill[t] += 1
    return start, entries


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _forward(params, rad2, bbox, start, entries, B, H, W, TH, TW, out):
    tx = (W + TW - 1) // TW
    ty = (H + TH - 1) // TH
    for t in prange(B * tx * ty):
        s = t // (tx * ty)
        rem = t - s * tx * ty
        Y0 = (rem // tx) * TH
        X0 = (rem - (rem // tx) * tx) * TW
        Y1 = min(Y0 + TH, H) - 1
        X1 = min(X0 + TW, W) - 1
        acc = np.zeros((TH, TW), np.float32)
        for k in range(start[t], start[t + 1]):
            p = entries[k]
            c0 = params[p, 0]
            r0 = params[p, 1]
            a = params[p, 2]
            b = params[p, 3]
            c = params[p, 4]
            w = params[p, 5]
            rr = rad2[p]
            xa = max(bbox[p, 0], X0)
            xb = min(bbox[p, 1], X1)
            ya = max(bbox[p, 2], Y0)
            yb = min(bbox[p, 3], Y1)
            ok, Ecol, Fy, Fx, Ga, Gb, Gc = _rect_start(c0, r0, a, b, c, xa, ya, xb, yb)
            if ok:
                for y in range(ya, yb + 1):
                    xl, xh = _row_span(c0, a, b, c, rr, np.float32(y) - r0, xa, xb)
                    if xl <= xh:
                        E = Ecol
                        F = Fx
                        for x in range(xa, xl):
                            E *= F
                            F *= Ga
                        # even and odd columns as two independent chains (see _pair_steps)
                        E1, D0, D1, Ga4 = _pair_steps(E, F, Ga)
                        x = xl
                        while x < xh:
                            acc[y - Y0, x - X0] += w * E
                            acc[y - Y0, x + 1 - X0] += w * E1
                            E *= D0
                            E1 *= D1
                            D0 *= Ga4
                            D1 *= Ga4
                            x += 2
                        if x == xh:
                            acc[y - Y0, x - X0] += w * E
                    Ecol *= Fy
                    Fy *= Gc
                    Fx *= Gb
                continue
            recur = rr <= _RECUR_MAX_RAD2
            G = math.exp(-np.float64(a))
            for y in range(ya, yb + 1):
                dr = np.float32(y) - r0
                xl, xh = _row_span(c0, a, b, c, rr, dr, xa, xb)
                lin = 2.0 * b * dr
                const = c * dr * dr
                if recur:
                    E, F = _row_start(c0, a, lin, const, xl)
                    for x in range(xl, xh + 1):
                        acc[y - Y0, x - X0] += w * E
                        E *= F
                        F *= G
                else:
                    for x in range(xl, xh + 1):
                        dc = np.float32(x) - c0
                        acc[y - Y0, x - X0] += w * math.exp(-0.5 * (dc * (a * dc + lin) + const))
        for y in range(Y0, Y1 + 1):
            for x in range(X0, X1 + 1):
                out[s, y, x] = acc[y - Y0, x - X0]


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _backward(params, rad2, bbox, sl, grad, out):
    for p in prange(params.shape[0]):
        c0 = params[p, 0]
        r0 = params[p, 1]
        a = params[p, 2]
        b = params[p, 3]
        c = params[p, 4]
        w = params[p, 5]
        rr = rad2[p]
        s0 = 0.0  # sum g e
        s1 = 0.0  # sum g e dc
        s2 = 0.0  # sum g e dr
        s3 = 0.0  # sum g e dc^2
        s4 = 0.0  # sum g e dc dr
        s5 = 0.0  # sum g e dr^2
        g_s = grad[sl[p]]
        xa = bbox[p, 0]
        xb = bbox[p, 1]
        ok, Ecol, Fy, Fx, Ga, Gb, Gc = _rect_start(c0, r0, a, b, c, xa, bbox[p, 2], xb, bbox[p, 3])
        recur = rr <= _RECUR_MAX_RAD2
        G = math.exp(-np.float64(a))
        for y in range(bbox[p, 2], bbox[p, 3] + 1):
            dr = np.float32(y) - r0
            xl, xh = _row_span(c0, a, b, c, rr, dr, xa, xb)
            lin = 2.0 * b * dr
            const = c * dr * dr
            t0 = 0.0
            t1 = 0.0
            t3 = 0.0
            if ok:
                if xl <= xh:
                    E = Ecol
                    F = Fx
                    for x in range(xa, xl):
                        E *= F
                        F *= Ga
                    dc = np.float64(xl) - np.float64(c0)
                    for x in range(xl, xh + 1):
                        ge = g_s[y, x] * E
                        t0 += ge
                        t1 += ge * dc
                        t3 += ge * dc * dc
                        E *= F
                        F *= Ga
                        dc += 1.0
                Ecol *= Fy
                Fy *= Gc
                Fx *= Gb
            elif recur:
                E, F = _row_start(c0, a, lin, const, xl)
                dc = np.float64(xl) - np.float64(c0)
                for x in range(xl, xh + 1):
                    ge = g_s[y, x] * E
                    t0 += ge
                    t1 += ge * dc
                    t3 += ge * dc * dc
                    E *= F
                    F *= G
                    dc += 1.0
            else:
                for x in range(xl, xh + 1):
                    dc = np.float32(x) - c0
                    ge = g_s[y, x] * math.exp(-0.5 * (dc * (a * dc + lin) + const))
                    t0 += ge
                    t1 += ge * dc
                    t3 += ge * dc * dc
            s0 += t0
            s1 += t1
            s3 += t3
            s2 += t0 * dr
            s4 += t1 * dr
            s5 += t0 * dr * dr
        out[p, 0] = w * (a * s1 + b * s2)
        out[p, 1] = w * (b * s1 + c * s2)
        out[p, 2] = -0.5 * w * s3
        out[p, 3] = -w * s4
        out[p, 4] = -0.5 * w * s5
        out[p, 5] = s0


#: below this many footprint pixels (about a millisecond of work) the pixel kernels run on one
#: thread: waking a second one costs more, and on a busy machine it can wait a whole time slice
_PARALLEL_MIN_PIXELS = 1 << 18


#: below this many (slice, Gaussian) candidates (about a millisecond of culling) the preprocessing
#: runs on one thread, for the same reason
_PARALLEL_MIN_CANDIDATES = 20000


def _tile_shape(B: int, H: int, W: int, threads: int) -> tuple[int, int]:
    """Work items of the forward: bands of whole rows, about four per thread over the batch.

    A footprint crossing a band edge is set up once per band, so bands beat square tiles (measured
    2026-11-23, 8 slices of 256x256 at 9,600 Gaussians, 2 threads: whole slices 9.9 ms, 32-row
    bands 11.1 ms, 32x32 tiles 13.7 ms) while a single slice still splits across threads.
    """
    bands = max(1, min(-(-4 * threads // B), H // MIN_BAND))
    return -(-H // bands), W


def _prep_threads(candidates: int) -> int:
    return numba.get_num_threads() if candidates >= _PARALLEL_MIN_CANDIDATES else 1


def _kernel_threads(bbox: np.ndarray) -> int:
    if bbox.shape[0] == 0:
        return 1
    pixels = int(((bbox[:, 1] - bbox[:, 0] + 1).astype(np.int64) * (bbox[:, 3] - bbox[:, 2] + 1)).sum())
    return numba.get_num_threads() if pixels >= _PARALLEL_MIN_PIXELS else 1


def _as_np(t: torch.Tensor, dtype) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)


def numba_pairs(means, log_scales, quats, opacity_logits, intensities, image_to_world, shape, cutoff,
                elevation_sigma=0.0):
    """Culled pairs and their conics from the compiled preprocessing (float64 numpy).

    Returns a dict: ``slice``, ``gauss`` (P,) int32, ``params`` (P, 6), ``rad2`` (P,), ``bbox``
    (P, 4) int32, plus the per-Gaussian and per-slice arrays the backward needs.
    """
    H, W = int(shape[0]), int(shape[1])
    mu = _as_np(means, np.float64)
    ls = _as_np(log_scales, np.float64)
    q = _as_np(quats, np.float64)
    ol = _as_np(opacity_logits, np.float64)
    it = _as_np(intensities, np.float64)
    M = _as_np(image_to_world, np.float64)
    G, B = mu.shape[0], M.shape[0]
    qn, qnorm = np.empty((G, 4)), np.empty(G)
    L, sig, smax = np.empty((G, 3, 3)), np.empty(G), np.empty(G)
    if G:
        _np.gaussian_prep(q, ls, ol, qn, qnorm, L, sig, smax)
    u, v, o = (np.ascontiguousarray(M[:, :3, k]) for k in (0, 1, 3))
    normal = np.cross(u, v)
    nlen = np.maximum(np.linalg.norm(normal, axis=1), 1e-30)
    n = np.ascontiguousarray(normal / nlen[:, None])
    t2 = float(elevation_sigma) ** 2
    guu, guv, gvv = (u * u).sum(1), (u * v).sum(1), (v * v).sum(1)
    gdet = guu * gvv - guv * guv
    gi = np.ascontiguousarray(np.stack([gvv / gdet, -guv / gdet, guu / gdet], axis=1))
    cut2 = np.inf if cutoff is None else float(cutoff) ** 2
    counts = np.zeros(B, np.int64)
    cand = np.empty((B, G), np.int32)
    if G:
        run_threads(_prep_threads(G * B), _np.find_candidates, mu, L, smax, u, v, o, n, gi, cut2, t2, H, W, counts,
                    cand)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    P = int(offsets[-1])
    ps, pg = np.empty(P, np.int32), np.empty(P, np.int32)
    params, rad2 = np.empty((P, 6)), np.empty(P)
    bbox, valid = np.empty((P, 4), np.int32), np.empty(P, np.bool_)
    if P:
        # a candidate's conic costs about four candidates' culling
        run_threads(_prep_threads(4 * P), _np.fill_pairs, mu, L, sig, it, u, v, o, n, cut2, t2, H, W, counts,
                    cand, offsets, ps, pg, params, rad2, bbox, valid)
    keep = np.flatnonzero(valid)
    return {
        "slice": ps[keep], "gauss": pg[keep], "params": params[keep], "rad2": rad2[keep], "bbox": bbox[keep],
        "means": mu, "L": L, "qn": qn, "qnorm": qnorm, "sig": sig, "intensities": it, "u": u, "v": v, "o": o,
        "n": n, "nlen": nlen, "t2": t2, "G": G, "B": B,
    }


def numba_pairs_backward(pairs: dict, gparams: np.ndarray) -> list[np.ndarray]:
    """Gradients ``[means, log_scales, quats, opacity_logits, intensities, image_to_world]`` (float64)
    from ``dL/d(c0, r0, a, b, c, w)`` per pair (the hand-derived chain of :mod:`._numba_pairs`)."""
    G, B = pairs["G"], pairs["B"]
    P = pairs["slice"].shape[0]
    g_mu, g_ls, g_q = np.zeros((P, 3)), np.zeros((P, 3)), np.zeros((P, 4))
    g_ol, g_int = np.zeros((P, 1)), np.zeros((P, 1))
    g_u, g_v, g_o = np.zeros((P, 3)), np.zeros((P, 3)), np.zeros((P, 3))
    if P:
        # a pair's backward chain costs about six candidates' culling
        run_threads(_prep_threads(6 * P), _np.pairs_backward, pairs["means"], pairs["L"], pairs["qn"],
                    pairs["qnorm"], pairs["sig"], pairs["intensities"], pairs["u"], pairs["v"], pairs["o"],
                    pairs["n"], pairs["nlen"], pairs["t2"], pairs["slice"], pairs["gauss"], np.ascontiguousarray(gparams, np.float64), g_mu, g_ls, g_q,
                    g_ol[:, 0], g_int[:, 0], g_u, g_v, g_o)
    per_gauss = np.zeros((G, 12))
    _np.scatter_add_rows(per_gauss, pairs["gauss"], np.concatenate([g_mu, g_ls, g_q, g_ol, g_int], axis=1))
    per_slice = np.zeros((B, 9))
    _np.scatter_add_rows(per_slice, pairs["slice"], np.concatenate([g_u, g_v, g_o], axis=1))
    g_M = np.zeros((B, 4, 4))
    g_M[:, :3, 0], g_M[:, :3, 1], g_M[:, :3, 3] = per_slice[:, 0:3], per_slice[:, 3:6], per_slice[:, 6:9]
    return [per_gauss[:, 0:3], per_gauss[:, 3:6], per_gauss[:, 6:10], per_gauss[:, 10], per_gauss[:, 11], g_M]


class NumbaRender(torch.autograd.Function):
    """The whole numba slice renderer as one ``autograd.Function`` with a hand-derived backward:
    pixel level as :class:`.culled.FootprintRaster`, per-pair chain as :mod:`._numba_pairs`."""

    @staticmethod
    def forward(ctx, means, log_scales, quats, opacity_logits, intensities, image_to_world, H, W, cutoff,
                elevation_sigma=0.0):
        for t in (means, image_to_world):
            if t.device.type != "cpu":
                raise InputError("the 'numba' rasterizer runs on the CPU; use backend 'triton' or 'culled' on a GPU")
        B = int(image_to_world.shape[0])
        pairs = numba_pairs(means, log_scales, quats, opacity_logits, intensities, image_to_world, (H, W), cutoff,
                            elevation_sigma)
        p32 = pairs["params"].astype(np.float32)
        r32 = pairs["rad2"].astype(np.float32)
        out = np.zeros((B, H, W), np.float32)
        threads = _kernel_threads(pairs["bbox"])
        if p32.shape[0]:
            th, tw = _tile_shape(B, H, W, threads)
            start, entries = _bin_tiles(pairs["bbox"], pairs["slice"], B, H, W, th, tw)
            run_threads(threads, _forward, p32, r32, pairs["bbox"], start, entries, B, H, W, th, tw, out)
        ctx.state = (pairs, p32, r32, threads)
        ctx.dtypes = [t.dtype for t in (means, log_scales, quats, opacity_logits, intensities, image_to_world)]
        return torch.from_numpy(out).to(means.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_image):
        pairs, p32, r32, threads = ctx.state
        gparams = np.zeros(p32.shape, np.float32)
        if p32.shape[0]:
            run_threads(threads, _backward, p32, r32, pairs["bbox"], pairs["slice"], _as_np(grad_image, np.float32), gparams)
        grads = numba_pairs_backward(pairs, gparams)
        out = [torch.from_numpy(np.ascontiguousarray(g)).to(dt) for g, dt in zip(grads, ctx.dtypes)]
        return (*out, None, None, None, None)


def render_slices_numba(
    means: torch.Tensor,
    log_scales: torch.Tensor,
    quats: torch.Tensor,
    opacity_logits: torch.Tensor,
    intensities: torch.Tensor,
    image_to_world: torch.Tensor,
    shape: tuple[int, int],
    cutoff: float | None,
    elevation_sigma: float = 0.0,
) -> torch.Tensor:
    """Render ``(B, H, W)`` slices on the CPU with the numba kernels; arguments as
    :func:`~sono3d.sweep.raster.reference.render_slices_reference`. Per-pair preprocessing is
    float64, pixel arithmetic float32."""
    H, W = check_slice_args(image_to_world, shape, cutoff, elevation_sigma)
    return NumbaRender.apply(means, log_scales, quats, opacity_logits, intensities, image_to_world, H, W, cutoff,
                             float(elevation_sigma))


register_backend("numba", render_slices_numba)
