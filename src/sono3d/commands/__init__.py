"""Verb groups of the command line. Each module defines its own typer app or commands and a
``register(app)`` function; heavy imports happen inside the commands so that ``--help`` is fast."""

from __future__ import annotations

import importlib

import typer

# Modules that add verbs; each exposes register(app: typer.Typer) -> None.
_MODULES = ("info", "phantom", "simulate", "sweep", "heart", "demo")


def register_all(app: typer.Typer) -> None:
    for name in _MODULES:
        try:
            module = importlib.import_module(f"sono3d.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sono3d.commands.{name}":
                continue  # verb group not written yet
            raise
        module.register(app)
