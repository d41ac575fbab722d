"""Verb groups of the command line. Each module defines its own typer app or commands and a
``register(app)`` function. Command modules import sono3d's own modules at the top; heavy optional
third-party packages (pyvista, matplotlib, ...) load where they are used, so ``--help`` stays fast."""

from __future__ import annotations

import typer

from sono3d.commands._common import command_modules

# Modules that add verbs; each exposes register(app: typer.Typer) -> None.
_MODULES = ("info", "phantom", "simulate", "sweep", "heart", "style", "demo", "report")


def register_all(app: typer.Typer) -> None:
    for module in command_modules(_MODULES):
        module.register(app)
