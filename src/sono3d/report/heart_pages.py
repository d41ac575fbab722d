"""Pages of the heart engine's results: ``heart predict`` and ``heart evaluate`` folders.

A prediction page shows the input check's verdict first (``report.json`` ``input_check``), the LV
volumes and EF (GLS and GCS when the report has them), the predicted mesh with one trace per part
(click a part in the legend to hide it) and an ED/ES slider, the six input views (from the views
file the report names or the caller gives) and the pictures the folder holds (``overlay.png``,
``views.png``, a bull's-eye). An evaluation page shows Bland-Altman plots of EF, IoU box plots and
a sortable table of ``cases.csv``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError
from sono3d.io import read_mesh
from sono3d.metrics.stats import bland_altman
from sono3d.phantoms.heart import ELEM_TAGS
from sono3d.report.data import b64, image_file_data_uri, mesh_label_parts, png_data_uri
from sono3d.report.detect import Result, find_file
from sono3d.report.page import Page, fmt
from sono3d.viz.heart import label_colormap

__all__ = ["heart_page", "PART_GROUPS"]

# Legend entries: small parts share one entry (a click hides the whole group).
PART_GROUPS: dict[int, str] = {
    1: "LV myocardium", 2: "RV", 3: "LA", 4: "RA", 5: "aorta", 6: "pulmonary artery",
    7: "valves", 8: "valves", 9: "valves", 10: "valves", 11: "LA appendage",
    12: "pulmonary veins", 13: "pulmonary veins", 14: "pulmonary veins", 15: "pulmonary veins",
    16: "venae cavae", 17: "venae cavae",
}
_VIEW_NAMES = ("A4C", "A2C", "A3C", "SAX basal", "SAX mid", "SAX apical")
_METHOD_COLOURS = {"S2MNet": "#d1495b", "baseline": "#00798c"}


def _label_colour(tag: int) -> str:
    r, g, b = (int(round(255 * c)) for c in label_colormap().colors[int(tag) % 32][:3])
    return f"rgb({r},{g},{b})"


def _view_label(name: str) -> str:
    """``sax_basal`` -> ``SAX basal``, ``a4c`` -> ``A4C``."""
    words = str(name).replace("_", " ").split()
    return " ".join(w.upper() if w.lower() in ("a4c", "a2c", "a3c", "sax", "lax", "plax", "psax") else w for w in words)


def _part_name(tag: int) -> str:
    if tag in PART_GROUPS:
        return PART_GROUPS[tag]
    names = {v: k for k, v in ELEM_TAGS.items()}
    return names.get(tag, "surface" if tag < 0 else f"label {tag}").replace("_", " ")


# -- prediction ------------------------------------------------------------------------------------

def _input_check(page: Page, rep: dict[str, Any]) -> None:
    chk = rep.get("input_check")
    if not isinstance(chk, dict):
        page.banner("Input check: not available",
                    "This report.json has no input check, so nothing says whether the six views resemble the "
                    "training data. Treat the figures with care.", "unknown")
        return
    ind, order = chk.get("in_distribution"), chk.get("view_order_ok")
    score = f"score {fmt(chk.get('score'), 3)}" if chk.get("score") is not None else "no score"
    if ind is True and order is not False:
        page.banner("Input check: passed", f"The views look like the training data ({score}); the view order looks "
                    "right." if order is True else f"The views look like the training data ({score}).", "ok")
    else:
        why = []
        if ind is not True:
            why.append("the views do not look like the training data" if ind is False else "no in-distribution verdict")
        if order is False:
            why.append("the views seem to be in the wrong order")
        page.banner("Input check: FAILED - do not trust this heart",
                    "; ".join(why).capitalize() + f" ({score}). The mesh, volumes and EF below are shown anyway.", "bad")


def _input_check_table(page: Page, rep: dict[str, Any]) -> None:
    chk = rep.get("input_check")
    per = chk.get("per_view") if isinstance(chk, dict) else None
    if not isinstance(per, list) or not per:
        return
    if all(isinstance(v, dict) for v in per):
        cols = list(dict.fromkeys(k for v in per for k in v))
        rows = [[v.get(k) for k in cols] for v in per]
    else:
        cols = ["score"]
        rows = [[v] for v in per]
    if "view" not in cols and len(rows) == len(_VIEW_NAMES):
        cols = ["view"] + cols
        rows = [[name] + r for name, r in zip(_VIEW_NAMES, rows)]
    page.table(cols, rows, caption="Input check per view.")


def _views_file(res: Result, hint: str | Path | None) -> Path | None:
    if hint is not None:
        return Path(hint)
    rec = res.report.get("views")
    if isinstance(rec, dict):
        rec = rec.get("path")
    inputs = res.report.get("inputs")
    if rec is None and isinstance(inputs, dict):
        rec = inputs.get("views")
    return find_file(res.folder, rec)


def _views_section(page: Page, res: Result, views: Path | None) -> None:
    items: list[tuple[str, str]] = []
    if views is not None:
        try:
            with np.load(views, allow_pickle=False) as z:
                echo = np.asarray(z["echo"], dtype=np.float32)
                names = [str(n) for n in z["view_names"]] if "view_names" in z.files else list(_VIEW_NAMES)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{views}: cannot read the input views ({exc})") from None
        if echo.ndim == 3:
            echo = echo[None]
        phases = ("ED", "ES")[: echo.shape[0]]
        for p, phase in enumerate(phases):
            for v in range(echo.shape[1]):
                img = echo[p, v]
                hi = float(np.percentile(img, 99.5)) if img.size else 1.0
                items.append((png_data_uri(img / hi if hi > 0 else img),
                              f"{phase} {_view_label(names[v]) if v < len(names) else v}"))
    pictures = []
    for pattern, caption in (("overlay.png", "predicted label contours on the input views (overlay.png)"),
                             ("views.png", "the inputs with their sectors found, beside the resampled views (views.png)"),
                             ("*bull*eye*.png", "bull's-eye of the AHA segments")):
        for path in sorted(res.folder.glob(pattern)):
            pictures.append((image_file_data_uri(path), caption if "*" not in pattern else f"{caption} ({path.name})"))
    if not items and not pictures:
        page.section("Input views", "The views file is not recorded in report.json; run `sono3d report` with "
                     "--views VIEWS.npz to show the six inputs here.")
        return
    page.section("Input views", f"From {views.name}." if views is not None else None)
    if items:
        page.images(items, css="gallery views")
    if pictures:
        page.images(pictures, css="gallery wide")


def _mesh_section(page: Page, res: Result) -> None:
    import plotly.graph_objects as go

    phases = [(name, res.folder / f"heart_{name.lower()}.vtp") for name in ("ED", "ES", "still")]
    phases = [(n, p) for n, p in phases if p.is_file()]
    parts = {n: mesh_label_parts(read_mesh(p)) for n, p in phases}
    first = parts[phases[0][0]]
    tags = sorted(first)
    traces, seen = [], set()
    for tag in tags:
        group = _part_name(tag)
        traces.append(go.Mesh3d(**first[tag].to_mesh3d(), name=group, legendgroup=group,
                                showlegend=group not in seen, color=_label_colour(tag), opacity=1.0,
                                flatshading=False, hovertemplate=f"{group}<extra></extra>",
                                lighting={"ambient": 0.5, "diffuse": 0.8, "specular": 0.2, "roughness": 0.5}))
        seen.add(group)
    axis = {"backgroundcolor": "#fbfbfc", "gridcolor": "#dde2ea", "nticks": 5}
    frame = res.report.get("frame", "n/a")
    fig = go.Figure(traces)
    fig.update_layout(uirevision="keep", legend={"title": {"text": "parts (click to hide)"}},
                      scene={"aspectmode": "data", "xaxis": {**axis, "title": {"text": "x (mm)"}},
                             "yaxis": {**axis, "title": {"text": "y (mm)"}}, "zaxis": {**axis, "title": {"text": "z (mm)"}}})
    page.section("Predicted heart", f"Coloured by part, in the {frame} frame. Drag to turn, scroll to zoom; click a "
                 "part in the legend to hide it" + ("; the slider switches between end-diastole (ED) and "
                                                    "end-systole (ES)." if len(phases) > 1 else "."))
    fid = page.figure(fig, height=620, css="plot scene3d")
    if len(phases) > 1:
        if any(sorted(parts[n]) != tags for n, _ in phases):
            raise InputError(f"{res.folder}: heart_ed.vtp and heart_es.vtp have different parts")
        # Predictions share the template's triangles, so only the vertices move; other meshes swap faces too.
        same = all(np.array_equal(parts[n][t].faces, first[t].faces) for n, _ in phases for t in tags)
        records = {n: [_geometry(parts[n][t], faces=not same) for t in tags] for n, _ in phases}
        page.phase_switcher(fid, list(range(len(tags))), records)


def _geometry(surface, faces: bool) -> dict[str, str]:  # noqa: ANN001 - SurfaceData
    """A phase of one trace for the page's switcher: base64 float32 ``x y z`` (and int32 ``i j k``)."""
    p, f = surface.points, surface.faces
    rec = {"x": b64(p[:, 0], "<f4"), "y": b64(p[:, 1], "<f4"), "z": b64(p[:, 2], "<f4")}
    if faces:
        rec.update({"i": b64(f[:, 0], "<i4"), "j": b64(f[:, 1], "<i4"), "k": b64(f[:, 2], "<i4")})
    return rec


def _predict_page(res: Result, views: str | Path | None) -> Page:
    rep = res.report
    page = Page("Heart from six echo views", res.kind, res.folder)
    _input_check(page, rep)
    # a still's phase is unknown: its one volume is lv_volume_ml (sono3d heart predict from stills)
    cards = [("LV volume (a still)", rep.get("lv_volume_ml"), "mL") if "lv_volume_ml" in rep else
             ("LV end-diastolic volume", rep.get("lv_edv_ml"), "mL")]
    if "lv_esv_ml" in rep:
        cards.append(("LV end-systolic volume", rep.get("lv_esv_ml"), "mL"))
    if "ef" in rep:
        cards.append(("ejection fraction", rep.get("ef"), "%"))
    for key, label in (("gls_pct", "global longitudinal strain"), ("gcs_pct", "global circumferential strain")):
        if key in rep:
            cards.append((label, rep[key], "%"))
    cards.append(("prediction time", rep.get("seconds"), "s"))
    page.metrics(cards)
    _mesh_section(page, res)
    _views_section(page, res, _views_file(res, views))
    _input_check_table(page, rep)
    page.details("full report.json", json.dumps(rep, indent=1))
    return page


# -- evaluation ------------------------------------------------------------------------------------

def _read_cases(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            cols = list(reader.fieldnames or [])
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the per-case table ({exc})") from None

    def value(text: str) -> Any:
        try:
            return float(text)
        except ValueError:
            return text

    return cols, [{k: (v if k == "id" else value(v)) for k, v in r.items()} for r in rows]


def _column(rows: list[dict[str, Any]], name: str) -> np.ndarray | None:
    vals = [r.get(name) for r in rows]
    if not vals or not all(isinstance(v, float) for v in vals):
        return None
    arr = np.asarray(vals, dtype=np.float64)
    return arr if np.isfinite(arr).all() else None


def _summary(page: Page, rep: dict[str, Any]) -> None:
    def row(name: str, r: dict[str, Any]) -> list[Any]:
        iou = r.get("iou128") or {}
        pr = r.get("ef_pearson") or {}
        loa = r.get("ef_loa") or [None, None]
        vols = r.get("volumes") or {}
        return [name, iou.get("median"), iou.get("mean"), r.get("vertex_mse"), r.get("chamfer_mm"),
                r.get("hausdorff_mm"), vols.get("edv_mae_ml"), vols.get("esv_mae_ml"), r.get("ef_mae"),
                r.get("ef_bias"), f"{fmt(loa[0], 3)} to {fmt(loa[1], 3)}", pr.get("r")]

    rows = [row("S2MNet", rep)]
    if isinstance(rep.get("delaunay"), dict):
        rows.append(row("S2MNet, Delaunay volumes", {**rep, **rep["delaunay"]}))
    if isinstance(rep.get("baseline"), dict):
        rows.append(row("voxel baseline", rep["baseline"]))
    res = rep.get("resolution", 128)
    page.table(["method", f"IoU@{res}³ median", "IoU mean", "vertex MSE (mm²)", "Chamfer (mm)", "Hausdorff (mm)",
                "EDV MAE (mL)", "ESV MAE (mL)", "EF MAE (points)", "EF bias", "EF 95% limits", "EF Pearson r"], rows,
               caption=f"{rep.get('split', '?')} split, {fmt(rep.get('n_cases'))} cases.")


def _bland_altman(page: Page, rows: list[dict[str, Any]]) -> None:
    import plotly.graph_objects as go

    truth = _column(rows, "ef_true")
    if truth is None or len(truth) < 2:
        return
    fig = go.Figure()
    ids = [str(r.get("id", n)) for n, r in enumerate(rows)]
    for col, name in (("ef_s2mnet", "S2MNet"), ("ef_baseline", "baseline")):
        pred = _column(rows, col)
        if pred is None:
            continue
        ba = bland_altman(pred, truth)
        colour = _METHOD_COLOURS[name]
        fig.add_trace(go.Scatter(x=ba.mean, y=ba.diff, mode="markers", name=f"{name} (bias {ba.bias:+.1f})",
                                 marker={"color": colour, "size": 8}, text=ids, legendgroup=name,
                                 hovertemplate="case %{text}<br>mean EF %{x:.1f}<br>predicted - true %{y:+.1f}"
                                               "<extra></extra>"))
        lo, hi = float(ba.mean.min()), float(ba.mean.max())
        for y, dash in ((ba.bias, "solid"), (ba.loa[0], "dash"), (ba.loa[1], "dash")):
            fig.add_trace(go.Scatter(x=[lo, hi], y=[y, y], mode="lines", showlegend=False, legendgroup=name,
                                     line={"color": colour, "dash": dash, "width": 1.5}, hoverinfo="skip"))
    fig.update_layout(title={"text": "EF: Bland-Altman (solid: bias, dashed: 95% limits of agreement)",
                             "font": {"size": 14}},
                      xaxis_title="mean of predicted and true EF (%)", yaxis_title="predicted - true EF (points)")
    page.figure(fig, height=420)


def _iou_box(page: Page, rows: list[dict[str, Any]], resolution: Any) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for prefix, name in (("", "S2MNet"), ("baseline_", "baseline")):
        for phase in ("ed", "es"):
            vals = _column(rows, f"{prefix}iou_{phase}")
            if vals is None:
                continue
            fig.add_trace(go.Box(y=vals, name=f"{name} {phase.upper()}", boxpoints="all", jitter=0.4, pointpos=0,
                                 marker_color=_METHOD_COLOURS[name], text=[str(r.get("id")) for r in rows],
                                 hovertemplate="case %{text}: %{y:.3f}<extra></extra>"))
    if not fig.data:
        return
    fig.update_layout(title={"text": f"IoU@{resolution}³ per case", "font": {"size": 14}}, yaxis_title="IoU",
                      showlegend=False)
    page.figure(fig, height=420)


def _evaluate_page(res: Result) -> Page:
    rep = res.report
    page = Page("Heart reconstruction: evaluation", res.kind, res.folder)
    cols, rows = _read_cases(res.folder / "cases.csv")
    iou = rep.get("iou128") or {}
    base = rep.get("baseline") or {}
    cards = [("cases", rep.get("n_cases"), ""), ("median IoU, S2MNet", iou.get("median"), "")]
    if base:
        cards.append(("median IoU, baseline", (base.get("iou128") or {}).get("median"), ""))
    cards += [("EF MAE, S2MNet", rep.get("ef_mae"), "points"), ("EF Pearson r", (rep.get("ef_pearson") or {}).get("r"), ""),
              ("Chamfer", rep.get("chamfer_mm"), "mm")]
    for key, label in (("gls_mae", "GLS MAE"), ("gls_pearson", "GLS Pearson r")):
        v = rep.get(key)
        if v is not None:
            cards.append((label, v.get("r") if isinstance(v, dict) else v, "points" if "mae" in key else ""))
    page.metrics(cards)
    _summary(page, rep)
    page.section("Agreement", "Hover a point to see its case.")
    page.add_html('<div class="row"><div>')
    _bland_altman(page, rows)
    page.add_html("</div><div>")
    _iou_box(page, rows, rep.get("resolution", 128))
    page.add_html("</div></div>")
    page.section("Per case", "cases.csv; click a column heading to sort.")
    page.table(cols, [[r.get(c) for c in cols] for r in rows], sortable=True, digits=4)
    page.details("full report.json", json.dumps(rep, indent=1))
    return page


def heart_page(res: Result, views: str | Path | None = None) -> Page:
    """The page of a ``heart predict`` or ``heart evaluate`` folder.

    Parameters
    ----------
    res : Result
        From :func:`sono3d.report.detect.detect`.
    views : path-like, optional
        Predictions: the views file that was predicted from (default: the report's record).
    """
    if res.kind == "heart evaluate":
        return _evaluate_page(res)
    return _predict_page(res, views)
