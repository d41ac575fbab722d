"""``sono3d simulate ...``: ultrasound sweeps through phantoms, with their true poses."""

from __future__ import annotations

from pathlib import Path

import typer

from sono3d.commands._common import command_modules
from sono3d.io import full_suffix, read_volume, write_sweep, write_volume
from sono3d.io.lock import writer_lock
from sono3d.io.registry import lookup
from sono3d.phantoms import load_phantom
from sono3d.simulate import SweepConfig, simulate_sweep

simulate_app = typer.Typer(help="Simulate ultrasound acquisitions with exact ground truth.", no_args_is_help=True)

# Modules that add further simulate verbs; each exposes add_commands(simulate_app).
_PARTS = ("simulate_echo", "simulate_pair")


def truth_path(out: Path) -> Path:
    """``out.seq.nrrd`` -> ``out_truth.nii.gz`` beside it."""
    suffix = full_suffix(out)
    stem = out.name[: len(out.name) - len(suffix)] if suffix else out.name
    return out.with_name(f"{stem}_truth.nii.gz")


@simulate_app.command("sweep")
def sweep(
    phantom_dir: Path = typer.Argument(..., help="Phantom folder from 'sono3d phantom uterus' (or a volume file)."),
    out: Path = typer.Argument(..., help="Sweep file to write (.seq.nrrd, .igs.mha); the format follows the extension."),
    direction: str = typer.Option("sagittal", "--direction", help="sagittal or transversal."),
    kind: str = typer.Option("fan", "--kind", help="fan (rock about the probe tip) or translation."),
    frames: int = typer.Option(100, "--frames", help="Number of frames (at least 2)."),
    span: float = typer.Option(120.0, "--span", metavar="DEG", help="Fan span in degrees (120 = -60..+60)."),
    length: float = typer.Option(60.0, "--length", metavar="MM", help="Travel of a translation sweep."),
    size: int = typer.Option(256, "--size", metavar="PX", help="Frames are PX x PX pixels."),
    depth: float = typer.Option(100.0, "--depth", metavar="MM", help="Sector depth from the probe tip."),
    sector_angle: float = typer.Option(90.0, "--sector-angle", metavar="DEG", help="Sector opening angle."),
    appearance: str = typer.Option("labels", "--appearance", help="labels (the paper's 0/0.5/1) or bmode."),
    jitter: float = typer.Option(0.0, "--jitter", metavar="DEG", help="Per-frame angle jitter (standard deviation)."),
    speed_variation: float = typer.Option(0.0, "--speed-variation", help="Non-uniform sweep speed, 0 to 0.9."),
    tremor: float = typer.Option(0.0, "--tremor", metavar="DEG", help="Hand tremor rotation (RMS degrees)."),
    tremor_mm: float = typer.Option(0.0, "--tremor-mm", metavar="MM", help="Hand tremor translation (RMS mm)."),
    seed: int = typer.Option(0, "--seed", help="Seed for perturbations and speckle."),
) -> None:
    """Sweep a simulated probe through a phantom; writes the sweep (true poses) and the truth volume."""
    config = SweepConfig(kind=kind, direction=direction, frames=frames, span_deg=span, length_mm=length,  # type: ignore[arg-type]
                         size_px=size, depth_mm=depth, sector_angle_deg=sector_angle,
                         appearance=appearance, jitter_deg=jitter, speed_variation=speed_variation,  # type: ignore[arg-type]
                         tremor_deg=tremor, tremor_mm=tremor_mm, seed=seed)
    lookup(out, "sweep", writing=True)  # fail on a bad extension before simulating
    truth_out = truth_path(out)
    with writer_lock(out, "output sweep"):
        source = load_phantom(phantom_dir) if phantom_dir.is_dir() else read_volume(phantom_dir)
        result, truth = simulate_sweep(source, config)
        write_sweep(out, result)
        write_volume(truth_out, truth)
    dy, dx = result.spacing_mm
    typer.echo(f"{config.direction} {config.kind} sweep, {result.n_frames} frames of {size}x{size} px at "
               f"{dy:.3g} mm, {config.appearance} appearance")
    typer.echo(f"  sweep      {out}")
    typer.echo(f"  truth      {truth_out}  ({config.appearance} volume the frames were sampled from)")


def register(app: typer.Typer) -> None:
    app.add_typer(simulate_app, name="simulate")
    for module in command_modules(_PARTS):
        module.add_commands(simulate_app)
