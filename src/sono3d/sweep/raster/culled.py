"""The culled slice rasterizer in plain PyTorch (CPU or GPU): backend ``"culled"``.

Pairs of (slice, Gaussian) that can reach the image are found and turned into 2D conics by
:mod:`._conic`; each pair is then drawn on its pixel footprint only. Footprints are bucketed by
size (next power of two of width and height), each bucket is evaluated as a dense
``[pairs, rows, cols]`` block with index arithmetic and summed into the image with ``index_add_``.

What is hand-derived
--------------------
:class:`FootprintRaster` is a ``torch.autograd.Function`` whose backward is written out (the
paper's appendix A.1, restated for the per-pair conic)::

    I_p   = sum_pairs w exp(-q/2) [q <= rad2],   q = a dc^2 + 2 b dc dr + c dr^2,
    dc    = col - c0, dr = row - r0,  g_p = dL/dI_p,  t = g_p w exp(-q/2)
    dL/dw  = sum_p g_p exp(-q/2)
    dL/dc0 = sum_p t (a dc + b dr)        dL/dr0 = sum_p t (b dc + c dr)
    dL/da  = -1/2 sum_p t dc^2            dL/db  = -sum_p t dc dr         dL/dc = -1/2 sum_p t dr^2

(``b`` appears twice in ``q``: the symmetric-storage rule of the paper's appendix A.5.3.) The
step from these six per-pair numbers to ``mu``, ``log_scales``, ``quats``, the opacity logit, the
intensity and ``image_to_world`` is autograd through :func:`._conic.slice_pairs` on ``[pairs]``
tensors -- no pixel dimension, so it costs little and cannot drift from the forward.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from sono3d.sweep.raster import register_backend
from sono3d.sweep.raster._conic import render_pairs

__all__ = ["FootprintRaster", "render_slices_culled"]

#: elements of one evaluated ``[pairs, rows, cols]`` block (bounds temporary memory, ~40 B each)
_BLOCK_ELEMENTS = 1 << 21


def _blocks(bbox: torch.Tensor):
    """Yield ``(index, rows, cols)``: pairs whose footprints fit a ``rows x cols`` window."""
    if bbox.shape[0] == 0:
        return
    bw = bbox[:, 1] - bbox[:, 0] + 1
    bh = bbox[:, 3] - bbox[:, 2] + 1
    # bucket key: next power of two of each side, so a bucket wastes at most 3/4 of its window
    kw = torch.ceil(torch.log2(bw.double())).long()
    kh = torch.ceil(torch.log2(bh.double())).long()
    key = kh * 64 + kw
    order = torch.argsort(key, stable=True)
    keys, counts = torch.unique_consecutive(key[order], return_counts=True)
    start = 0
    for n in counts.tolist():
        idx = order[start : start + n]
        start += n
        rows, cols = int(bh[idx].max()), int(bw[idx].max())
        step = max(1, _BLOCK_ELEMENTS // (rows * cols))
        for s in range(0, n, step):
            yield idx[s : s + step], rows, cols


def _footprint(params, rad2, bbox, slice_index, idx, rows, cols, H, W):
    """Per-pixel terms of a block: flat pixel index, validity mask, q, dc, dr (``[n, rows, cols]``)."""
    p = params[idx]
    c0, r0, a, b, c = (p[:, k, None, None] for k in range(5))
    bb = bbox[idx]
    dev = params.device
    cc = bb[:, 0, None, None] + torch.arange(cols, device=dev)[None, None, :]
    rr = bb[:, 2, None, None] + torch.arange(rows, device=dev)[None, :, None]
    dc = cc.to(params.dtype) - c0
    dr = rr.to(params.dtype) - r0
    q = a * dc * dc + 2.0 * b * dc * dr + c * dr * dr
    valid = (cc <= bb[:, 1, None, None]) & (rr <= bb[:, 3, None, None]) & (q <= rad2[idx, None, None])
    flat = (slice_index[idx, None, None] * H + rr.clamp_max(H - 1)) * W + cc.clamp_max(W - 1)
    return flat, valid, q, dc, dr


class FootprintRaster(torch.autograd.Function):
    """``(params (P, 6), rad2, bbox, slice_index, B, H, W) -> image (B, H, W)``, hand-written backward.

    ``params`` columns are ``(c0, r0, a, b, c, w)``; see :mod:`._conic`. Only ``params`` gets a
    gradient.
    """

    @staticmethod
    def forward(ctx, params, rad2, bbox, slice_index, B, H, W):
        ctx.save_for_backward(params, rad2, bbox, slice_index)
        ctx.dims = (B, H, W)
        out = params.new_zeros(B * H * W)
        for idx, rows, cols in _blocks(bbox):
            flat, valid, q, _, _ = _footprint(params, rad2, bbox, slice_index, idx, rows, cols, H, W)
            w = params[idx, 5, None, None]
            val = torch.where(valid, w * torch.exp(-0.5 * q), torch.zeros((), dtype=q.dtype, device=q.device))
            out.index_add_(0, flat.reshape(-1), val.reshape(-1))
        return out.view(B, H, W)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_image):
        params, rad2, bbox, slice_index = ctx.saved_tensors
        B, H, W = ctx.dims
        grad = torch.zeros_like(params)
        g_flat = grad_image.contiguous().view(-1).to(params.dtype)
        for idx, rows, cols in _blocks(bbox):
            flat, valid, q, dc, dr = _footprint(params, rad2, bbox, slice_index, idx, rows, cols, H, W)
            p = params[idx]
            a, b, c, w = (p[:, k, None, None] for k in (2, 3, 4, 5))
            ge = torch.where(valid, g_flat[flat] * torch.exp(-0.5 * q), torch.zeros((), dtype=q.dtype, device=q.device))
            t = ge * w
            tdc, tdr = t * dc, t * dr
            grad[idx] = torch.stack(
                [
                    (a * tdc + b * tdr).sum((1, 2)),
                    (b * tdc + c * tdr).sum((1, 2)),
                    -0.5 * (tdc * dc).sum((1, 2)),
                    -(tdc * dr).sum((1, 2)),
                    -0.5 * (tdr * dr).sum((1, 2)),
                    ge.sum((1, 2)),
                ],
                dim=-1,
            )
        return grad, None, None, None, None, None, None


def render_slices_culled(
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
    """Render ``(B, H, W)`` slices, culled per plane; arguments as
    :func:`~sono3d.sweep.raster.reference.render_slices_reference`. Any device, any float dtype."""
    return render_pairs(FootprintRaster, means, log_scales, quats, opacity_logits, intensities,
                        image_to_world, shape, cutoff, elevation_sigma)


register_backend("culled", render_slices_culled)
