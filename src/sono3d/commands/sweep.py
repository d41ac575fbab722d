"""``sono3d sweep ...``: classic compounding and Gaussian reconstruction of freehand sweeps."""

from __future__ import annotations

import importlib

import typer

sweep_app = typer.Typer(help="Reconstruct a 3D volume from a 2D ultrasound sweep.", no_args_is_help=True)

# Modules that add verbs to the group; each exposes add_commands(sweep_app).
_PARTS = ("sweep_compound", "sweep_gaussian")


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")
    for name in _PARTS:
        try:
            module = importlib.import_module(f"sono3d.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sono3d.commands.{name}":
                continue
            raise
        module.add_commands(sweep_app)
