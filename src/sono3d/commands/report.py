"""``sono3d report RESULT_DIR [OUT.html]``: one self-contained HTML page of a result folder.

The verbs that write a result folder (``heart predict``, ``heart evaluate``, ``sweep reconstruct``,
``demo``) also write its page, ``report.html``, through :func:`write_page` unless ``--no-html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sono3d.errors import InputError, SonoError
from sono3d.io.lock import writer_lock
from sono3d.report import MAX_VOXELS, build_report

HTML_HELP = "Also write report.html: one page with the 3D view and the figures, opened from disk (--no-html: skip)."


def report(
    result_dir: Path = typer.Argument(..., help="A folder written by heart predict | heart evaluate | sweep reconstruct "
                                      "| sweep compare | demo."),
    out: Optional[Path] = typer.Argument(None, help="The page to write (default: RESULT_DIR/report.html)."),
    views: Optional[Path] = typer.Option(None, "--views", help="Heart predictions: the views.npz predicted from "
                                         "(shows the six input views)."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Sweep reconstructions: the ground-truth volume "
                                         "(default: truth.nii.gz in the folder, if any)."),
    max_voxels: Optional[int] = typer.Option(None, "--max-voxels", help="Show larger volumes downsampled "
                                             "(default 4,000,000 voxels)."),
) -> None:
    """Write one self-contained HTML page (3D view, slices, figures) of a result folder; opens from disk."""
    if max_voxels is not None and max_voxels < 1000:
        raise InputError(f"--max-voxels must be at least 1000, got {max_voxels}")
    for name, path in (("--views", views), ("--truth", truth)):
        if path is not None and not path.is_file():
            raise InputError(f"{name} {path}: no such file")
    if not result_dir.is_dir():
        raise InputError(f"{result_dir}: no such result folder")
    # The page goes into the result folder (locked, as its verb locks it) or to a file of its own.
    with writer_lock(result_dir if out is None else out, "result folder" if out is None else "page"):
        page = build_report(result_dir, out, views=views, truth=truth,
                            max_voxels=max_voxels if max_voxels is not None else MAX_VOXELS)
    typer.echo(str(page))


def write_page(out_dir: Path, **hints: Optional[Path]) -> Optional[Path]:
    """``report.html`` for a verb's result folder; a page that cannot be made is a warning, never a failure.

    The verb's own outputs are already written when this runs, so a problem with the page (an
    unreadable picture, say) must not turn a finished run into an error.
    """
    try:
        return build_report(out_dir, **hints)
    except SonoError as exc:
        typer.echo(f"warning: report.html not written: {' '.join(str(exc).split())}", err=True)
        return None


def register(app: typer.Typer) -> None:
    app.command("report")(report)
