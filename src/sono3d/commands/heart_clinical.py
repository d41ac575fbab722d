"""``sono3d heart strain`` and ``sono3d heart fit-real``: strain, AHA segments, and real beats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from sono3d.commands._common import print_json
from sono3d.errors import InputError
from sono3d.heart.fit_real import fit_real as fit_real_to_folder
from sono3d.heart.strain import lv_strain, read_template_points
from sono3d.io import read_mesh
from sono3d.io.lock import writer_lock
from sono3d.viz.clinical import bullseye_figure, volume_curve_figure


def add_commands(heart_app: typer.Typer) -> None:
    heart_app.command("strain")(strain)
    heart_app.command("fit-real")(fit_real)


def _png(path: Path | None) -> None:
    if path is not None and path.suffix.lower() != ".png":
        raise InputError(f"{path}: the figure must be a .png file")


def strain(
    ed_mesh: Path = typer.Argument(..., help="End-diastolic heart (or LV cavity) in the template's vertex order."),
    es_mesh: Path = typer.Argument(..., help="End-systolic heart (or LV cavity), same vertex order."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    bullseye: Path = typer.Option(None, "--bullseye", help="Also draw the segments' longitudinal strain (.png)."),
) -> None:
    """LV volumes, EF (%), GLS and GCS (%), and the 17 AHA segments' volumes and strains.

    GLS: mean over the A4C, A2C and A3C views of the relative change of the endocardial contour
    (base-apex-base along the template's meridians in that view), ED to ES; negative in contraction.
    Example: sono3d heart strain cohort/cases/00000/ed.vtp cohort/cases/00000/es.vtp --json
    """
    _png(bullseye)
    res = lv_strain(read_template_points(ed_mesh), read_template_points(es_mesh))
    if bullseye is not None:
        with writer_lock(bullseye, "figure"):
            bullseye_figure({s["segment"]: s["longitudinal_pct"] for s in res.segments}, bullseye,
                            title=f"longitudinal strain (GLS {res.gls_pct:.1f} %)", label="strain (%)",
                            cmap="RdBu", vmin=-30.0, vmax=0.0)
    if as_json:
        print_json(res.to_dict())
        return
    typer.echo(f"EDV {res.edv_ml:.1f} mL, ESV {res.esv_ml:.1f} mL, EF {res.ef:.1f} %")
    typer.echo(f"GLS {res.gls_pct:.2f} %, GCS {res.gcs_pct:.2f} %")
    typer.echo(f"{'seg':>3}  {'name':<22}{'EDV mL':>8}{'ESV mL':>8}{'long %':>8}{'circ %':>8}")
    for s in res.segments:
        typer.echo(f"{s['segment']:>3}  {s['name']:<22}{s['edv_ml']:8.2f}{s['esv_ml']:8.2f}"
                   f"{s['longitudinal_pct']:8.1f}{s['circumferential_pct']:8.1f}")


def fit_real(
    source: Path = typer.Argument(..., help="Folder of a real beat's meshes (biv-me names recognised) or a .txt "
                                            "list."),
    out_dir: Path = typer.Argument(..., help="Output folder (created)."),
    template: Path = typer.Option(None, "--template", help="Template heart (template vertex order); default: the "
                                                           "default parametric heart."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw volume_curve.png and bullseye_gls.png."),
) -> None:
    """Fit the template's LV and RV to every phase of a real beat (robust OT at ED, then the real
    surfaces' own motion); write the fitted meshes, volumes.csv, report.json and figures.

    Prints a one-line JSON summary: EF fitted and direct (%), GLS (%), the largest LV volume error (%)
    and the largest Chamfer distance (mm) over the phases.
    """
    tpl = None
    if template is not None:
        if not template.is_file():
            raise InputError(f"{template}: no such template file")
        tpl = read_mesh(template)
    with writer_lock(out_dir, "output folder"):
        res = fit_real_to_folder(source, out_dir, template=tpl)
        rep = res.report
        if figures:
            volume_curve_figure(res.phases, res.lv_real_ml, res.lv_fitted_ml, out_dir / "volume_curve.png",
                                ed=res.ed_index, es=res.es_index)
            bullseye_figure({s["segment"]: s["longitudinal_pct"] for s in rep["segments"]},
                            out_dir / "bullseye_gls.png",
                            title=f"fitted template, longitudinal strain (GLS {rep['gls_pct']:.1f} %)",
                            label="strain (%)", cmap="RdBu", vmin=-30.0, vmax=0.0)
    print_json({"ef_fitted": rep["ef_fitted"], "ef_direct": rep["ef_direct"], "gls_pct": rep["gls_pct"],
                "max_volume_error_pct": rep["max_volume_error_pct"],
                "max_chamfer_mm": float(np.max(rep["chamfer_mm"])), "phases": len(res.phases),
                "out_dir": str(out_dir)})
