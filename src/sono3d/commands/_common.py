"""Small helpers shared by the command modules."""

from __future__ import annotations

import json
from typing import Any

import typer


def print_json(obj: Any) -> None:
    """Print one JSON object on one line (numpy scalars and arrays converted)."""
    typer.echo(json.dumps(obj, default=_to_builtin))


def _to_builtin(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "__fspath__"):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
