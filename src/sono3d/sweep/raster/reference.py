"""The plain-PyTorch reference slice rasterizer: the exact forward model, differentiated by autograd.

For every pixel ``p`` of every slice, with world position ``x_p`` (from the slice's
``image_to_world``)::

    I_p = sum_g sigmoid(o_g) * exp(-1/2 d^T Sigma_g^-1 d) * I_g,   d = x_p - mu_g

with no alpha compositing (the paper's model).

Slice thickness (beyond the paper): with ``elevation_sigma = s > 0`` a slice is not an infinitely
thin plane but integrates the volume over a normalised Gaussian elevation profile of standard
deviation ``s`` (mm) along its unit normal ``n``::

    I_p = integral N(t; 0, s^2) V(x_p + t n) dt.

For one Gaussian the integral is closed form: convolving ``exp(-d^T Sigma^-1 d / 2)`` with the
normalised 1D Gaussian along ``n`` gives

    sqrt(det Sigma / det Sigma') exp(-d^T Sigma'^-1 d / 2),   Sigma' = Sigma + s^2 n n^T,

and ``det Sigma' / det Sigma = 1 + s^2 n^T Sigma^-1 n`` (matrix determinant lemma), so every pair
(slice, Gaussian) renders with the covariance widened along that slice's normal and its weight
scaled by ``gamma = (1 + s^2 n^T Sigma^-1 n)^(-1/2)``. ``s = 0`` is the thin plane. Here
``Sigma'`` is built and inverted per pair (the dense definition the fast backends are tested
against). With ``cutoff`` set, a Gaussian contributes nothing
where its Mahalanobis distance ``sqrt(d^T Sigma^-1 d)`` exceeds ``cutoff`` -- the same rule every
fast backend applies, so they can be compared exactly. ``cutoff=None`` is the exact model.

Dense: cost O(B * H * W * G); chunked over pixels so memory stays bounded. It is the ground
truth the fast backends are tested against, not a production path.
"""

from __future__ import annotations

import math

import torch

from sono3d.errors import InputError
from sono3d.sweep.gaussians import covariance, inverse_covariance

__all__ = ["render_slices_reference", "pixel_positions", "check_slice_args"]


def check_slice_args(image_to_world: torch.Tensor, shape: tuple[int, int], cutoff: float | None,
                     elevation_sigma: float = 0.0) -> tuple[int, int]:
    """The checks every backend makes of its slice arguments; returns ``(H, W)`` as ints."""
    if not (elevation_sigma >= 0 and math.isfinite(elevation_sigma)):
        raise InputError(f"elevation sigma (slice thickness) must be >= 0 mm, got {elevation_sigma}")
    if image_to_world.ndim != 3 or tuple(image_to_world.shape[1:]) != (4, 4):
        raise InputError(f"image_to_world must have shape (B, 4, 4), got {tuple(image_to_world.shape)}")
    H, W = int(shape[0]), int(shape[1])
    if H <= 0 or W <= 0:
        raise InputError(f"slice shape must be positive, got {shape}")
    if cutoff is not None and not cutoff > 0:
        raise InputError(f"cutoff must be positive or None, got {cutoff}")
    return H, W


def pixel_positions(image_to_world: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """World mm of every pixel centre: ``(B, H, W, 3)`` from ``image_to_world`` ``(B, 4, 4)``."""
    H, W = shape
    dev, dt = image_to_world.device, image_to_world.dtype
    rows = torch.arange(H, device=dev, dtype=dt)
    cols = torch.arange(W, device=dev, dtype=dt)
    M = image_to_world
    return (
        cols[None, None, :, None] * M[:, None, None, :3, 0]
        + rows[None, :, None, None] * M[:, None, None, :3, 1]
        + M[:, None, None, :3, 3]
    )


def render_slices_reference(
    means: torch.Tensor,
    log_scales: torch.Tensor,
    quats: torch.Tensor,
    opacity_logits: torch.Tensor,
    intensities: torch.Tensor,
    image_to_world: torch.Tensor,
    shape: tuple[int, int],
    cutoff: float | None,
    chunk_pixels: int = 4096,
    elevation_sigma: float = 0.0,
) -> torch.Tensor:
    """Render ``B`` slices of ``G`` Gaussians densely; differentiable w.r.t. every input tensor.

    Parameters
    ----------
    means, log_scales, quats, opacity_logits, intensities : Tensor
        Shapes ``(G, 3)``, ``(G, 3)``, ``(G, 4)``, ``(G,)``, ``(G,)``; see
        :class:`~sono3d.sweep.gaussians.Gaussians`.
    image_to_world : Tensor, shape (B, 4, 4)
        Pixel ``(col, row, 0, 1)`` to world mm, per slice.
    shape : (H, W)
        Slice size in pixels.
    cutoff : float or None
        Mahalanobis radius beyond which a Gaussian contributes 0 (``None``: exact model).
    chunk_pixels : int
        Pixels per chunk; memory is about ``chunk_pixels * G * 4 * 8`` bytes.
    elevation_sigma : float
        Standard deviation (mm) of the slice's Gaussian elevation profile; 0: a thin plane.

    Returns
    -------
    Tensor, shape (B, H, W)
    """
    H, W = check_slice_args(image_to_world, shape, cutoff, elevation_sigma)
    B = image_to_world.shape[0]
    if means.shape[0] == 0:
        return image_to_world.new_zeros((B, H, W)) + 0.0 * intensities.sum()
    weight = torch.sigmoid(opacity_logits) * intensities  # (G,)
    if elevation_sigma > 0:
        out = [_render_thick(means, covariance(log_scales, quats), weight, image_to_world[b:b + 1], (H, W),
                             cutoff, chunk_pixels, float(elevation_sigma)) for b in range(B)]
        return torch.cat(out).reshape(B, H, W)
    inv_cov = inverse_covariance(log_scales, quats)  # (G, 3, 3)
    x = pixel_positions(image_to_world, (H, W)).reshape(-1, 3)
    return _accumulate(x, means, inv_cov, weight, cutoff, chunk_pixels).reshape(B, H, W)


def _accumulate(x: torch.Tensor, means: torch.Tensor, inv_cov: torch.Tensor, weight: torch.Tensor,
                cutoff: float | None, chunk_pixels: int) -> torch.Tensor:
    """``sum_g weight_g exp(-m^2/2) [m <= cutoff]`` at the points ``x`` ``(P, 3)``."""
    out = []
    for start in range(0, x.shape[0], chunk_pixels):
        d = x[start : start + chunk_pixels, None, :] - means[None, :, :]  # (P, G, 3)
        m2 = torch.einsum("pgi,gij,pgj->pg", d, inv_cov, d)
        g = torch.exp(-0.5 * m2)
        if cutoff is not None:
            g = torch.where(m2 <= cutoff * cutoff, g, torch.zeros_like(g))
        out.append(g @ weight)
    return torch.cat(out)


def _render_thick(means: torch.Tensor, cov: torch.Tensor, weight: torch.Tensor, image_to_world: torch.Tensor,
                  shape: tuple[int, int], cutoff: float | None, chunk_pixels: int, sigma: float) -> torch.Tensor:
    """One slice integrated over its elevation profile: ``Sigma + s^2 n n^T`` and the weight times gamma."""
    u, v = image_to_world[0, :3, 0], image_to_world[0, :3, 1]
    n = torch.linalg.cross(u, v)
    n = n / n.norm()
    wide = cov + sigma * sigma * (n[:, None] * n[None, :])  # (G, 3, 3)
    gamma = torch.sqrt(torch.linalg.det(cov) / torch.linalg.det(wide))
    x = pixel_positions(image_to_world, shape).reshape(-1, 3)
    return _accumulate(x, means, torch.linalg.inv(wide), weight * gamma, cutoff, chunk_pixels)
