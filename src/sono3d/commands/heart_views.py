"""``sono3d heart views``: recorded echo views (images, loops, DICOM) to a ``views.npz``."""

from __future__ import annotations

from pathlib import Path

import typer

from sono3d.commands._common import print_json, view_file_option
from sono3d.errors import InputError
from sono3d.heart.views_intake import intake_views, parse_depths, write_views
from sono3d.io.lock import writer_lock
from sono3d.simulate.echo_views import ViewOptions


def add_commands(heart_app: typer.Typer) -> None:
    heart_app.command("views")(views)



def views(
    out: Path = typer.Argument(..., help="views.npz to write; views.png is written beside it."),
    a4c: Path = view_file_option("--a4c", "Apical four-chamber view"),
    a2c: Path = view_file_option("--a2c", "Apical two-chamber view"),
    a3c: Path = view_file_option("--a3c", "Apical three-chamber (long-axis) view"),
    sax_basal: Path = view_file_option("--sax-basal", "Basal short-axis view"),
    sax_mid: Path = view_file_option("--sax-mid", "Mid short-axis view"),
    sax_apical: Path = view_file_option("--sax-apical", "Apical short-axis view"),
    ed_frame: int = typer.Option(None, "--ed-frame", help="End-diastole frame of every loop (default: largest cavity)."),
    es_frame: int = typer.Option(None, "--es-frame", help="End-systole frame of every loop (default: smallest cavity)."),
    depth_mm: str = typer.Option(None, "--depth-mm", help="Depth shown on the scanner, for files without a pixel size: "
                                 "one value in mm (150) or per view (a4c=150,a2c=190). Default 160 mm."),
    size: int = typer.Option(128, "--size", help="View size in pixels (the cohort's --size)."),
    mirror: bool = typer.Option(False, "--mirror", help="Mirror every view left-right."),
    figure: bool = typer.Option(True, "--figure/--no-figure", help="Write views.png beside the views file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sector search."),
) -> None:
    """Find the sector in each recorded view, resample it into the cohort's geometry, pick ED/ES of loops.

    Any non-empty subset of the six views is accepted (missing views are blank; 'present' says which).
    """
    if size < 16 or size > 2048:
        raise InputError(f"--size must be between 16 and 2048 pixels, got {size}")
    if out.suffix.lower() != ".npz":
        raise InputError(f"{out}: the views file must end in .npz")
    paths = {"a4c": a4c, "a2c": a2c, "a3c": a3c, "sax_basal": sax_basal, "sax_mid": sax_mid, "sax_apical": sax_apical}
    with writer_lock(out, "views file"):
        result = intake_views(paths, options=ViewOptions(size=size), depth_mm=parse_depths(depth_mm),
                              ed_frame=ed_frame, es_frame=es_frame, mirror=mirror, seed=seed)
        for w in result.warnings:
            typer.echo(f"warning: {w}", err=True)
        print_json(write_views(out, result, figure=figure))
