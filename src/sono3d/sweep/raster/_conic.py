"""Per-(slice, Gaussian) preprocessing shared by the culled backends: a 3D Gaussian on a plane.

For slice ``b`` with ``image_to_world`` columns ``u`` (one column step), ``v`` (one row step) and
origin ``o``, pixel ``(col, row)`` sits at ``x = o + col u + row v``. Let ``n`` be the unit normal
``u x v / |u x v|``, ``A = Sigma^-1`` and ``delta = n . (mu - o)`` the signed distance of the mean
from the plane. Then for every ``x`` on the plane (exactly, no approximation)::

    (x - mu)^T A (x - mu) = q(x) + delta^2 / sigma_n^2,     sigma_n^2 = n^T Sigma n,
    q = a dc^2 + 2 b dc dr + c dr^2,    (dc, dr) = (col - c0, row - r0),
    a = u^T A u,  b = u^T A v,  c = v^T A v,

where ``(c0, r0)`` are the pixel coordinates of ``x* = mu - delta Sigma n / sigma_n^2``, the point
of the plane where the Gaussian peaks (``A (x* - mu)`` is parallel to ``n``, hence the cross term
vanishes). So the Gaussian restricted to the plane is a 2D Gaussian (conic ``a, b, c`` about
``(c0, r0)``) times ``exp(-1/2 delta^2 / sigma_n^2)``: the paper's slice profile. Its pixel
contribution is ``w exp(-q/2)`` with the per-pair weight ``w = sigmoid(o_g) I_g exp(-delta^2 /
(2 sigma_n^2))``.

Slice thickness (an elevation profile of standard deviation ``s``, see :mod:`.reference`) replaces
``Sigma`` by ``Sigma' = Sigma + s^2 n n^T`` for the pair and scales ``w`` by
``gamma = (1 + s^2 n^T Sigma^-1 n)^(-1/2)``. Everything above holds with ``Sigma'``:
``sigma_n'^2 = sigma_n^2 + s^2``, ``Sigma' n = Sigma n + s^2 n``, and by Sherman-Morrison
``A' = A - k A n n^T A`` with ``k = s^2 / (1 + s^2 n^T A n)``, so with ``N = S^-1 R^T n`` (the
whitened normal, ``|N|^2 = n^T A n``) the conic becomes ``a' = a - k (N.U)^2``,
``b' = b - k (N.U)(N.V)``, ``c' = c - k (N.V)^2``.

The ``cutoff`` rule of the reference (a contribution is 0 where ``(x-mu)^T A (x-mu) > cutoff^2``)
becomes ``q <= rad2 = cutoff^2 - delta^2/sigma_n^2`` per pair, so

* a pair is culled when ``delta^2 > cutoff^2 sigma_n^2`` (the Gaussian never reaches the plane) or
  when the ellipse ``q <= rad2`` misses the image;
* its footprint is the pixel bounding box of that ellipse, half-widths
  ``sqrt(rad2 c / det)`` columns and ``sqrt(rad2 a / det)`` rows, ``det = a c - b^2``.

The pixel kernels (one ``torch.autograd.Function`` per backend) only see the packed per-pair parameters
``(c0, r0, a, b, c, w)`` plus the non-differentiable ``rad2``, footprint and slice index; their
hand-written backward returns ``dL/d(c0, r0, a, b, c, w)`` per pair. The chain from those six
numbers back to the Gaussian tensors and ``image_to_world`` is PyTorch autograd over ``[pairs]``
-sized tensors built here (cheap: no pixel dimension). Gradients through the cutoff itself are
zero almost everywhere, as in the reference, so ``rad2`` and the footprint are detached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sono3d.sweep.gaussians import covariance, quat_to_rotmat
from sono3d.sweep.raster.reference import check_slice_args

__all__ = ["SlicePairs", "slice_pairs", "render_pairs", "PARAMS"]

#: names of the packed per-pair parameter columns the kernels differentiate
PARAMS = ("c0", "r0", "a", "b", "c", "w")

# Footprints are widened by this many pixels against rounding; the kernels still test q <= rad2.
_BBOX_MARGIN = 1e-2


@dataclass
class SlicePairs:
    """The (slice, Gaussian) pairs that survive culling, with their 2D conics.

    Attributes
    ----------
    slice_index, gauss_index : Tensor, shape (P,), int64
    params : Tensor, shape (P, 6)
        ``(c0, r0, a, b, c, w)`` (see module docstring); differentiable w.r.t. the inputs.
    rad2 : Tensor, shape (P,)
        Cutoff radius² in ``q`` units (``inf`` without cutoff); detached.
    bbox : Tensor, shape (P, 4), int64
        Inclusive pixel footprint ``(col0, col1, row0, row1)``, inside the image.
    """

    slice_index: torch.Tensor
    gauss_index: torch.Tensor
    params: torch.Tensor
    rad2: torch.Tensor
    bbox: torch.Tensor

    def __len__(self) -> int:
        return int(self.params.shape[0])

    def footprint_pixels(self) -> int:
        """Pixels in all footprints (the work a kernel does, up to the ellipse test)."""
        b = self.bbox
        return int(((b[:, 1] - b[:, 0] + 1) * (b[:, 3] - b[:, 2] + 1)).sum()) if len(self) else 0


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum(-1)


def slice_pairs(
    means: torch.Tensor,
    log_scales: torch.Tensor,
    quats: torch.Tensor,
    opacity_logits: torch.Tensor,
    intensities: torch.Tensor,
    image_to_world: torch.Tensor,
    shape: tuple[int, int],
    cutoff: float | None,
    elevation_sigma: float = 0.0,
) -> SlicePairs:
    """Cull (slice, Gaussian) pairs and build their conics; see the module docstring.

    Parameters
    ----------
    means, log_scales, quats, opacity_logits, intensities : Tensor
        The Gaussians, shapes ``(G, 3) (G, 3) (G, 4) (G,) (G,)``.
    image_to_world : Tensor, shape (B, 4, 4)
        Pixel ``(col, row, 0, 1)`` to world mm per slice (only columns 0, 1, 3 are used).
    shape : (H, W)
    cutoff : float or None
        Mahalanobis cutoff radius; ``None`` keeps every pair with a full-image footprint.
    elevation_sigma : float
        Standard deviation (mm) of the slices' elevation profile (0: thin planes).
    """
    H, W = check_slice_args(image_to_world, shape, cutoff, elevation_sigma)
    t2 = float(elevation_sigma) ** 2
    dev, dt = means.device, means.dtype
    M = image_to_world.to(dt)
    u, v, o = M[:, :3, 0], M[:, :3, 1], M[:, :3, 3]  # (B, 3)
    normal = torch.linalg.cross(u, v)
    n = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-30)

    # Stage 1 (no grad, all B x G): distance to the plane against the normal standard deviation.
    if cutoff is None:
        bi, gi = torch.meshgrid(
            torch.arange(M.shape[0], device=dev), torch.arange(means.shape[0], device=dev), indexing="ij"
        )
        bi, gi = bi.reshape(-1), gi.reshape(-1)
    else:
        with torch.no_grad():
            delta = n @ means.T - _dot(n, o)[:, None]  # (B, G)
            sigma = covariance(log_scales, quats).reshape(-1, 9)
            sn2 = (n[:, :, None] * n[:, None, :]).reshape(-1, 9) @ sigma.T  # n^T Sigma n, (B, G)
            bi, gi = torch.nonzero(delta * delta <= (cutoff * cutoff) * (sn2 + t2), as_tuple=True)

    # Stage 2 (differentiable, candidate pairs only), in each Gaussian's own frame where
    # A = R S^-2 R^T: plane vectors become U = S^-1 R^T u etc., so a = U.U, b = U.V, c = V.V.
    up, vp, op, np_ = u[bi], v[bi], o[bi], n[bi]
    mu = means[gi]
    R = quat_to_rotmat(quats[gi])  # (P, 3, 3)
    ls = log_scales[gi]
    inv_s, s = torch.exp(-ls), torch.exp(ls)
    local = R.transpose(1, 2) @ torch.stack([up, vp, np_], dim=-1)  # R^T [u v n], (P, 3, 3)
    U, V = local[..., 0] * inv_s, local[..., 1] * inv_s
    Sn = local[..., 2] * s  # S R^T n: |Sn|^2 = n^T Sigma n
    ca, cb, cc = _dot(U, U), _dot(U, V), _dot(V, V)
    e = mu - op
    delta = _dot(np_, e)
    sn2 = _dot(Sn, Sn)
    sig_n = (R @ (Sn * s)[:, :, None])[..., 0]  # Sigma n
    gamma = None
    if t2 > 0:  # Sigma' = Sigma + t2 n n^T (see the module docstring)
        N = local[..., 2] * inv_s  # whitened normal, |N|^2 = n^T Sigma^-1 n
        nu, nv, nn = _dot(N, U), _dot(N, V), _dot(N, N)
        k = t2 / (1.0 + t2 * nn)
        ca, cb, cc = ca - k * nu * nu, cb - k * nu * nv, cc - k * nv * nv
        gamma = torch.rsqrt(1.0 + t2 * nn)
        sn2 = sn2 + t2
        sig_n = sig_n + t2 * np_
    mmin2 = delta * delta / sn2
    xs = e - (delta / sn2)[:, None] * sig_n  # peak point minus origin, in the plane
    guu, guv, gvv = _dot(up, up), _dot(up, vp), _dot(vp, vp)
    gdet = guu * gvv - guv * guv
    pu, pv = _dot(up, xs), _dot(vp, xs)
    c0 = (gvv * pu - guv * pv) / gdet
    r0 = (guu * pv - guv * pu) / gdet
    w = torch.sigmoid(opacity_logits[gi]) * intensities[gi] * torch.exp(-0.5 * mmin2)
    if gamma is not None:
        w = w * gamma
    params = torch.stack([c0, r0, ca, cb, cc, w], dim=-1)

    with torch.no_grad():
        if cutoff is None:
            rad2 = torch.full_like(w, float("inf"))
            bbox = torch.tensor([0, W - 1, 0, H - 1], device=dev).expand(len(w), 4).contiguous()
            keep = torch.ones_like(w, dtype=torch.bool)
        else:
            rad2 = (cutoff * cutoff - mmin2).clamp_min(0.0)
            # det = a c - b^2 = |U x V|^2 = |u x v|^2 (n^T Sigma n) / (s1 s2 s3)^2, free of cancellation
            # (with thickness: n^T Sigma' n / det Sigma', det Sigma' = det Sigma / gamma^2)
            det = _dot(normal[bi], normal[bi]) * sn2 * torch.exp(-2.0 * ls.sum(-1))
            if gamma is not None:
                det = det * gamma.detach() ** 2
            ext_c = torch.sqrt(rad2 * cc / det) + _BBOX_MARGIN
            ext_r = torch.sqrt(rad2 * ca / det) + _BBOX_MARGIN
            big = float(max(H, W) + 2)
            # clamp in float before the integer cast so huge footprints cannot overflow
            x0 = torch.ceil((c0 - ext_c).clamp(-1.0, big)).long().clamp_min(0)
            x1 = torch.floor((c0 + ext_c).clamp(-1.0, big)).long().clamp_max(W - 1)
            y0 = torch.ceil((r0 - ext_r).clamp(-1.0, big)).long().clamp_min(0)
            y1 = torch.floor((r0 + ext_r).clamp(-1.0, big)).long().clamp_max(H - 1)
            bbox = torch.stack([x0, x1, y0, y1], dim=-1)
            keep = (x0 <= x1) & (y0 <= y1) & torch.isfinite(params.detach()).all(-1)
        idx = torch.nonzero(keep, as_tuple=True)[0]
    return SlicePairs(bi[idx], gi[idx], params[idx], rad2[idx], bbox[idx])


def render_pairs(
    raster: type[torch.autograd.Function],
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
    """Cull, then draw the pairs with ``raster.apply(params, rad2, bbox, slice_index, B, H, W)``.

    The ``culled`` and ``triton`` backends are this function with their own ``raster`` Function
    (``numba`` compiles the same preprocessing, see :mod:`._numba_pairs`).
    Returns ``(B, H, W)`` in the dtype of ``means``.
    """
    pairs = slice_pairs(means, log_scales, quats, opacity_logits, intensities, image_to_world, shape, cutoff,
                        elevation_sigma)
    B, (H, W) = image_to_world.shape[0], shape
    return raster.apply(pairs.params, pairs.rad2, pairs.bbox, pairs.slice_index, int(B), int(H), int(W))
