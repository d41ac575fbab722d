"""``sono3d sweep ...``: classic compounding and Gaussian reconstruction of freehand sweeps."""

from __future__ import annotations

import typer

from sono3d.commands._common import command_modules

sweep_app = typer.Typer(help="Reconstruct a 3D volume from a 2D ultrasound sweep.", no_args_is_help=True)

# Modules that add verbs to the group; each exposes add_commands(sweep_app).
_PARTS = ("sweep_compound", "sweep_gaussian", "sweep_compare")


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")
    for module in command_modules(_PARTS):
        module.add_commands(sweep_app)
