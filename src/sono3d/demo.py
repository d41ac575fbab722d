"""The whole sweep path on a generated uterus: phantom, sweep, Gaussian reconstruction, compounding baseline.

This sits above the engines (beside the command line): it builds its input with
:mod:`sono3d.phantoms` and :mod:`sono3d.simulate`, then runs :mod:`sono3d.sweep` on it, so the
engine itself never needs a phantom. ``sono3d demo`` (``make demo``) calls :func:`demo_comparison`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sono3d.io import write_sweep, write_volume
from sono3d.io.lock import writer_lock
from sono3d.phantoms.uterus import build_uterus
from sono3d.simulate.sweeps import SweepConfig, simulate_sweep
from sono3d.sweep.compound import CompoundConfig, evaluate_holdout
from sono3d.sweep.evaluate import pooled_psnr
from sono3d.sweep.export import reconstruct_to_folder, write_report
from sono3d.sweep.reconstruct import ReconstructConfig

__all__ = ["demo_comparison"]


def demo_comparison(out_dir: "str | os.PathLike[str]", seed: int = 0, frames: int = 50, size_px: int = 128,
                    progress: bool = True, config: ReconstructConfig | None = None) -> dict[str, Any]:
    """Simulate a uterus sweep, reconstruct it with 3D Gaussians and compound it with the classic baseline.

    Builds the uterus phantom (``seed``), simulates a label-appearance fan sweep of ``frames``
    frames of ``size_px`` pixels, writes it (``sweep.seq.nrrd``) and the truth (``truth.nii.gz``),
    reconstructs it with :func:`~sono3d.sweep.export.reconstruct_to_folder` (tracked poses, every
    5th frame held out) and compounds the same training frames with the classic baseline
    (:func:`sono3d.sweep.compound.evaluate_holdout`, voxels of one pixel spacing).

    Parameters
    ----------
    out_dir : path-like
        Folder for every output (created).
    seed : int
        Seeds the phantom, the sweep and (unless ``config`` is given) the reconstruction.
    frames, size_px : int
        Number of frames and their side in pixels.
    progress : bool
        Show the reconstruction's progress bar.
    config : ReconstructConfig, optional
        Defaults to ``ReconstructConfig.preset("fast", seed=seed)``.

    Returns
    -------
    dict
        The reconstruction report with ``baseline`` (the compounding hold-out metrics) added; also
        written to ``report.json`` in ``out_dir``.
    """
    out = Path(out_dir)
    with writer_lock(out, "output folder"):
        out.mkdir(parents=True, exist_ok=True)
        phantom = build_uterus(seed=seed, mesh=False, spacing_mm=1.0)
        sweep, truth = simulate_sweep(phantom, SweepConfig(frames=frames, size_px=size_px, appearance="labels",
                                                           seed=seed))
        write_sweep(out / "sweep.seq.nrrd", sweep)
        write_volume(out / "truth.nii.gz", truth)
        cfg = config if config is not None else ReconstructConfig.preset("fast", seed=seed)
        report = reconstruct_to_folder(out / "sweep.seq.nrrd", out, cfg, truth_path=out / "truth.nii.gz",
                                       progress=progress)
        base = evaluate_holdout(sweep, cfg.holdout or 5, CompoundConfig(spacing_mm=max(sweep.spacing_mm)))
        report["baseline"] = {**base, "psnr_pooled": pooled_psnr(base["l2"])}
        write_report(out / "report.json", report)
        return report
