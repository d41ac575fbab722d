"""Classic freehand compounding: paste tracked 2D frames into a voxel grid, then fill the holes.

This is the baseline the field knows from the PLUS toolkit's volume reconstructor
(``vtkPlusPasteSliceIntoVolume`` followed by ``vtkPlusFillHolesInVolume``), re-implemented as compiled
loops (numba) in PLUS's order; hole filling visits only the holes within a kernel's reach of data:

1. **Clipping.** Only the pixels inside the clip rectangle, the PLUS fan and the sweep's
   :class:`~sono3d.types.Sector` are pasted.
2. **Splatting.** Every kept pixel goes to continuous voxel coordinates through
   ``inv(grid_affine) @ image_to_world``. *Nearest*: it lands in the voxel it rounds to.
   *Linear*: it is spread over the eight surrounding voxels with trilinear weights (PLUS skips a
   pixel whose eight neighbours are not all inside the grid; so do we).
3. **Compounding.** *Mean*: weighted mean of all contributions (weights 1 or trilinear).
   *Max*: the brightest contribution. *Latest*: the contribution of the last frame (ties inside a
   frame go to the last pixel in raster order). With linear splatting, max and latest only touch
   the neighbours whose trilinear weight is at least 1/8, as PLUS does.
4. **Hole filling.** Voxels that received nothing are filled by the first kernel (in the order
   given) that succeeds: Gaussian, Gaussian weighted by the accumulation buffer, inverse distance,
   nearest neighbour (all require more than ``min_ratio`` of the ``size^3`` cube to be known) or
   sticks (linear interpolation between the nearest recorded voxels on either side along 13
   directions). Kernels read only originally recorded voxels (one pass, like PLUS). Holes farther
   than ``max_hole_mm / 2`` from any recorded voxel are left empty.

Differences from PLUS, on purpose: values are float32 (PLUS rounds to the input pixel type after
every pixel), accumulation weights are unbounded (PLUS saturates its 16-bit buffer after 255 full
pixels per voxel), and under max compounding a voxel hit only by black pixels counts as recorded.

The grid is either given (origin, shape, spacing, e.g. from a PLUS configuration) or the bounding
box of all clipped pixels, aligned with the RAS axes or, for PLUS data, with the LPS-labelled
``Reference`` axes (``grid_axes="lps"``) so that voxel centres coincide with PLUS's own output.

Modules: :mod:`.config` (options, PLUS configuration), :mod:`.splat` (pasting),
:mod:`.holes` (hole filling), :mod:`.pipeline` (:func:`compound_sweep` and its evaluation). Every
name is importable from ``sono3d.sweep.compound``.
"""

from sono3d.sweep.compound.config import (
    COMPOUNDING_MODES,
    HOLE_KERNELS,
    INTERPOLATION_METHODS,
    CompoundConfig,
    FanClip,
    HoleKernel,
    read_plus_hole_filling,
    read_plus_reconstruction,
)
from sono3d.sweep.compound.holes import fill_holes
from sono3d.sweep.compound.pipeline import (
    CompoundResult,
    clip_mask,
    compare_volumes,
    compound_sweep,
    evaluate_holdout,
    holdout_predictions,
    output_grid,
    tracked_poses,
)
from sono3d.sweep.compound.splat import splat_frames
from sono3d.sweep.evaluate import holdout_split

__all__ = [
    "COMPOUNDING_MODES",
    "HOLE_KERNELS",
    "INTERPOLATION_METHODS",
    "CompoundConfig",
    "CompoundResult",
    "FanClip",
    "HoleKernel",
    "clip_mask",
    "compare_volumes",
    "compound_sweep",
    "evaluate_holdout",
    "fill_holes",
    "holdout_predictions",
    "holdout_split",
    "output_grid",
    "read_plus_hole_filling",
    "read_plus_reconstruction",
    "splat_frames",
    "tracked_poses",
]
