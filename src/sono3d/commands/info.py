"""``sono3d info PATH``: what a sweep, volume, mesh or image file holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sono3d.commands._common import print_json
from sono3d.errors import InputError
from sono3d.io import describe


def parse_spacing(text: str | None) -> tuple[float, float] | None:
    """``"0.2"`` -> ``(0.2, 0.2)``; ``"0.3,0.2"`` -> ``(dy, dx)``; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise InputError(f"--spacing must be one or two numbers in mm (DY[,DX]), got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not all(0 < v < float("inf") for v in values):
        raise InputError(f"--spacing must be one or two positive numbers in mm (DY[,DX]), got {text!r}")
    return values[0], values[1]


def info(
    path: Path = typer.Argument(..., help="Sweep, volume, mesh or image file (or a folder of images)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on one line."),
    plus_config: Path | None = typer.Option(None, "--plus-config", help="PLUS configuration XML for a sequence file."),
    spacing: str | None = typer.Option(None, "--spacing", metavar="MM",
                                       help="Pixel spacing in mm (DY[,DX]) for files that store none."),
) -> None:
    """Describe a file: kind, frames, shape, pixel spacing, poses; points, labels for meshes."""
    summary = describe(path, plus_config=plus_config, spacing_mm=parse_spacing(spacing))
    if json_out:
        print_json(summary)
    else:
        _print_table(summary)


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(summary["path"]), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if key in ("path", "affine") or value is None:
            continue
        if isinstance(value, float):
            text = f"{value:.6g}"
        elif isinstance(value, list) and value and all(isinstance(v, float) for v in value):
            text = ", ".join(f"{v:.6g}" for v in value)
        elif isinstance(value, list) and len(value) > 12:
            text = ", ".join(map(str, value[:12])) + f", ... ({len(value)} in all)"
        else:
            text = str(value)
        table.add_row(key, text)
    Console(width=120).print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
