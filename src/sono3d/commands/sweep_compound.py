"""``sono3d sweep compound``: classic PLUS-style compounding of a tracked sweep into a volume."""

from __future__ import annotations

from pathlib import Path

import typer

from sono3d.errors import InputError, about
from sono3d.io import read_sweep, write_volume
from sono3d.io.lock import writer_lock
from sono3d.io.registry import lookup
from sono3d.sweep.compound import CompoundConfig, compound_sweep, tracked_poses


def compound(
    sweep_path: Path = typer.Argument(..., metavar="SWEEP", help="Tracked sweep (.seq.nrrd, .igs.mha, ...)."),
    out: Path = typer.Argument(..., metavar="OUT", help="Volume to write (.nii.gz, .nii, .mha, .nrrd)."),
    spacing: float | None = typer.Option(None, "--spacing", metavar="MM",
                                         help="Voxel size in mm; default: the PLUS config's, else the larger of 0.5 and the finest pixel spacing."),
    method: str | None = typer.Option(None, "--method", help="Pixel splatting: nearest or linear (default linear)."),
    compounding: str | None = typer.Option(None, "--compounding",
                                           help="Overlap rule: mean, max or latest (default mean)."),
    fill_holes: bool | None = typer.Option(None, "--fill-holes/--no-fill-holes",
                                           help="Fill unrecorded voxels (default on, or as the PLUS config says)."),
    plus_config: Path | None = typer.Option(None, "--plus-config", metavar="XML",
                                            help="PLUS configuration: calibration, grid, clipping, kernels."),
    max_hole: float | None = typer.Option(None, "--max-hole", metavar="MM",
                                          help="Leave holes wider than this empty."),
) -> None:
    """Paste the frames into a voxel grid at their known poses (mean/max/latest), then fill holes."""
    # Cheap checks first: no sweep is read for an option or output name that cannot work.
    if spacing is not None and not spacing > 0:
        raise InputError(f"--spacing must be positive, got {spacing} mm")
    if max_hole is not None and not max_hole > 0:
        raise InputError(f"--max-hole must be positive, got {max_hole} mm")
    lookup(out, "volume", writing=True)
    with writer_lock(out, "output volume"):
        _compound(sweep_path, out, spacing, method, compounding, fill_holes, plus_config, max_hole)


def _compound(sweep_path: Path, out: Path, spacing: float | None, method: str | None, compounding: str | None,
              fill_holes: bool | None, plus_config: Path | None, max_hole: float | None) -> None:
    sweep = read_sweep(sweep_path, plus_config=plus_config)
    if spacing is None and plus_config is None:
        # Voxels much finer than the pixels only add holes; much coarser would lose detail.
        spacing = max(0.5, min(sweep.spacing_mm))
    changes = {key: value for key, value in (("spacing_mm", spacing), ("method", method),
                                             ("compounding", compounding), ("fill_holes", fill_holes),
                                             ("max_hole_mm", max_hole)) if value is not None}
    config = CompoundConfig.from_plus(plus_config, **changes) if plus_config else CompoundConfig(**changes)
    with about(sweep_path):  # the sweep's own faults (untracked, non-rigid poses) name the file
        tracked_poses(sweep)
    result = compound_sweep(sweep, config)
    write_volume(out, result.volume)
    st = result.stats
    i, j, k = st["shape"]
    holes = f", {st['holes_filled']} holes filled" if config.fill_holes else ""
    typer.echo(
        f"wrote {out}: {i}x{j}x{k} voxels at {min(st['spacing_mm']):.3g} mm from {st['frames']} frames "
        f"({config.method}, {config.compounding}); {100 * st['recorded_fraction']:.1f}% recorded, "
        f"{100 * st['filled_fraction']:.1f}% filled{holes}; {st['seconds']:.2f} s"
    )


def add_commands(sweep_app: typer.Typer) -> None:
    sweep_app.command("compound")(compound)
