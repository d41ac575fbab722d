"""``sono3d simulate sweep-pair``: a sagittal and a displaced transversal fan, each in its own frame."""

from __future__ import annotations

from pathlib import Path

import typer

from sono3d.errors import InputError
from sono3d.io import read_volume
from sono3d.io.lock import writer_lock
from sono3d.phantoms import load_phantom
from sono3d.simulate.sweep_pair import SweepPairConfig, simulate_sweep_pair, write_sweep_pair


def sweep_pair(
    phantom_dir: Path = typer.Argument(..., help="Phantom folder from 'sono3d phantom uterus' (or a volume file)."),
    out_dir: Path = typer.Argument(..., help="Output folder: a.seq.nrrd, b.seq.nrrd, truth.nii.gz, truth.json."),
    offset_mm: float = typer.Option(20.0, "--offset-mm", metavar="MM",
                                    help="Largest translation of sweep b's probe from the nominal placement."),
    offset_deg: float = typer.Option(30.0, "--offset-deg", metavar="DEG",
                                     help="Largest rotation of sweep b's probe about its tip."),
    exact_offset: bool = typer.Option(False, "--exact-offset",
                                      help="Displace by exactly the bounds (random directions)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the displacement (and of B-mode speckle)."),
    frames: int = typer.Option(100, "--frames", help="Frames per sweep."),
    span: float = typer.Option(120.0, "--span", metavar="DEG", help="Fan span of both sweeps (120 = -60..+60)."),
    size: int = typer.Option(256, "--size", metavar="PX", help="Frames are PX x PX pixels."),
    appearance: str = typer.Option("labels", "--appearance", help="labels (the paper's 0/0.5/1) or bmode."),
) -> None:
    """Two orthogonal fans (sagittal, transversal) of one phantom, each in its own sensorless-style frame."""
    config = SweepPairConfig(frames=frames, size_px=size, span_deg=span, offset_mm=offset_mm, offset_deg=offset_deg,
                             exact_offset=exact_offset, appearance=appearance, seed=seed)  # type: ignore[arg-type]
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    with writer_lock(out_dir, "output folder"):
        source = load_phantom(phantom_dir) if phantom_dir.is_dir() else read_volume(phantom_dir)
        pair = simulate_sweep_pair(source, config)
        files = write_sweep_pair(pair, out_dir)
    off = pair.record["offset"]
    typer.echo(f"sagittal + transversal fans, {frames} frames of {size}x{size} px each; b displaced by "
               f"{off['rotation_deg']:.1f} deg and {off['translation_mm']:.1f} mm from the nominal placement")
    for name, path in files.items():
        typer.echo(f"  {name:<13}{path}")


def add_commands(simulate_app: typer.Typer) -> None:
    simulate_app.command("sweep-pair")(sweep_pair)
