"""``sono3d heart cohort`` and ``sono3d heart show-case``: the synthetic heart cohort and its views."""

from __future__ import annotations

from pathlib import Path

import typer

from sono3d.commands._common import print_json
from sono3d.errors import InputError
from sono3d.heart.cohort import generate_cohort, load_case
from sono3d.io.lock import writer_lock
from sono3d.simulate.echo_views import ViewOptions
from sono3d.viz.heart import show_case_figure


def add_commands(heart_app: typer.Typer) -> None:
    heart_app.command("cohort")(cohort)
    heart_app.command("show-case")(show_case)


def cohort(
    out_dir: Path = typer.Argument(..., help="Output folder (created; an interrupted run resumes)."),
    n: int = typer.Option(..., "--n", help="Number of cases."),
    seed: int = typer.Option(0, "--seed", help="Cohort seed; case i uses the generator seeded with (seed, i)."),
    size: int = typer.Option(128, "--size", help="View image size in pixels (square)."),
    workers: int = typer.Option(1, "--workers", help="Worker processes."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    motion: str = typer.Option("physiological", "--motion",
                               help="ED to ES: 'physiological' (shortening, thickening, twist) or 'affine'."),
    phases: int = typer.Option(0, "--phases", help="Also write N phases of one cycle per case (beat.npz)."),
    appearance: str = typer.Option("pseudo", "--appearance",
                                   help="Echo images: pseudo (the paper's pseudo-echo) or bmode (physics B-mode)."),
) -> None:
    """Generate a labelled four-chamber heart cohort (ED/ES) with six echo views per phase."""
    if n <= 0:
        raise InputError(f"--n must be a positive number of cases, got {n}")
    if size < 16 or size > 2048:
        raise InputError(f"--size must be between 16 and 2048 pixels, got {size}")
    result = generate_cohort(out_dir, n, seed=seed, size=size, workers=workers, options=ViewOptions(size=size),
                             progress=progress, motion=motion, phases=phases, appearance=appearance)
    print_json(result.to_dict())


def show_case(
    cohort_dir: Path = typer.Argument(..., help="A generated cohort folder."),
    case_id: str = typer.Argument(..., help="Case id, e.g. 00000."),
    out_png: Path = typer.Argument(..., help="Figure to write (.png)."),
    render_3d: bool = typer.Option(True, "--3d/--no-3d", help="Add a 3D render of the mesh and planes."),
) -> None:
    """Draw a case's six views at ED and ES (labels and pseudo-echo) and a 3D render with the planes."""
    if out_png.suffix.lower() != ".png":
        raise InputError(f"{out_png}: the figure must be a .png file")
    case = load_case(cohort_dir, case_id)
    if case.views is None:
        raise InputError(f"case {case_id} has no views.npz")
    with writer_lock(out_png, "figure"):
        show_case_figure(case, out_png, render_3d=render_3d)
    typer.echo(str(out_png))
