"""``sono3d heart ...``: six echo views to a heart mesh, and the clinical numbers from it."""

from __future__ import annotations

import typer

from sono3d.commands._common import command_modules

heart_app = typer.Typer(
    help="Heart meshes from echo views: cohorts, correspondences, S2MNet, clinical statistics.",
    no_args_is_help=True,
)

# Modules that add verbs to the group; each exposes add_commands(heart_app).
_PARTS = ("heart_correlate", "heart_cohort", "heart_correspond", "heart_s2mnet", "heart_clinical", "heart_views")


def register(app: typer.Typer) -> None:
    app.add_typer(heart_app, name="heart")
    for module in command_modules(_PARTS):
        module.add_commands(heart_app)
