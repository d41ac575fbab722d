"""Metrics: image/volume similarity, surface agreement and the statistics of clinical reports."""

from sono3d.metrics.image import l1, mse, ncc, psnr, ssim, ssim_map, ssim_torch

__all__ = ["l1", "mse", "ncc", "psnr", "ssim", "ssim_map", "ssim_torch"]
