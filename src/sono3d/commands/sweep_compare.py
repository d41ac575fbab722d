"""``sono3d sweep compare``: Gaussians against classic compounding on the same held-out frames."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sono3d.commands.report import HTML_HELP, write_page
from sono3d.commands.sweep_gaussian import _spacing, span_option
from sono3d.errors import InputError
from sono3d.io.lock import writer_lock
from sono3d.sweep.compare import compare_to_folder
from sono3d.sweep.reconstruct import ReconstructConfig


def compare(
    sweep: Path = typer.Argument(..., help="Sweep file (.seq.nrrd, .igs.mha, DICOM, video, image folder)."),
    out_dir: Path = typer.Argument(..., help="Output folder: report.json, compare.png and report.html."),
    holdout: int = typer.Option(5, "--holdout", help="Hold out every k-th frame (k >= 2) for both methods."),
    preset: str = typer.Option("auto", "--preset", help="Gaussians' preset: auto (reads the sweep), fast, paper, quick, small."),
    poses: Optional[str] = typer.Option(None, "--poses", help="tracked (from the file) or fan (sensorless prior), for both methods."),
    span: Optional[str] = typer.Option(None, "--span", help="Fan prior: total angle in degrees, or 'auto' to estimate it."),
    fan_axis: Optional[str] = typer.Option(None, "--fan-axis", help="Fan prior: lateral (tilt) or axial (spin)."),
    pivot_offset: Optional[float] = typer.Option(None, "--pivot-offset", help="Fan prior: pivot above the probe face, mm."),
    plus_config: Optional[Path] = typer.Option(None, "--plus-config", metavar="XML",
                                               help="PLUS configuration: calibration, clipping and compounding settings."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Pixel spacing in mm when the file has none."),
    voxel: Optional[float] = typer.Option(None, "--voxel", metavar="MM",
                                          help="Compounding's voxel size (default: the PLUS config's, else the pixel size)."),
    slice_thickness: Optional[float] = typer.Option(None, "--slice-thickness", metavar="MM",
                                                    help="FWHM of the frames' elevation profile for the Gaussians (0: thin planes)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Gaussians: training epochs."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Rasterizer (auto: the fastest available)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    html: bool = typer.Option(True, "--html/--no-html", help=HTML_HELP),
) -> None:
    """Reconstruct with both methods from the same training frames and score both on the held-out ones."""
    span_deg, span_mode, poses = span_option(span, poses)
    if slice_thickness is not None and not slice_thickness >= 0:
        raise InputError(f"--slice-thickness must be >= 0 mm, got {slice_thickness}")
    config = ReconstructConfig.preset(
        preset, poses=poses, span_deg=span_deg, fan_axis=fan_axis, pivot_offset_mm=pivot_offset, holdout=holdout,
        slice_thickness_mm=slice_thickness, epochs=epochs, backend=backend, device=device, seed=seed,
    )
    with writer_lock(out_dir, "output folder"):  # the page too
        rep = compare_to_folder(sweep, out_dir, config, plus_config=plus_config, spacing_mm=_spacing(spacing),
                                voxel_mm=voxel, span=span_mode, progress=not quiet)
        page = write_page(out_dir) if html else None
    c, g = rep["compounding"], rep["gaussians"]
    typer.echo(f"held out {len(rep['holdout'])} of {rep['frames']['total']} frames "
               f"(every {holdout}-th), poses {rep['poses']}")
    typer.echo(f"{'method':<12} {'SSIM':>7} {'PSNR dB':>8} {'pooled':>7} {'L1':>8} {'NCC':>7} {'seconds':>8}")
    for name, m in (("compounding", c), ("gaussians", g)):
        typer.echo(f"{name:<12} {m['ssim']:>7.4f} {m['psnr']:>8.2f} {m['psnr_pooled']:>7.2f} {m['l1']:>8.4f} "
                   f"{m['ncc']:>7.4f} {m['seconds']:>8.1f}")
    extra = f"; span estimated {rep['span_estimate']['span_deg']:.1f} deg" if "span_estimate" in rep else ""
    typer.echo(f"compounding: {c['voxel_mm']:.3g} mm voxels; Gaussians: {g['gaussians']} "
               f"({g['preset']} preset){extra}; wrote {out_dir}")
    if page is not None:
        typer.echo(f"report: {page}")


def add_commands(sweep_app: typer.Typer) -> None:
    sweep_app.command("compare")(compare)
