"""Deprecated alias of :mod:`sono3d.sweep.reconstruct` (where :func:`reconstruct_sweep` now lives).

Kept for one release so that existing imports keep working; import from
:mod:`sono3d.sweep.reconstruct` (or simply :mod:`sono3d.sweep`) instead.
"""

from sono3d.sweep.raster import choose_backend
from sono3d.sweep.reconstruct import (
    PRESETS,
    ReconstructConfig,
    ReconstructResult,
    check_sweep,
    gaussian_visibility,
    reconstruct_sweep,
)

__all__ = ["PRESETS", "ReconstructConfig", "ReconstructResult", "reconstruct_sweep", "choose_backend",
           "check_sweep", "gaussian_visibility"]
