"""The paper's training loss ``w L1 + (1 - w)(1 - SSIM)``: a plain autograd version and a fused CPU kernel.

:func:`hybrid_loss_reference` composes :func:`sono3d.metrics.ssim_torch` and an L1 term with
PyTorch operations and lets autograd differentiate them. :func:`hybrid_loss` computes the same
value and its gradient with respect to the rendered frames in one compiled pass per frame
(:class:`FusedHybridLoss`, numba, ``prange`` over frames): the five SSIM statistics by a separable
Gaussian filter, the SSIM map and its partial derivatives, then the adjoint (full) filter of three
derivative maps, which gives

    dS/dx(q) = sum_p K(p - q) [dS/dmu_x(p) + 2 x(q) dS/dE[x^2](p) + y(q) dS/dE[xy](p)].

The gradient is made in the forward pass (the targets are data and never need one) and the backward
only scales it, so a training step pays one kernel call instead of some forty small tensor
operations and their autograd records (24 ms against about 8 ms for 8 frames of 256x256 on two
cores, see ``benchmarks/bench_raster.py``). Tests hold the two equal, value and gradient, and
``torch.autograd.gradcheck`` checks the fused gradient in float64.

Definitions (shared by both): ``L1 = sum |x - y| m / (B sum m)`` over the mask ``m`` (all ones
without one); ``SSIM`` is the mask-weighted mean of the SSIM map over window centres (the map drops
a ``win // 2`` border, :func:`sono3d.metrics.ssim_torch`); ``loss = w L1 + (1 - w)(1 - SSIM)``.
"""

from __future__ import annotations

import numpy as np
import torch

from sono3d.errors import InputError
from sono3d.metrics.image import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WIN, gaussian_window_1d, ssim_torch

__all__ = ["hybrid_loss", "hybrid_loss_reference", "FusedHybridLoss", "fused_available"]

try:  # numba is a dependency, but the loss must still work (by autograd) where it cannot import
    from numba import njit, prange

    from sono3d.sweep import _numba_runtime  # noqa: F401  (selects the threading layer)

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is installed with the package
    _HAVE_NUMBA = False


def fused_available() -> bool:
    """Whether the compiled loss kernel can run here."""
    return _HAVE_NUMBA


def _check(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, l1_weight: float) -> None:
    if rendered.shape != target.shape or rendered.dim() != 3:
        raise InputError(f"the loss needs rendered and target frames of the same shape (B, H, W), "
                         f"got {tuple(rendered.shape)} and {tuple(target.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(rendered.shape[1:]):
        raise InputError(f"the loss mask must have shape {tuple(rendered.shape[1:])}, got {tuple(mask.shape)}")
    if not 0.0 <= l1_weight <= 1.0:
        raise InputError(f"l1_weight must be in [0, 1], got {l1_weight}")


def hybrid_loss_reference(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                          l1_weight: float = 0.8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, l1, ssim)`` of a batch by PyTorch operations and autograd (the reference).

    Parameters
    ----------
    rendered, target : Tensor, shape (B, H, W)
        Frames, grey levels (data range 1).
    mask : Tensor, shape (H, W), optional
        Pixel weights (1 inside the sector); ``None`` counts every pixel.
    l1_weight : float
        ``w`` of ``w L1 + (1 - w)(1 - SSIM)``.

    Returns
    -------
    loss, l1, ssim : Tensor
        Scalars, all differentiable.
    """
    _check(rendered, target, mask, l1_weight)
    diff = (rendered - target).abs()
    if mask is None:
        l1 = diff.mean()
    else:
        l1 = (diff * mask).sum() / (mask.sum() * rendered.shape[0])
    s = ssim_torch(rendered, target, 1.0, mask=mask)
    return l1_weight * l1 + (1.0 - l1_weight) * (1.0 - s), l1, s


if _HAVE_NUMBA:
    _FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

    @njit(cache=True, fastmath=_FASTMATH)
    def _frame(x, y, m, k, c1, c2, grad):
        """SSIM sum, L1 sum and ``d(SSIM sum)/dx`` (into ``grad``) of one frame ``(H, W)``.

        ``m`` weights pixels; the SSIM map is weighted by ``m`` at the window centre.
        Returns ``(sum_p m s, sum_q m |x - y|)`` in float64.
        """
        H, W = x.shape
        win = k.shape[0]
        half = win // 2
        hv = H - win + 1
        wv = W - win + 1
        dt = x.dtype
        # horizontal pass of the five statistics: rows of all H, columns of the valid width
        th = np.zeros((5, H, wv), dt)
        for i in range(H):
            for t in range(win):
                kt = k[t]
                for j in range(wv):
                    a = x[i, j + t]
                    b = y[i, j + t]
                    th[0, i, j] += kt * a
                    th[1, i, j] += kt * b
                    th[2, i, j] += kt * a * a
                    th[3, i, j] += kt * b * b
                    th[4, i, j] += kt * a * b
        # vertical pass, SSIM map and its derivatives w.r.t. mu_x, E[x^2], E[xy], weighted by the mask
        ga = np.zeros((hv, wv), dt)
        gb = np.zeros((hv, wv), dt)
        gc = np.zeros((hv, wv), dt)
        st = np.zeros((5, wv), dt)
        ssim_sum = 0.0
        for i in range(hv):
            st[:] = 0
            for t in range(win):
                kt = k[t]
                for c in range(5):
                    for j in range(wv):
                        st[c, j] += kt * th[c, i + t, j]
            row_sum = 0.0
            for j in range(wv):
                w_c = m[i + half, j + half]
                if w_c == 0:
                    continue
                mx = st[0, j]
                my = st[1, j]
                a1 = 2 * mx * my + c1
                a2 = 2 * (st[4, j] - mx * my) + c2
                b1 = mx * mx + my * my + c1
                b2 = (st[2, j] - mx * mx) + (st[3, j] - my * my) + c2
                den = b1 * b2
                s = a1 * a2 / den
                row_sum += w_c * s
                d_exx = -s / b2
                d_exy = 2 * a1 / den
                # d s / d mu_x through mu_x in a1, a2, b1 and b2 (the moments E[.] held fixed)
                d_mx = (2 * my * (a2 - a1) - s * 2 * mx * (b2 - b1)) / den
                ga[i, j] = w_c * d_mx
                gb[i, j] = w_c * d_exx
                gc[i, j] = w_c * d_exy
            ssim_sum += row_sum
        # adjoint filter: vertical (valid rows -> all rows), then horizontal (valid cols -> all cols)
        tv = np.zeros((3, H, wv), dt)
        for i in range(hv):
            for t in range(win):
                kt = k[t]
                for j in range(wv):
                    tv[0, i + t, j] += kt * ga[i, j]
                    tv[1, i + t, j] += kt * gb[i, j]
                    tv[2, i + t, j] += kt * gc[i, j]
        fa = np.zeros(W, dt)
        fb = np.zeros(W, dt)
        fc = np.zeros(W, dt)
        l1_sum = 0.0
        for i in range(H):
            fa[:] = 0
            fb[:] = 0
            fc[:] = 0
            for t in range(win):
                kt = k[t]
                for j in range(wv):
                    fa[j + t] += kt * tv[0, i, j]
                    fb[j + t] += kt * tv[1, i, j]
                    fc[j + t] += kt * tv[2, i, j]
            row_l1 = 0.0
            for j in range(W):
                grad[i, j] = fa[j] + 2 * x[i, j] * fb[j] + y[i, j] * fc[j]
                row_l1 += m[i, j] * abs(x[i, j] - y[i, j])
            l1_sum += row_l1
        return ssim_sum, l1_sum

    @njit(cache=True, parallel=True, fastmath=_FASTMATH)
    def _batch(x, y, m, k, c1, c2, coef_ssim, coef_l1, grad, sums):
        """Every frame of ``(B, H, W)`` in parallel; ``grad`` gets ``dLoss/dx``, ``sums[b]`` the
        frame's ``(SSIM sum, L1 sum)``."""
        for b in prange(x.shape[0]):
            s, l1 = _frame(x[b], y[b], m, k, c1, c2, grad[b])
            sums[b, 0] = s
            sums[b, 1] = l1
            g = grad[b]
            xb = x[b]
            yb = y[b]
            for i in range(x.shape[1]):
                for j in range(x.shape[2]):
                    d = xb[i, j] - yb[i, j]
                    sgn = 1.0 if d > 0 else (-1.0 if d < 0 else 0.0)
                    g[i, j] = coef_ssim * g[i, j] + coef_l1 * sgn * m[i, j]


class FusedHybridLoss(torch.autograd.Function):
    """``(loss, l1, ssim)`` with the gradient of ``loss`` w.r.t. the rendered frames made in the
    forward by the compiled kernel; ``l1`` and ``ssim`` are returned for logging and carry no
    gradient. CPU tensors, float32 or float64."""

    @staticmethod
    def forward(ctx, rendered, target, mask, l1_weight):
        B, H, W = rendered.shape
        dt = np.float64 if rendered.dtype == torch.float64 else np.float32
        x = np.ascontiguousarray(rendered.detach().numpy(), dtype=dt)
        y = np.ascontiguousarray(target.detach().numpy(), dtype=dt)
        m = (np.ones((H, W), dt) if mask is None
             else np.ascontiguousarray(mask.detach().numpy(), dtype=dt))
        half = SSIM_WIN // 2
        m_ssim = float(m[half:H - half, half:W - half].sum()) * B
        m_l1 = float(m.sum()) * B
        if m_ssim <= 0 or m_l1 <= 0:
            raise InputError("the loss mask has no pixel inside the SSIM window's valid region")
        k = gaussian_window_1d(SSIM_WIN, SSIM_SIGMA).astype(dt)
        # Only the mask's bounding box widened by the window radius matters: no pixel outside it
        # reaches a weighted window centre or the L1 sum (a 90-degree sector leaves a third of the
        # rows out). The valid window centres of the crop include every weighted one of the frame.
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        r0, r1 = max(0, rows[0] - half), min(H, rows[-1] + half + 1)
        c0, c1 = max(0, cols[0] - half), min(W, cols[-1] + half + 1)
        crop = (slice(None), slice(r0, r1), slice(c0, c1))
        grad = np.zeros((B, H, W), dt)
        g_crop = np.empty((B, r1 - r0, c1 - c0), dt)
        sums = np.zeros((B, 2))
        w = float(l1_weight)
        _batch(np.ascontiguousarray(x[crop]), np.ascontiguousarray(y[crop]), np.ascontiguousarray(m[r0:r1, c0:c1]),
               k, (SSIM_K1 * 1.0) ** 2, (SSIM_K2 * 1.0) ** 2, -(1.0 - w) / m_ssim, w / m_l1, g_crop, sums)
        grad[crop] = g_crop
        ssim = sums[:, 0].sum() / m_ssim
        l1 = sums[:, 1].sum() / m_l1
        ctx.save_for_backward(torch.from_numpy(grad))
        out = [torch.tensor(v, dtype=rendered.dtype) for v in (w * l1 + (1.0 - w) * (1.0 - ssim), l1, ssim)]
        ctx.mark_non_differentiable(out[1], out[2])
        return tuple(out)

    @staticmethod
    def backward(ctx, g_loss, g_l1, g_ssim):
        (grad,) = ctx.saved_tensors
        return g_loss * grad.to(g_loss.dtype), None, None, None


def hybrid_loss(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                l1_weight: float = 0.8, fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, l1, ssim)`` of a batch of frames; the training loss of the sweep engine.

    Parameters
    ----------
    rendered : Tensor, shape (B, H, W)
        Rendered frames (grey levels, data range 1); the gradient flows to them.
    target : Tensor, shape (B, H, W)
        Observed frames (no gradient with the fused kernel).
    mask : Tensor, shape (H, W), optional
        Pixel weights; ``None`` counts every pixel.
    l1_weight : float
        ``w`` of ``w L1 + (1 - w)(1 - SSIM)`` (the paper: 0.8).
    fused : bool, optional
        Use the compiled kernel (:class:`FusedHybridLoss`); default: when it is available, the
        tensors are on the CPU and ``target`` needs no gradient. ``False`` forces
        :func:`hybrid_loss_reference`.

    Returns
    -------
    loss, l1, ssim : Tensor
        Scalars in ``rendered``'s dtype. With the fused kernel only ``loss`` is differentiable.
    """
    if fused is None:
        fused = (fused_available() and rendered.device.type == "cpu" and not target.requires_grad
                 and rendered.dtype in (torch.float32, torch.float64))
    if not fused:
        return hybrid_loss_reference(rendered, target, mask, l1_weight)  # checks its arguments itself
    _check(rendered, target, mask, l1_weight)
    if min(rendered.shape[1:]) < SSIM_WIN:
        raise InputError(f"SSIM needs frames of at least {SSIM_WIN}x{SSIM_WIN}, got "
                         f"{rendered.shape[1]}x{rendered.shape[2]}")
    if not fused_available():
        raise InputError("the fused loss needs numba, which does not import here")
    if rendered.device.type != "cpu":
        raise InputError("the fused loss runs on the CPU; on a GPU use fused=False")
    return FusedHybridLoss.apply(rendered, target, mask, float(l1_weight))
