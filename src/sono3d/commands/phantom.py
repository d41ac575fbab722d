"""``sono3d phantom ...``: build synthetic anatomy with exact ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from sono3d.commands._common import command_modules
from sono3d.errors import InputError
from sono3d.io.lock import writer_lock
from sono3d.phantoms import build_uterus, save_phantom

phantom_app = typer.Typer(help="Build synthetic phantoms (volumes and surfaces with exact ground truth).",
                          no_args_is_help=True)

# Modules that add further phantom verbs; each exposes add_commands(phantom_app).
_PARTS = ("phantom_heart",)


@phantom_app.command("uterus")
def uterus(
    out_dir: Path = typer.Argument(..., help="Folder to write labels.nii.gz, bmode.nii.gz, surface.vtp into."),
    seed: int = typer.Option(0, "--seed", help="Seed for the anatomy's parameters."),
    spacing: float = typer.Option(0.5, "--spacing", metavar="MM", help="Isotropic voxel size in mm."),
    border: float = typer.Option(1.0, "--border", metavar="MM", help="Thickness of the label volume's border shell."),
) -> None:
    """A female pelvic phantom: uterus, endometrium, optional fibroid, ovaries with follicles."""
    if not spacing > 0:
        raise InputError(f"--spacing must be a positive number of mm, got {spacing}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    with writer_lock(out_dir, "phantom folder"):
        phantom = build_uterus(seed=seed, spacing_mm=spacing, border_mm=border)
        paths = save_phantom(phantom, out_dir)
    inside = float((phantom.labels.array > 0).sum()) * spacing ** 3 / 1000.0
    typer.echo(f"uterus phantom (seed {seed}): {phantom.labels.shape[0]}x{phantom.labels.shape[1]}x"
               f"{phantom.labels.shape[2]} voxels at {spacing:g} mm, uterus {inside:.1f} mL"
               f"{', fibroid' if phantom.params.fibroid else ''}")
    for kind, path in paths.items():
        typer.echo(f"  {kind:<10} {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(phantom_app, name="phantom")
    for module in command_modules(_PARTS):
        module.add_commands(phantom_app)
