"""Pages of the sweep engine's results: ``sweep reconstruct``, ``sweep compare`` and ``demo`` folders.

Read from the folder: ``report.json``, ``volume.nii.gz`` (three orthogonal slices with sliders, the
slice planes and an isosurface in 3D), ``gaussians.ply`` (the Gaussians' centres as a point cloud,
at most 50k), the truth volume when one was given (its isosurface at the report's Dice threshold,
the level at which the Dice score was counted), and the pictures ``slices.png`` and ``compare.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sono3d.io import read_volume
from sono3d.report.data import MAX_VOXELS, gaussian_points, image_file_data_uri, isosurface, volume_data
from sono3d.report.detect import Result, find_file
from sono3d.report.page import Page, fmt

__all__ = ["sweep_page"]

_FRAME_METRICS = ("frames", "l1", "ssim", "psnr_pooled", "ncc")
_COLOURS = {"reconstruction": "#e07a1f", "truth": "#1f9e89"}


def _scene_layout() -> dict[str, Any]:
    # Few ticks: plotly turns every 3D tick label into triangles, a visible share of the first draw.
    axis = {"backgroundcolor": "#fbfbfc", "gridcolor": "#dde2ea", "showbackground": True, "nticks": 5}
    return {"scene": {"aspectmode": "data", "xaxis": {**axis, "title": {"text": "R (mm)"}},
                      "yaxis": {**axis, "title": {"text": "A (mm)"}}, "zaxis": {**axis, "title": {"text": "S (mm)"}}},
            "uirevision": "keep", "legend": {"itemsizing": "constant"}}


def _surface_trace(surface, name: str, colour: str, opacity: float, visible: Any = True):  # noqa: ANN001, ANN202
    import plotly.graph_objects as go

    return go.Mesh3d(**surface.to_mesh3d(), name=name, color=colour, opacity=opacity, showlegend=True,
                     visible=visible, hoverinfo="name", flatshading=False,
                     lighting={"ambient": 0.55, "diffuse": 0.7, "specular": 0.15, "roughness": 0.6})


def _level(rep: dict[str, Any]) -> float | None:
    """The grey level that splits object from background: the report's Dice threshold."""
    for value in ((rep.get("volume") or {}).get("threshold"), (rep.get("config") or {}).get("dice_threshold")):
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _truth_path(res: Result, hint: str | Path | None) -> Path | None:
    if hint is not None:
        return Path(hint)
    rec = res.report.get("truth")
    for ref in (rec.get("path") if isinstance(rec, dict) else rec, "truth.nii.gz"):
        found = find_file(res.folder, ref)
        if found is not None:
            return found
    return None


def _frame_table(page: Page, rep: dict[str, Any]) -> None:
    rows = []
    for key, name in (("train", "Gaussians, training frames"), ("holdout", "Gaussians, held-out frames"),
                      ("baseline", "compounding, held-out frames")):
        m = rep.get(key)
        if isinstance(m, dict):
            rows.append([name] + [m.get(k) for k in _FRAME_METRICS])
    if rows:
        page.table(["frames re-rendered", "frames", "L1", "SSIM", "PSNR pooled (dB)", "NCC"], rows,
                   caption="Frames rendered from each model on the recorded frame planes, against the recording "
                           "(PSNR from the MSE pooled over frames).")


def _volume_section(page: Page, res: Result, truth: Path | None, max_voxels: int) -> None:
    import plotly.graph_objects as go

    path = res.folder / "volume.nii.gz"
    if not path.is_file():
        return
    vol = read_volume(path)
    vd = volume_data(vol, max_voxels=max_voxels)
    if vd.note:
        page.note(vd.note)
    level = _level(res.report)
    # Both surfaces opaque: where the truth lies outside the reconstruction it shows green, where the
    # reconstruction bulges out it shows orange (and a transparent mesh costs a second of software
    # WebGL on the first screen).
    page.section("Volume", "volume.nii.gz: drag a slider to move its slice; the same planes move in the 3D view. "
                 "Orange: the reconstruction's surface" + (f" at grey level {fmt(level, 3)}" if level is not None else "")
                 + ("; green: the truth's surface at the same level, showing where the truth lies outside the "
                    "reconstruction (click a legend entry to hide a surface)" if truth is not None else "") + ".")
    lighting = {"ambient": 1.0, "diffuse": 0.0, "specular": 0.0, "roughness": 1.0, "fresnel": 0.0}
    traces = [go.Surface(x=[[0, 0], [0, 0]], y=[[0, 0], [0, 0]], z=[[0, 0], [0, 0]], surfacecolor=[[0, 0], [0, 0]],
                         colorscale=[[0, "#000"], [1, "#fff"]], cmin=vd.vmin, cmax=vd.vmax, showscale=False,
                         name=f"{name} slice", showlegend=True, lighting=lighting, hoverinfo="skip", opacity=0.4)
              for name in ("axial", "coronal", "sagittal")]
    if level is None:
        level = vd.vmin + 0.5 * (vd.vmax - vd.vmin)
    surf = isosurface(vol, level)
    if surf is not None:
        traces.append(_surface_trace(surf, f"reconstruction > {fmt(level, 3)}", _COLOURS["reconstruction"], 1.0))
        if surf.decimated_from:
            page.note(f"The reconstruction's surface ({surf.decimated_from} triangles) is shown decimated to "
                      f"{len(surf.faces)} triangles.")
    if truth is not None:
        tsurf = isosurface(read_volume(truth), level)
        if tsurf is not None:
            traces.append(_surface_trace(tsurf, f"truth > {fmt(level, 3)}", _COLOURS["truth"], 1.0))
    fig = go.Figure(traces, layout=_scene_layout())
    page.add_html('<div class="row"><div>')
    scene = page.figure(fig, height=560, css="plot scene3d")
    page.add_html("</div></div>")
    page.volume_viewer(vd.to_json(), scene, (0, 1, 2), title="volume.nii.gz")
    grid = (res.report.get("volume_grid") or {})
    page.paragraph(f"{'x'.join(str(v) for v in vol.array.shape)} voxels"
                   + (f" of {fmt(grid.get('spacing_mm'), 3)} mm" if grid.get("spacing_mm") else "")
                   + f"; grey window {fmt(vd.vmin, 3)} to {fmt(vd.vmax, 3)}.", css="intro")


def _gaussians_section(page: Page, res: Result) -> None:
    import plotly.graph_objects as go

    path = res.folder / "gaussians.ply"
    if not path.is_file():
        return
    pts, peak, total = gaussian_points(path)
    shown = f"all {total}" if len(pts) == total else f"{len(pts)} of {total} (a uniform sample)"
    page.section("Gaussians", f"The centres of the Gaussians in gaussians.ply ({shown}), coloured by the grey level "
                 "each adds at its centre (sigmoid(opacity) x intensity).")
    trace = go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers", name="Gaussian centres",
                         marker={"size": 2, "color": peak, "colorscale": "Viridis",
                                 "colorbar": {"title": {"text": "peak"}, "len": 0.6}},
                         hoverinfo="skip")
    fig = go.Figure([trace], layout=_scene_layout())
    page.figure(fig, height=520, css="plot scene3d")


def _pictures(page: Page, res: Result) -> None:
    items = []
    # slices_<sweep>.png: one per sweep of a joint reconstruction (sweep reconstruct SWEEP SWEEP ...)
    joint = sorted(p.name for p in res.folder.glob("slices_*.png"))
    for name, caption in (("compare.png", "held-out frames: recorded, Gaussians, compounding (compare.png)"),
                          ("slices.png", "recorded frames over their re-rendering, held-out ones marked (slices.png)"),
                          *((n, f"sweep {n[len('slices_'):-len('.png')]}: recorded frames over the joint model's "
                                f"rendering, held-out ones marked ({n})") for n in joint)):
        if (res.folder / name).is_file():
            items.append((image_file_data_uri(res.folder / name), caption))
    if items:
        page.section("Held-out frames", "Frames left out of training, as recorded and as each method renders them.")
        page.images(items, css="gallery wide")


def _timings(page: Page, rep: dict[str, Any]) -> None:
    import plotly.graph_objects as go

    t = {k: v for k, v in (rep.get("timings") or {}).items() if isinstance(v, (int, float)) and k != "total"}
    if not t:
        return
    page.section("Timings", f"Seconds per stage (total {fmt(rep.get('seconds') or rep['timings'].get('total'), 3)} s, "
                 f"backend {rep.get('backend', 'n/a')}).")
    names = list(t)
    fig = go.Figure(go.Bar(x=[t[k] for k in names], y=names, orientation="h", marker_color="#4c78a8",
                           hovertemplate="%{y}: %{x:.2f} s<extra></extra>"))
    fig.update_layout(xaxis_title="seconds", yaxis={"autorange": "reversed"})
    page.figure(fig, height=60 + 28 * len(names))


def _files_sections(page: Page, res: Result, truth: Path | None, max_voxels: int) -> Page:
    """What every sweep folder may hold: the volume, the Gaussians, the pictures, timings, report.json."""
    _volume_section(page, res, truth, max_voxels)
    _gaussians_section(page, res)
    _pictures(page, res)
    _timings(page, res.report)
    page.details("full report.json (with the configuration)", json.dumps(res.report, indent=1))
    return page


def _reconstruction_page(res: Result, truth: Path | None, max_voxels: int) -> Page:
    rep = res.report
    demo = res.kind == "demo"
    page = Page("sono3d demo: Gaussian reconstruction vs compounding" if demo else "Sweep reconstruction",
                res.kind, res.folder)
    ho, base, vol = rep.get("holdout") or {}, rep.get("baseline") or {}, rep.get("volume") or {}
    cards = [("held-out SSIM, Gaussians", ho.get("ssim"), ""), ("held-out PSNR pooled", ho.get("psnr_pooled"), "dB")]
    if base:
        cards += [("held-out SSIM, compounding", base.get("ssim"), ""),
                  ("held-out PSNR pooled, compounding", base.get("psnr_pooled"), "dB")]
    if vol:
        cards += [("Dice vs truth", vol.get("dice"), ""), ("volume PSNR vs truth", vol.get("psnr"), "dB")]
    cards += [("Gaussians", rep.get("gaussians"), ""), ("time", rep.get("seconds"), "s")]
    sweep = rep.get("sweep") or {}
    several = rep.get("sweeps") if isinstance(rep.get("sweeps"), list) else None
    if several:  # a joint reconstruction of several sweeps
        page.paragraph(f"Sweeps {', '.join(str(s.get('sweep')) for s in several)} reconstructed together in the "
                       f"first one's frame: {fmt((rep.get('frames') or {}).get('total'))} frames; poses "
                       f"{', '.join(map(str, rep.get('poses') or []))}, {fmt(rep.get('epochs'))} epochs.", css="intro")
    else:
        page.paragraph(f"Sweep {Path(str(sweep.get('path', 'n/a'))).name}: {fmt(sweep.get('frames'))} frames of "
                       f"{'x'.join(str(v) for v in sweep.get('shape', []))} pixels; poses {rep.get('poses', 'n/a')}, "
                       f"{fmt(rep.get('epochs'))} epochs.", css="intro")
    page.metrics(cards)
    _frame_table(page, rep)
    if vol:
        page.table(["against the truth", "PSNR (dB)", "NCC", "Dice", "threshold"],
                   [["volume.nii.gz", vol.get("psnr"), vol.get("ncc"), vol.get("dice"), vol.get("threshold")]])
    _registration_table(page, rep)
    return _files_sections(page, res, truth, max_voxels)


def _registration_table(page: Page, rep: dict[str, Any]) -> None:
    """Several sweeps, one volume: how each sweep reached the first one's frame."""
    regs = rep.get("registration")
    if not isinstance(regs, list) or not regs:
        return
    rows = []
    for reg in regs:
        if not isinstance(reg, dict):
            continue
        t, err = reg.get("translation_mm"), reg.get("error") or {}
        rows.append([reg.get("sweep"), reg.get("status"),
                     reg.get("rotation_deg"), math.hypot(*t) if isinstance(t, list) else None,
                     (reg.get("search") or {}).get("ncc"), err.get("rotation_deg"), err.get("translation_mm")])
    page.table(["sweep", "registration", "rotation (deg)", "translation (mm)", "search NCC", "error (deg)",
                "error (mm)"], rows,
               caption="Each sweep's learned transform to the first sweep's frame (the volume's frame); the "
                       "errors against the true transforms when they were given.")
    cross = [x for x in rep.get("cross_view") or [] if isinstance(x, dict)]
    if cross:
        page.table(["trained on", "scored on", "held-out frames", "SSIM, that sweep alone", "SSIM, joint model"],
                   [[x.get("trained_on"), x.get("scored_on"), x.get("frames"), (x.get("single") or {}).get("ssim"),
                     (x.get("joint") or {}).get("ssim")] for x in cross],
                   caption="The cross-view protocol: a model of one sweep rendered on the other sweep's held-out "
                           "frames, placed through the learned registration, beside the joint model.")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested records as one level, keys joined by dots (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _compare_page(res: Result, truth: Path | None, max_voxels: int) -> Page:
    import plotly.graph_objects as go

    rep = res.report
    page = Page("Sweep comparison: Gaussians vs compounding", res.kind, res.folder)
    methods = {"Gaussians": _flatten(rep["gaussians"]), "compounding": _flatten(rep["compounding"])}
    keys = [k for k in methods["Gaussians"] if k in methods["compounding"]
            and _number(methods["Gaussians"][k]) and _number(methods["compounding"][k])]
    cards = []
    for name, m in methods.items():
        for key in ("ssim", "psnr_pooled"):
            if _number(m.get(key)):
                cards.append((f"{key.replace('_', ' ')}, {name}", m[key], "dB" if "psnr" in key else ""))
    page.metrics(cards)
    if keys:
        page.table(["method"] + keys, [[name] + [m[k] for k in keys] for name, m in methods.items()],
                   caption="Held-out frames, each method against the recording.")
    frames = [_flatten(e) for e in rep.get("per_frame") or [] if isinstance(e, dict)]
    if frames:
        cols = [k for k in frames[0] if all(_number(f.get(k)) for f in frames)]
        page.section("Per held-out frame")
        index_key = next((k for k in ("frame", "index") if k in cols), None)
        x = [f[index_key] for f in frames] if index_key else list(range(len(frames)))
        # One metric, both methods: SSIM when the records have it (metrics on one axis would not share a scale).
        paired = [(k, k2) for k in cols for k2 in cols if "gaussian" in k.lower()
                  and k2 == k.replace("gaussians", "compounding").replace("gaussian", "compounding")]
        paired.sort(key=lambda p: "ssim" not in p[0].lower())
        shown = paired[0] if paired else tuple(k for k in cols if k != index_key)[:1]
        if shown:
            fig = go.Figure([go.Scatter(x=x, y=[f[k] for f in frames], mode="lines+markers", name=k,
                                        line={"dash": "dot" if n else "solid"}) for n, k in enumerate(shown)])
            fig.update_layout(xaxis_title=index_key or "held-out frame", yaxis_title=shown[0].split(".")[-1])
            page.figure(fig, height=340)
        page.table(cols, [[f.get(k) for k in cols] for f in frames], sortable=True)
    return _files_sections(page, res, truth, max_voxels)


def sweep_page(res: Result, truth: str | Path | None = None, max_voxels: int = MAX_VOXELS) -> Page:
    """The page of a ``sweep reconstruct``, ``sweep compare`` or ``demo`` folder.

    Parameters
    ----------
    res : Result
        From :func:`sono3d.report.detect.detect`.
    truth : path-like, optional
        The ground-truth volume the reconstruction was scored against (default: the report's
        ``truth`` record, else ``truth.nii.gz`` in the folder, else none).
    max_voxels : int
        Larger volumes are shown downsampled (with a note on the page).
    """
    t = _truth_path(res, truth)
    if res.kind == "sweep compare":
        return _compare_page(res, t, max_voxels)
    return _reconstruction_page(res, t, max_voxels)

