"""Deprecated alias of :mod:`sono3d.sweep.initialise` (the old name read like ``__init__``).

Kept for one release so that existing imports keep working; import from
:mod:`sono3d.sweep.initialise` instead.
"""

from sono3d.sweep.initialise import (
    PAPER_FRAME_PX,
    default_gaussians,
    frame_grid_pixels,
    frame_mask,
    on_slice_means,
    paper_pixel_mm,
    sweep_bounds,
    uniform_means,
)

__all__ = ["PAPER_FRAME_PX", "default_gaussians", "frame_grid_pixels", "frame_mask", "on_slice_means",
           "paper_pixel_mm", "sweep_bounds", "uniform_means"]
