"""Normalised ("blended") rendering (beyond the paper): each pixel is a weighted mean of Gaussians' intensities.

The paper's model adds the Gaussians up, ``I_p = sum_g w_gp I_g`` with ``w_gp = sigmoid(o_g)
exp(-m_gp^2 / 2)``. Trained on the frames of a sparse sweep, the sum is calibrated on the training
planes only: between them fewer Gaussians reach a plane and it renders darker (on the PLUS spine
sweep, frames 1-2.5 mm apart, an intensity-fitted model reproduced its training frames at 23.9 dB
and the held-out frames between them at 16.0 dB). The blended model divides by the total weight::

    I_p = sum_g w_gp I_g / (sum_g w_gp + eps),

a Nadaraya-Watson (normalised convolution) estimator, as compounding's mean of the pixels pasted
into a voxel is: a plane between two layers of Gaussians gets a weighted mean of both, whatever its
distance from them. ``eps`` (default 1e-3, in units of the weights, which are about 1 to 10 where
Gaussians overlap) makes pixels that no Gaussian reaches render 0 instead of 0/0.

Both sums are renderings by the same rasterizer (the second with every intensity 1), so every
backend serves and autograd differentiates the quotient; it costs two renderings.
"""

from __future__ import annotations

import torch

from sono3d.sweep.raster import render_slices

__all__ = ["BLEND_EPS", "render_blended"]

#: added to the total weight before dividing (see the module notes)
BLEND_EPS = 1e-3


def render_blended(means: torch.Tensor, log_scales: torch.Tensor, quats: torch.Tensor, opacity_logits: torch.Tensor,
                   intensities: torch.Tensor, image_to_world: torch.Tensor, shape: tuple[int, int],
                   backend: str = "reference", cutoff: float | None = 3.0, elevation_sigma: float = 0.0,
                   eps: float = BLEND_EPS) -> torch.Tensor:
    """``(B, H, W)`` weighted means of the intensities; arguments as :func:`~sono3d.sweep.raster.render_slices`."""
    num = render_slices(means, log_scales, quats, opacity_logits, intensities, image_to_world, shape, backend=backend,
                        cutoff=cutoff, elevation_sigma=elevation_sigma)
    den = render_slices(means, log_scales, quats, opacity_logits, torch.ones_like(intensities), image_to_world, shape,
                        backend=backend, cutoff=cutoff, elevation_sigma=elevation_sigma)
    return num / (den + eps)
