"""``sono3d heart correlate``: Pearson and Spearman correlation of two columns of a cohort table."""

from __future__ import annotations

from pathlib import Path

import typer

from sono3d.commands._common import print_json
from sono3d.heart.clinical import correlate_table


def add_commands(heart_app: typer.Typer) -> None:
    heart_app.command("correlate")(correlate)


def correlate(
    table: Path = typer.Argument(..., help="CSV table (comma, semicolon or tab), header row first."),
    x: str = typer.Option(..., "--x", help="Column of the first variable (e.g. EF)."),
    y: str = typer.Option(..., "--y", help="Column of the second variable (e.g. GLPS)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Pearson r with its 95% CI and p-value, Spearman rho and p, and n, of two table columns.

    Rows with an empty or NA cell in either column are skipped. Example:
    sono3d heart correlate cohort.csv --x EF --y GLPS --json
    """
    res = correlate_table(table, x, y)
    if as_json:
        print_json(res)
        return
    p, s = res["pearson"], res["spearman"]
    typer.echo(f"n = {res['n']}")
    typer.echo(f"Pearson r = {p['r']:.4f} (95% CI {p['ci95'][0]:.4f} to {p['ci95'][1]:.4f}), p = {p['p']:.3g}")
    typer.echo(f"Spearman rho = {s['rho']:.4f}, p = {s['p']:.3g}")
