"""Small helpers shared by the command modules."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import numpy as np
import typer


def command_modules(names: Iterable[str]) -> list[ModuleType]:
    """Import ``sono3d.commands.<name>`` for each name, skipping modules that do not exist.

    An import error *inside* an existing module still propagates: a broken verb must not vanish
    silently from the command line.
    """
    modules = []
    for name in names:
        full = f"sono3d.commands.{name}"
        try:
            modules.append(importlib.import_module(full))
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise
    return modules


def view_file_option(flag: str, name: str) -> Any:
    """A ``--a4c``-style option: one recorded echo view (``sono3d heart views`` and ``heart predict``)."""
    return typer.Option(None, flag, help=f"{name}: an image, a folder of images, a video, a DICOM file or frames "
                        "(.npz).", show_default=False)


def print_json(obj: Any) -> None:
    """Print one JSON object on one line (numpy scalars and arrays converted)."""
    typer.echo(json.dumps(obj, default=_to_builtin))


def _to_builtin(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "__fspath__"):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
