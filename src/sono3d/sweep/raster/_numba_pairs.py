"""Compiled per-(slice, Gaussian) preprocessing for the numba backend, with its hand-derived backward.

The same plane restriction as :mod:`._conic`, written for numba in float64 so that a training step
pays no per-operation PyTorch overhead. It works in each Gaussian's whitened frame
``L = S^-1 R^T`` (so ``Sigma^-1 = L^T L``): with ``U = L u``, ``V = L v``, ``E = L (mu - o)``, the
squared Mahalanobis distance of pixel ``(col, row)`` is ``|col U + row V - E|^2``, a 2D
least-squares problem::

    a = U.U, b = U.V, c = V.V,         [c0, r0] = A2^-1 [U.E, V.E],   A2 = [[a, b], [b, c]]
    m_min^2 = |E - c0 U - r0 V|^2,     w = sigmoid(o_g) I_g exp(-m_min^2 / 2)

(``m_min^2`` is the ``delta^2 / sigma_n^2`` of :mod:`._conic`; float64 keeps the residual exact.)

Hand-derived backward (the paper's appendix A.1, carried through this parametrisation), from
``dL/d(c0, r0, a, b, c, w)`` per pair:

* ``w``: ``dL/do_g += g_w w (1 - sigmoid(o_g))``, ``dL/dI_g += g_w sigmoid(o_g) exp(-m_min^2/2)``,
  ``g_m = -g_w w / 2`` on ``m_min^2``; by the envelope theorem (``c0, r0`` minimise it)
  ``dm_min^2 = 2 res . (dE - c0 dU - r0 dV)`` with ``res = E - c0 U - r0 V``.
* ``(c0, r0) = A2^-1 h``: with ``lam = A2^-1 [g_c0, g_r0]``, ``dL/dh = lam`` and
  ``dL/dA2 = -lam [c0, r0]^T`` (symmetrised onto ``a, b, c`` as in appendix A.5.3);
  ``h = (U.E, V.E)``, ``a = U.U`` ... give ``dL/dU, dL/dV, dL/dE``.
* ``U = L u`` etc.: ``dL/dL = gU u^T + gV v^T + gE e^T``, ``dL/du = L^T gU`` (and ``v``, ``e``),
  ``dL/dmu = L^T gE = -dL/do``.
* ``L_ij = exp(-s_i) R_ji``: ``dL/dlog_s_i = -sum_j (dL/dL_ij) L_ij``, ``dL/dR_ji = (dL/dL_ij) exp(-s_i)``.
* ``R(q)``: the analytic Jacobian of the rotation matrix in ``(w, x, y, z)``, then the quaternion
  normalisation ``dL/dq~ = (I - q q^T) dL/dq / |q~|`` (appendix A.1.7).

Slice thickness (an elevation profile of standard deviation ``s``, ``t2 = s^2``; see
:mod:`.reference`): ``Sigma' = Sigma + t2 n n^T`` has the whitening ``L' = P L`` with
``P = I - (1 - gamma) N^ N^^T``, ``N = L n`` the whitened normal, ``N^ = N / |N|`` and
``gamma = (1 + t2 |N|^2)^(-1/2)`` (``P^T P = I - (1 - gamma^2) N^ N^^T`` is Sherman-Morrison's
``Sigma'^-1``), and the pair's weight gains the factor ``gamma``. So the plane vectors are
projected, ``X' = X - kappa (N.X) N`` for ``X`` in ``U, V, E`` with
``kappa = (1 - gamma) / |N|^2 = t2 gamma^2 / (1 + gamma)`` (no cancellation), and everything
above runs on ``U', V', E'``. Backward through the projection, from ``g_X'``:
``g_X = g_X' - kappa (N.g_X') N``, ``g_N = -kappa sum_X [(N.g_X') X + (N.X) g_X'] + 2 g_s N`` with
``s = |N|^2``, ``g_kappa = -sum_X (N.X)(N.g_X')``, ``g_gamma = g_w w / gamma``,
``g_s = (g_kappa dkappa/dgamma + g_gamma) dgamma/ds``, ``dgamma/ds = -t2 gamma^3 / 2``,
``dkappa/dgamma = t2 gamma (2 + gamma) / (1 + gamma)^2``; then ``N = L n`` adds ``g_N n^T`` to
``dL/dL`` and ``g_n = L^T g_N``, and ``n = (u x v) / |u x v|`` gives ``g_u += v x g_m``,
``g_v += g_m x u`` with ``g_m = (g_n - (n.g_n) n) / |u x v|``.

The loops over slices and pairs are compiled with ``parallel=True`` -- numba's parfor lowering
makes them 2-3x faster than plain ``njit`` even on one thread (measured); :mod:`.numba_cpu` runs
them on all threads only for batches of at least 20,000 candidates (8 slices of 9,600 Gaussians:
4.6 ms on one thread, 3.3 ms on two), since on a busy shared machine a parallel region can wait a
scheduler time slice for its second thread.

Culling is the rule of :mod:`._conic` (plane distance against ``cutoff sigma_n``), plus a cheap
bounding-sphere test of the in-plane position, then the ellipse's footprint against the image.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_BBOX_MARGIN = 1e-2


@njit(cache=True)
def gaussian_prep(quats, log_scales, opacity_logits, qn, qnorm, L, sig, smax):
    """Per Gaussian: unit quaternion, its norm, ``L = S^-1 R^T`` (G, 3, 3), sigmoid, largest sigma."""
    for g in range(quats.shape[0]):
        nrm = math.sqrt(quats[g, 0] ** 2 + quats[g, 1] ** 2 + quats[g, 2] ** 2 + quats[g, 3] ** 2)
        nrm = max(nrm, 1e-12)
        w = quats[g, 0] / nrm
        x = quats[g, 1] / nrm
        y = quats[g, 2] / nrm
        z = quats[g, 3] / nrm
        qn[g, 0] = w
        qn[g, 1] = x
        qn[g, 2] = y
        qn[g, 3] = z
        qnorm[g] = nrm
        R00 = 1 - 2 * (y * y + z * z)
        R01 = 2 * (x * y - w * z)
        R02 = 2 * (x * z + w * y)
        R10 = 2 * (x * y + w * z)
        R11 = 1 - 2 * (x * x + z * z)
        R12 = 2 * (y * z - w * x)
        R20 = 2 * (x * z - w * y)
        R21 = 2 * (y * z + w * x)
        R22 = 1 - 2 * (x * x + y * y)
        i0 = math.exp(-log_scales[g, 0])
        i1 = math.exp(-log_scales[g, 1])
        i2 = math.exp(-log_scales[g, 2])
        L[g, 0, 0] = i0 * R00
        L[g, 0, 1] = i0 * R10
        L[g, 0, 2] = i0 * R20
        L[g, 1, 0] = i1 * R01
        L[g, 1, 1] = i1 * R11
        L[g, 1, 2] = i1 * R21
        L[g, 2, 0] = i2 * R02
        L[g, 2, 1] = i2 * R12
        L[g, 2, 2] = i2 * R22
        sig[g] = 1.0 / (1.0 + math.exp(-opacity_logits[g]))
        smax[g] = math.exp(max(log_scales[g, 0], max(log_scales[g, 1], log_scales[g, 2])))


@njit(cache=True, inline="always")
def _is_candidate(means, L, smax, g, u, v, o, n, gi, b, cut2, t2, H, W):
    e0 = means[g, 0] - o[b, 0]
    e1 = means[g, 1] - o[b, 1]
    e2 = means[g, 2] - o[b, 2]
    delta = n[b, 0] * e0 + n[b, 1] * e1 + n[b, 2] * e2
    # sigma_n^2 = n^T Sigma n = sum_i s_i^2 (R^T n)_i^2 = sum_i s_i^4 (L n)_i^2, where row i of L is
    # (R's column i) / s_i, so 1 / s_i^2 = |row i of L|^2
    sn2 = 0.0
    for i in range(3):
        ln = L[g, i, 0] * n[b, 0] + L[g, i, 1] * n[b, 1] + L[g, i, 2] * n[b, 2]
        inv2 = L[g, i, 0] ** 2 + L[g, i, 1] ** 2 + L[g, i, 2] ** 2
        sn2 += ln * ln / (inv2 * inv2)
    if delta * delta > cut2 * (sn2 + t2):
        return False
    pu = u[b, 0] * e0 + u[b, 1] * e1 + u[b, 2] * e2
    pv = v[b, 0] * e0 + v[b, 1] * e1 + v[b, 2] * e2
    cc = gi[b, 0] * pu + gi[b, 1] * pv
    rr = gi[b, 1] * pu + gi[b, 2] * pv
    # the footprint lies inside the projection of the sphere of radius cutoff * max sigma
    rad = math.sqrt(cut2) * smax[g]
    ec = rad * math.sqrt(gi[b, 0]) + 0.5
    er = rad * math.sqrt(gi[b, 2]) + 0.5
    return cc + ec >= 0.0 and cc - ec <= W - 1 and rr + er >= 0.0 and rr - er <= H - 1


@njit(cache=True, parallel=True)
def find_candidates(means, L, smax, u, v, o, n, gi, cut2, t2, H, W, counts, cand):
    """Per slice ``b``: the candidate Gaussians in ``cand[b, :counts[b]]`` (increasing order)."""
    for b in prange(u.shape[0]):
        k = 0
        for g in range(means.shape[0]):
            if _is_candidate(means, L, smax, g, u, v, o, n, gi, b, cut2, t2, H, W):
                cand[b, k] = g
                k += 1
        counts[b] = k


@njit(cache=True, inline="always")
def _whiten(means, L, g, u, v, o, b):
    """``U = L u``, ``V = L v``, ``E = L (mu - o)``: the plane in the Gaussian's whitened frame."""
    U = np.empty(3)
    V = np.empty(3)
    E = np.empty(3)
    for i in range(3):
        U[i] = L[g, i, 0] * u[b, 0] + L[g, i, 1] * u[b, 1] + L[g, i, 2] * u[b, 2]
        V[i] = L[g, i, 0] * v[b, 0] + L[g, i, 1] * v[b, 1] + L[g, i, 2] * v[b, 2]
        E[i] = (L[g, i, 0] * (means[g, 0] - o[b, 0]) + L[g, i, 1] * (means[g, 1] - o[b, 1])
                + L[g, i, 2] * (means[g, 2] - o[b, 2]))
    return U, V, E


@njit(cache=True, inline="always")
def _thicken(L, g, n, b, t2, U, V, E):
    """The projected ``U', V', E'``, the whitened normal ``N``, ``kappa`` and ``gamma`` (see the notes)."""
    N = np.empty(3)
    for i in range(3):
        N[i] = L[g, i, 0] * n[b, 0] + L[g, i, 1] * n[b, 1] + L[g, i, 2] * n[b, 2]
    s = N[0] * N[0] + N[1] * N[1] + N[2] * N[2]
    gam = 1.0 / math.sqrt(1.0 + t2 * s)
    kap = t2 * gam * gam / (1.0 + gam)
    nu = kap * (N[0] * U[0] + N[1] * U[1] + N[2] * U[2])
    nv = kap * (N[0] * V[0] + N[1] * V[1] + N[2] * V[2])
    ne = kap * (N[0] * E[0] + N[1] * E[1] + N[2] * E[2])
    Up = np.empty(3)
    Vp = np.empty(3)
    Ep = np.empty(3)
    for i in range(3):
        Up[i] = U[i] - nu * N[i]
        Vp[i] = V[i] - nv * N[i]
        Ep[i] = E[i] - ne * N[i]
    return Up, Vp, Ep, N, kap, gam


@njit(cache=True, inline="always")
def _plane_conic(U, V, E):
    """``a, b, c, det, c0, r0, res, m_min^2`` of whitened plane vectors."""
    a = U[0] * U[0] + U[1] * U[1] + U[2] * U[2]
    bb = U[0] * V[0] + U[1] * V[1] + U[2] * V[2]
    c = V[0] * V[0] + V[1] * V[1] + V[2] * V[2]
    hu = U[0] * E[0] + U[1] * E[1] + U[2] * E[2]
    hv = V[0] * E[0] + V[1] * E[1] + V[2] * E[2]
    det = a * c - bb * bb
    c0 = (c * hu - bb * hv) / det
    r0 = (a * hv - bb * hu) / det
    res = np.empty(3)
    m2 = 0.0
    for i in range(3):
        res[i] = E[i] - c0 * U[i] - r0 * V[i]
        m2 += res[i] * res[i]
    return a, bb, c, det, c0, r0, res, m2


@njit(cache=True, inline="always")
def _pair_forward(means, L, g, u, v, o, n, b, t2):
    """``U, V, E`` (whitened plane vectors, projected for thickness), ``gamma`` and
    ``a, b, c, det, c0, r0, res, m_min^2``."""
    U, V, E = _whiten(means, L, g, u, v, o, b)
    gam = 1.0
    if t2 > 0.0:
        U, V, E, N, kap, gam = _thicken(L, g, n, b, t2, U, V, E)
    a, bb, c, det, c0, r0, res, m2 = _plane_conic(U, V, E)
    return U, V, E, gam, a, bb, c, det, c0, r0, res, m2


@njit(cache=True, parallel=True)
def fill_pairs(means, L, sig, intensities, u, v, o, n, cut2, t2, H, W, counts, cand, offsets,
               pair_slice, pair_gauss, params, rad2, bbox, valid):
    """Candidates of each slice (from :func:`find_candidates`, written from ``offsets[b]``) with their
    conics, ``rad2`` and footprint."""
    for b in prange(u.shape[0]):
        k = offsets[b]
        for i in range(counts[b]):
            g = cand[b, i]
            U, V, E, gam, a, bb, c, det, c0, r0, res, m2 = _pair_forward(means, L, g, u, v, o, n, b, t2)
            pair_slice[k] = b
            pair_gauss[k] = g
            params[k, 0] = c0
            params[k, 1] = r0
            params[k, 2] = a
            params[k, 3] = bb
            params[k, 4] = c
            params[k, 5] = sig[g] * intensities[g] * gam * math.exp(-0.5 * m2)
            ok = det > 0.0 and math.isfinite(c0) and math.isfinite(r0) and math.isfinite(params[k, 5])
            if math.isinf(cut2):
                rad2[k] = np.inf
                bbox[k, 0] = 0
                bbox[k, 1] = W - 1
                bbox[k, 2] = 0
                bbox[k, 3] = H - 1
            else:
                r2 = max(cut2 - m2, 0.0)
                rad2[k] = r2
                ok = ok and m2 <= cut2
                if ok:
                    ec = math.sqrt(r2 * c / det) + _BBOX_MARGIN
                    er = math.sqrt(r2 * a / det) + _BBOX_MARGIN
                    big = float(max(H, W) + 2)
                    bbox[k, 0] = max(0, int(math.ceil(min(max(c0 - ec, -1.0), big))))
                    bbox[k, 1] = min(W - 1, int(math.floor(min(max(c0 + ec, -1.0), big))))
                    bbox[k, 2] = max(0, int(math.ceil(min(max(r0 - er, -1.0), big))))
                    bbox[k, 3] = min(H - 1, int(math.floor(min(max(r0 + er, -1.0), big))))
                    ok = bbox[k, 0] <= bbox[k, 1] and bbox[k, 2] <= bbox[k, 3]
            valid[k] = ok
            k += 1


@njit(cache=True, parallel=True)
def pairs_backward(means, L, qn, qnorm, sig, intensities, u, v, o, n, nlen, t2, pair_slice, pair_gauss, gparams,
                   g_mu, g_ls, g_q, g_ol, g_int, g_u, g_v, g_o):
    """Per pair: gradients of the Gaussian and slice tensors from ``dL/d(c0, r0, a, b, c, w)``."""
    for k in prange(pair_slice.shape[0]):
        b = pair_slice[k]
        g = pair_gauss[k]
        U0, V0, E0 = _whiten(means, L, g, u, v, o, b)
        U, V, E, gam = U0, V0, E0, 1.0
        N = np.zeros(3)
        kap = 0.0
        if t2 > 0.0:
            U, V, E, N, kap, gam = _thicken(L, g, n, b, t2, U0, V0, E0)
        a, bb, c, det, c0, r0, res, m2 = _plane_conic(U, V, E)
        gc0 = gparams[k, 0]
        gr0 = gparams[k, 1]
        ga = gparams[k, 2]
        gb = gparams[k, 3]
        gc = gparams[k, 4]
        gw = gparams[k, 5]
        env = math.exp(-0.5 * m2)
        w = sig[g] * intensities[g] * gam * env
        g_ol[k] = gw * w * (1.0 - sig[g])
        g_int[k] = gw * sig[g] * gam * env
        gm = -0.5 * gw * w
        # (c0, r0) = A2^-1 h
        lam0 = (c * gc0 - bb * gr0) / det
        lam1 = (a * gr0 - bb * gc0) / det
        ga = ga - lam0 * c0
        gc = gc - lam1 * r0
        gb = gb - (lam0 * r0 + lam1 * c0)
        gU = np.empty(3)
        gV = np.empty(3)
        gE = np.empty(3)
        for i in range(3):
            gU[i] = lam0 * E[i] + 2.0 * ga * U[i] + gb * V[i] - 2.0 * gm * c0 * res[i]
            gV[i] = lam1 * E[i] + 2.0 * gc * V[i] + gb * U[i] - 2.0 * gm * r0 * res[i]
            gE[i] = lam0 * U[i] + lam1 * V[i] + 2.0 * gm * res[i]
        gN = np.zeros(3)
        if t2 > 0.0:  # back through X' = X - kappa (N.X) N (see the module notes)
            NgU = N[0] * gU[0] + N[1] * gU[1] + N[2] * gU[2]
            NgV = N[0] * gV[0] + N[1] * gV[1] + N[2] * gV[2]
            NgE = N[0] * gE[0] + N[1] * gE[1] + N[2] * gE[2]
            NU = N[0] * U0[0] + N[1] * U0[1] + N[2] * U0[2]
            NV = N[0] * V0[0] + N[1] * V0[1] + N[2] * V0[2]
            NE = N[0] * E0[0] + N[1] * E0[1] + N[2] * E0[2]
            g_kap = -(NU * NgU + NV * NgV + NE * NgE)
            g_gam = gw * sig[g] * intensities[g] * env
            dgam_ds = -0.5 * t2 * gam * gam * gam
            dkap_dgam = t2 * gam * (2.0 + gam) / ((1.0 + gam) * (1.0 + gam))
            g_s = (g_kap * dkap_dgam + g_gam) * dgam_ds
            for i in range(3):
                gN[i] = (-kap * (NgU * U0[i] + NU * gU[i] + NgV * V0[i] + NV * gV[i] + NgE * E0[i] + NE * gE[i])
                         + 2.0 * g_s * N[i])
            for i in range(3):
                gU[i] -= kap * NgU * N[i]
                gV[i] -= kap * NgV * N[i]
                gE[i] -= kap * NgE * N[i]
        # U = L u, V = L v, E = L e (and N = L n)
        gL = np.empty((3, 3))
        for i in range(3):
            for j in range(3):
                gL[i, j] = gU[i] * u[b, j] + gV[i] * v[b, j] + gE[i] * (means[g, j] - o[b, j]) + gN[i] * n[b, j]
        for j in range(3):
            su = 0.0
            sv = 0.0
            se = 0.0
            for i in range(3):
                su += L[g, i, j] * gU[i]
                sv += L[g, i, j] * gV[i]
                se += L[g, i, j] * gE[i]
            g_u[k, j] = su
            g_v[k, j] = sv
            g_mu[k, j] = se
            g_o[k, j] = -se
        if t2 > 0.0:  # n = (u x v) / |u x v|
            gn = np.empty(3)
            for j in range(3):
                gn[j] = L[g, 0, j] * gN[0] + L[g, 1, j] * gN[1] + L[g, 2, j] * gN[2]
            ndg = n[b, 0] * gn[0] + n[b, 1] * gn[1] + n[b, 2] * gn[2]
            gmv = np.empty(3)
            for j in range(3):
                gmv[j] = (gn[j] - ndg * n[b, j]) / nlen[b]
            g_u[k, 0] += v[b, 1] * gmv[2] - v[b, 2] * gmv[1]
            g_u[k, 1] += v[b, 2] * gmv[0] - v[b, 0] * gmv[2]
            g_u[k, 2] += v[b, 0] * gmv[1] - v[b, 1] * gmv[0]
            g_v[k, 0] += gmv[1] * u[b, 2] - gmv[2] * u[b, 1]
            g_v[k, 1] += gmv[2] * u[b, 0] - gmv[0] * u[b, 2]
            g_v[k, 2] += gmv[0] * u[b, 1] - gmv[1] * u[b, 0]
        # L_ij = inv_s_i R_ji
        gR = np.empty((3, 3))
        for i in range(3):
            acc = 0.0
            inv_s = math.sqrt(L[g, i, 0] ** 2 + L[g, i, 1] ** 2 + L[g, i, 2] ** 2)
            for j in range(3):
                acc += gL[i, j] * L[g, i, j]
                gR[j, i] = gL[i, j] * inv_s
            g_ls[k, i] = -acc
        w_, x, y, z = qn[g, 0], qn[g, 1], qn[g, 2], qn[g, 3]
        gw_ = 2.0 * (-z * gR[0, 1] + y * gR[0, 2] + z * gR[1, 0] - x * gR[1, 2] - y * gR[2, 0] + x * gR[2, 1])
        gx = 2.0 * (y * gR[0, 1] + z * gR[0, 2] + y * gR[1, 0] - 2.0 * x * gR[1, 1] - w_ * gR[1, 2]
                    + z * gR[2, 0] + w_ * gR[2, 1] - 2.0 * x * gR[2, 2])
        gy = 2.0 * (-2.0 * y * gR[0, 0] + x * gR[0, 1] + w_ * gR[0, 2] + x * gR[1, 0] + z * gR[1, 2]
                    - w_ * gR[2, 0] + z * gR[2, 1] - 2.0 * y * gR[2, 2])
        gz = 2.0 * (-2.0 * z * gR[0, 0] - w_ * gR[0, 1] + x * gR[0, 2] + w_ * gR[1, 0] - 2.0 * z * gR[1, 1]
                    + y * gR[1, 2] + x * gR[2, 0] + y * gR[2, 1])
        dot = w_ * gw_ + x * gx + y * gy + z * gz
        inv = 1.0 / qnorm[g]
        g_q[k, 0] = (gw_ - w_ * dot) * inv
        g_q[k, 1] = (gx - x * dot) * inv
        g_q[k, 2] = (gy - y * dot) * inv
        g_q[k, 3] = (gz - z * dot) * inv


@njit(cache=True)
def scatter_add_rows(dst, index, src):
    """``dst[index[k]] += src[k]`` row by row (serial: deterministic order, no atomics)."""
    for k in range(index.shape[0]):
        for j in range(src.shape[1]):
            dst[index[k], j] += src[k, j]
