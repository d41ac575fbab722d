"""``sono3d heart correspond``: template-to-case deformation labels by robust optimal transport."""

from __future__ import annotations

from pathlib import Path

import typer

from sono3d.commands._common import print_json
from sono3d.errors import InputError
from sono3d.heart.correspond import FIGURE_NAME, REPORT_NAME, CorrespondOptions, correspond_cohort
from sono3d.io.lock import writer_lock
from sono3d.viz.heart import correspondence_histogram


def add_commands(heart_app: typer.Typer) -> None:
    heart_app.command("correspond")(correspond)


def correspond(
    cohort_dir: Path = typer.Argument(..., help="A generated heart cohort folder (with cases/<id>/ed.vtp, es.vtp)."),
    template: str = typer.Option(None, "--template", help="Template: a case id of the cohort or a labelled mesh "
                                 "file (default: the first case's ED surface)."),
    blur: float = typer.Option(1.0, "--blur", help="Finest OT blur sigma in mm (epsilon = sigma^2)."),
    reach: float = typer.Option(20.0, "--reach", help="OT reach tau in mm (rho = tau^2); 0 for balanced OT."),
    workers: int = typer.Option(1, "--workers", help="Worker processes."),
    recompute: bool = typer.Option(False, "--recompute", help="Recompute cases whose deformation.npz was made "
                                   "with the same template and options."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Deform the template onto every case (ED and ES); write deformation.npz per case, a report and a histogram."""
    if not cohort_dir.is_dir():
        raise InputError(f"{cohort_dir}: no such cohort folder")
    if not blur > 0:
        raise InputError(f"--blur must be positive (mm), got {blur}")
    if reach < 0:
        raise InputError(f"--reach must be >= 0 (mm; 0 means balanced), got {reach}")
    if workers <= 0:
        raise InputError(f"--workers must be a positive integer, got {workers}")
    options = CorrespondOptions(blur_mm=blur, reach_mm=reach if reach > 0 else None)
    with writer_lock(cohort_dir, "cohort folder"):
        report = correspond_cohort(cohort_dir, template=template, options=options, workers=workers,
                                   progress=progress, reuse=not recompute)
        correspondence_histogram(report["cases"], cohort_dir / FIGURE_NAME)
    keys = ("n_cases", "chamfer_mm", "vertex_error_mm", "lv_volume_error_pct", "seconds_per_case")
    print_json({"report": str(cohort_dir / REPORT_NAME), **{k: report[k] for k in keys}})
