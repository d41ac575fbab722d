"""Metrics: image/volume similarity, surface agreement and the statistics of clinical reports."""

from sono3d.metrics.image import l1, mse, ncc, psnr, ssim, ssim_map, ssim_torch
from sono3d.metrics.stats import BlandAltman, Pearson, Spearman, bland_altman, mae, pearson, spearman
from sono3d.metrics.surface import (
    SurfaceDistances,
    assd,
    chamfer,
    dice,
    hausdorff,
    iou,
    nearest_distances,
    surface_distances,
)

__all__ = [
    "BlandAltman", "Pearson", "Spearman", "SurfaceDistances", "assd", "bland_altman", "chamfer",
    "dice", "hausdorff", "iou", "l1", "mae", "mse", "ncc", "nearest_distances", "pearson", "psnr",
    "spearman", "ssim", "ssim_map", "ssim_torch", "surface_distances",
]
