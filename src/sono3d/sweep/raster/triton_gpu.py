"""GPU slice rasterizer: Triton kernels over the culled pairs, backend ``"triton"``.

.. warning:: Untested on GPU hardware. It was written where no GPU was available; it follows the
   decomposition that :mod:`.culled` and :mod:`.numba_cpu` test against the reference (pairs and
   conics from :mod:`._conic`, the same hand-derived per-pair gradient). Its tests in
   ``tests/test_raster.py`` run where CUDA and Triton are present, or on the CPU under Triton's
   interpreter (``TRITON_INTERPRET=1``), which is how its logic was checked; compiled behaviour
   and speed on a GPU are unverified.

Importing this module needs ``triton``; ``sono3d`` itself never imports it (the backend registry
loads it on first use and reports it unavailable otherwise).

Kernels (one program per (slice, Gaussian) pair, ``BH x BW`` pixel blocks over its footprint):

* forward: ``w exp(-q/2)`` where ``q <= rad2``, added to the image with ``atomic_add`` (a pair's
  pixels are distinct, so atomics only meet between overlapping pairs; summation order, hence the
  last bits, may vary run to run);
* backward: per pair, block sums of ``g e``, ``g e dc``, ``g e dr``, ``g e dc^2``, ``g e dc dr``,
  ``g e dr^2`` reduced in registers and written once (no atomics), then combined into
  ``dL/d(c0, r0, a, b, c, w)`` as in :class:`.culled.FootprintRaster`.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from sono3d.errors import InputError
from sono3d.sweep.raster import register_backend
from sono3d.sweep.raster._conic import render_pairs

__all__ = ["TritonRaster", "render_slices_triton"]

_BH, _BW = 8, 16
#: Triton's interpreter (``TRITON_INTERPRET=1``) runs the kernels on CPU tensors: how the kernels
#: are checked on a machine without a GPU
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _load_pair(params_ptr, rad2_ptr, bbox_ptr, sl_ptr, p, H, W):
    """Pair ``p``'s conic ``(c0, r0, a, b, c, w)``, ``rad2``, footprint box and its slice's offset."""
    c0 = tl.load(params_ptr + p * 6 + 0)
    r0 = tl.load(params_ptr + p * 6 + 1)
    a = tl.load(params_ptr + p * 6 + 2)
    b = tl.load(params_ptr + p * 6 + 3)
    c = tl.load(params_ptr + p * 6 + 4)
    w = tl.load(params_ptr + p * 6 + 5)
    rr = tl.load(rad2_ptr + p)
    x0 = tl.load(bbox_ptr + p * 4 + 0)
    x1 = tl.load(bbox_ptr + p * 4 + 1)
    y0 = tl.load(bbox_ptr + p * 4 + 2)
    y1 = tl.load(bbox_ptr + p * 4 + 3)
    base = tl.load(sl_ptr + p).to(tl.int64) * H * W
    return c0, r0, a, b, c, w, rr, x0, x1, y0, y1, base


@triton.jit
def _block(ry, rx, ii, jj, c0, r0, a, b, c, rr, x1, y1):
    """Rows, columns, offsets ``dr, dc``, the quadratic form ``q`` and the inside mask of a pixel block."""
    rows = ry + ii
    cols = rx + jj
    dr = rows.to(tl.float32) - r0
    dc = cols.to(tl.float32) - c0
    q = a * dc * dc + 2.0 * b * dc * dr + c * dr * dr
    m = (rows <= y1) & (cols <= x1) & (q <= rr)
    return rows, cols, dr, dc, q, m


@triton.jit
def _forward_kernel(params_ptr, rad2_ptr, bbox_ptr, sl_ptr, out_ptr, H, W,
                    BH: tl.constexpr, BW: tl.constexpr):
    p = tl.program_id(0)
    c0, r0, a, b, c, w, rr, x0, x1, y0, y1, base = _load_pair(params_ptr, rad2_ptr, bbox_ptr, sl_ptr, p, H, W)
    ii = tl.arange(0, BH)[:, None]
    jj = tl.arange(0, BW)[None, :]
    for ry in range(y0, y1 + 1, BH):
        for rx in range(x0, x1 + 1, BW):
            rows, cols, dr, dc, q, m = _block(ry, rx, ii, jj, c0, r0, a, b, c, rr, x1, y1)
            tl.atomic_add(out_ptr + base + rows * W + cols, w * tl.exp(-0.5 * q), mask=m)


@triton.jit
def _backward_kernel(params_ptr, rad2_ptr, bbox_ptr, sl_ptr, grad_ptr, out_ptr, H, W,
                     BH: tl.constexpr, BW: tl.constexpr):
    p = tl.program_id(0)
    c0, r0, a, b, c, w, rr, x0, x1, y0, y1, base = _load_pair(params_ptr, rad2_ptr, bbox_ptr, sl_ptr, p, H, W)
    ii = tl.arange(0, BH)[:, None]
    jj = tl.arange(0, BW)[None, :]
    s0 = tl.zeros((BH, BW), dtype=tl.float32)
    s1 = tl.zeros((BH, BW), dtype=tl.float32)
    s2 = tl.zeros((BH, BW), dtype=tl.float32)
    s3 = tl.zeros((BH, BW), dtype=tl.float32)
    s4 = tl.zeros((BH, BW), dtype=tl.float32)
    s5 = tl.zeros((BH, BW), dtype=tl.float32)
    for ry in range(y0, y1 + 1, BH):
        for rx in range(x0, x1 + 1, BW):
            rows, cols, dr, dc, q, m = _block(ry, rx, ii, jj, c0, r0, a, b, c, rr, x1, y1)
            g = tl.load(grad_ptr + base + rows * W + cols, mask=m, other=0.0)
            ge = tl.where(m, g * tl.exp(-0.5 * q), 0.0)
            s0 += ge
            s1 += ge * dc
            s2 += ge * dr
            s3 += ge * dc * dc
            s4 += ge * dc * dr
            s5 += ge * dr * dr
    t0 = tl.sum(tl.sum(s0, axis=1), axis=0)
    t1 = tl.sum(tl.sum(s1, axis=1), axis=0)
    t2 = tl.sum(tl.sum(s2, axis=1), axis=0)
    t3 = tl.sum(tl.sum(s3, axis=1), axis=0)
    t4 = tl.sum(tl.sum(s4, axis=1), axis=0)
    t5 = tl.sum(tl.sum(s5, axis=1), axis=0)
    tl.store(out_ptr + p * 6 + 0, w * (a * t1 + b * t2))
    tl.store(out_ptr + p * 6 + 1, w * (b * t1 + c * t2))
    tl.store(out_ptr + p * 6 + 2, -0.5 * w * t3)
    tl.store(out_ptr + p * 6 + 3, -w * t4)
    tl.store(out_ptr + p * 6 + 4, -0.5 * w * t5)
    tl.store(out_ptr + p * 6 + 5, t0)


class TritonRaster(torch.autograd.Function):
    """``(params (P, 6), rad2, bbox, slice_index, B, H, W) -> image (B, H, W)`` on a CUDA device.

    Same contract and hand-derived gradient as :class:`.culled.FootprintRaster`; float32 kernels.
    """

    @staticmethod
    def forward(ctx, params, rad2, bbox, slice_index, B, H, W):
        if params.device.type != "cuda" and not _INTERPRETED:
            raise InputError("the 'triton' rasterizer needs CUDA tensors; use 'numba' or 'culled' on the CPU")
        p32 = params.detach().to(torch.float32).contiguous()
        r32 = rad2.to(torch.float32).contiguous()
        bb = bbox.to(torch.int32).contiguous()
        sl = slice_index.to(torch.int32).contiguous()
        ctx.save_for_backward(p32, r32, bb, sl)
        ctx.dims = (B, H, W)
        ctx.dtype = params.dtype
        out = torch.zeros(B * H * W, dtype=torch.float32, device=params.device)
        P = p32.shape[0]
        if P:
            _forward_kernel[(P,)](p32, r32, bb, sl, out, H, W, BH=_BH, BW=_BW)
        return out.view(B, H, W).to(params.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_image):
        p32, r32, bb, sl = ctx.saved_tensors
        B, H, W = ctx.dims
        out = torch.zeros_like(p32)
        P = p32.shape[0]
        if P:
            g = grad_image.to(torch.float32).contiguous()
            _backward_kernel[(P,)](p32, r32, bb, sl, g, out, H, W, BH=_BH, BW=_BW)
        return out.to(ctx.dtype), None, None, None, None, None, None


def render_slices_triton(
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
    """Render ``(B, H, W)`` slices on a CUDA device with Triton kernels (untested on hardware);
    arguments as :func:`~sono3d.sweep.raster.reference.render_slices_reference`."""
    return render_pairs(TritonRaster, means, log_scales, quats, opacity_logits, intensities,
                        image_to_world, shape, cutoff, elevation_sigma)


register_backend("triton", render_slices_triton)
