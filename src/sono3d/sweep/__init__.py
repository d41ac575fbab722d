"""Sweep engine: a freehand 2D ultrasound sweep becomes a 3D volume.

Two methods on the same :class:`~sono3d.types.Sweep`:

* :func:`reconstruct_sweep` fits anisotropic 3D Gaussians to the frames (tracked poses or the
  sensorless fan prior, :func:`fan_prior_poses`) and returns a :class:`ReconstructResult`;
  :func:`reconstruct_to_folder` does the same from a file to a folder of outputs. Configure it
  with ``ReconstructConfig.preset("fast", epochs=30, ...)``.
* :func:`compound_sweep` is the classic PLUS-style compounding baseline (:class:`CompoundConfig`);
  :func:`evaluate_holdout` scores it on the same held-out frames (:func:`holdout_split`) as the
  Gaussians (:func:`frame_metrics`).

The trained :class:`Gaussians` are saved and loaded with :func:`save_ply` / :func:`load_ply`,
rendered on any planes with :func:`render_frames` and sampled on a voxel grid with
:func:`sample_volume`.

Modules, from the bottom up: ``gaussians`` (the model and its ``.ply``), ``raster`` (slice
rasterizers), ``initialise``, ``poses``, ``loss``, ``density``, ``evaluate`` (metrics and the
hold-out split), ``render`` (rendering without gradients), ``compound`` (the baseline),
``reconstruct`` (training), ``export`` (files in, files out).

This package imports neither VTK, PyVista nor nibabel: files that need them are written through
:mod:`sono3d.io`, which loads them when a volume or mesh is actually read or written.
"""

from sono3d.sweep.compound import CompoundConfig, CompoundResult, compound_sweep, evaluate_holdout
from sono3d.sweep.evaluate import frame_metrics, holdout_split, volume_metrics
from sono3d.sweep.export import reconstruct_to_folder, render_to_sweep
from sono3d.sweep.gaussians import Gaussians, load_ply, save_ply
from sono3d.sweep.poses import fan_prior_poses, resolve_poses
from sono3d.sweep.raster import available_backends, render_slices
from sono3d.sweep.reconstruct import PRESETS, ReconstructConfig, ReconstructResult, reconstruct_sweep
from sono3d.sweep.render import render_frames, sample_volume

__all__ = [
    "PRESETS",
    "CompoundConfig",
    "CompoundResult",
    "Gaussians",
    "ReconstructConfig",
    "ReconstructResult",
    "available_backends",
    "compound_sweep",
    "evaluate_holdout",
    "fan_prior_poses",
    "frame_metrics",
    "holdout_split",
    "load_ply",
    "reconstruct_sweep",
    "reconstruct_to_folder",
    "render_frames",
    "render_slices",
    "render_to_sweep",
    "resolve_poses",
    "sample_volume",
    "save_ply",
    "volume_metrics",
]
