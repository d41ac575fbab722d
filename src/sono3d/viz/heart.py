"""Figures of the heart cohort: the six views of both phases, a 3D render with the view planes, and
the histograms of a cohort's template correspondences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sono3d.types import PHASES
from sono3d.viz.figures import pyplot, save_png

__all__ = ["label_colormap", "show_case_figure", "render_case_3d", "correspondence_histogram"]

# RGB per view label (walls saturated, blood pools pale versions of their chamber's colour).
_COLOURS = {
    0: (0, 0, 0), 1: (200, 40, 40), 2: (40, 90, 200), 3: (220, 150, 30), 4: (40, 170, 90), 5: (150, 60, 170),
    6: (30, 170, 190), 7: (250, 250, 120), 8: (250, 250, 120), 9: (250, 250, 120), 10: (250, 250, 120),
    11: (240, 120, 40), 12: (120, 120, 120), 13: (120, 120, 120), 14: (120, 120, 120), 15: (120, 120, 120),
    16: (90, 90, 160), 17: (90, 90, 160), 25: (255, 170, 170), 26: (160, 190, 255), 27: (255, 215, 150),
    28: (160, 230, 180), 29: (220, 170, 230), 30: (160, 225, 235),
}


def label_colormap():  # noqa: ANN201 - matplotlib ListedColormap
    """A ListedColormap over label values 0..31 (use ``vmin=0, vmax=31``, nearest interpolation)."""
    from matplotlib.colors import ListedColormap

    table = np.full((32, 3), 255.0)
    for k, c in _COLOURS.items():
        table[k] = c
    return ListedColormap(table / 255.0)


def render_case_3d(meshes: list[Any], poses: np.ndarray | None, size: tuple[int, int] = (520, 520),
                   sectors: list[tuple[float, float]] | None = None, sizes_px: tuple[int, int] | None = None,
                   backend: str = "auto") -> np.ndarray:
    """An off-screen render (RGB ``[h, w, 3]`` uint8) of meshes and view planes.

    ``meshes`` are PolyData with ``elemTag`` (coloured by it); ``poses`` ``[n, 4, 4]`` image-to-world
    matrices, drawn as translucent fans when ``sectors`` gives ``(opening_deg, depth_mm)`` per view
    (the apex at pixel ``((W-1)/2, 0)``), else as rectangles of ``sizes_px`` pixels. ``backend``:
    ``"pyvista"``, ``"matplotlib"`` or ``"auto"`` (PyVista off-screen, matplotlib when that fails).
    """
    planes = None
    if poses is not None:
        planes = [_plane_outline(np.asarray(M), None if sectors is None else sectors[i], sizes_px)
                  for i, M in enumerate(poses)]
    if backend in ("auto", "pyvista"):
        try:
            import pyvista as pv

            with pv.vtk_verbosity("off"):  # VTK logs display probing to stderr
                return _render_pyvista(meshes, planes, size)
        except Exception:  # noqa: BLE001 - no OpenGL context: draw with matplotlib instead
            if backend == "pyvista":
                raise
    return _render_matplotlib(meshes, planes, size)


def _plane_outline(M: np.ndarray, sector: tuple[float, float] | None, sizes_px: tuple[int, int] | None
                   ) -> np.ndarray:
    """World corners ``[k, 3]`` of a view's fan (or of its whole image)."""
    col = M[:3, 0] / np.linalg.norm(M[:3, 0])
    row = M[:3, 1] / np.linalg.norm(M[:3, 1])
    H, W = sizes_px if sizes_px is not None else (2, 2)
    apex = M[:3, 3] + M[:3, 0] * (W - 1) / 2.0
    if sector is not None:
        half = np.deg2rad(sector[0]) / 2
        th = np.linspace(-half, half, 17)
        arc = apex + sector[1] * (np.sin(th)[:, None] * col + np.cos(th)[:, None] * row)
        return np.concatenate([apex[None], arc])
    c = np.array([[0, 0], [W - 1, 0], [W - 1, H - 1], [0, H - 1]], dtype=np.float64)
    return c[:, :1] * M[:3, 0] + c[:, 1:] * M[:3, 1] + M[:3, 3]


def _render_pyvista(meshes, planes, size) -> np.ndarray:  # noqa: ANN001
    import pyvista as pv

    pv.OFF_SCREEN = True
    pl = pv.Plotter(off_screen=True, window_size=list(size))
    pl.set_background("white")
    for m in meshes:
        if "elemTag" in m.cell_data:
            tags = np.asarray(m.cell_data["elemTag"])
            rgb = np.array([_COLOURS.get(int(t), (200, 200, 200)) for t in tags], dtype=np.uint8)
            mm = m.copy()
            mm.cell_data["rgb"] = rgb
            pl.add_mesh(mm, scalars="rgb", rgb=True, opacity=0.6)
        else:
            pl.add_mesh(m, color="salmon", opacity=0.6)
    for corners in planes or []:
        poly = pv.PolyData(corners, np.concatenate([[len(corners)], np.arange(len(corners))]))
        pl.add_mesh(poly, color="steelblue", opacity=0.2, show_edges=True, edge_color="navy")
    pl.view_isometric()
    pl.reset_camera(bounds=meshes[0].bounds)
    pl.camera.zoom(1.4)
    img = pl.screenshot(return_img=True)
    pl.close()
    if img is None or img.size == 0 or float(np.std(img)) == 0.0:
        raise RuntimeError("empty render")
    return np.asarray(img)[..., :3]


def _render_matplotlib(meshes, planes, size) -> np.ndarray:  # noqa: ANN001
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    plt = pyplot()
    fig = plt.figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    ax = fig.add_subplot(projection="3d")
    for m in meshes:
        pts = np.asarray(m.points)
        tags = np.asarray(m.point_data["elemTag"]) if "elemTag" in m.point_data else np.zeros(len(pts), int)
        col = np.array([_COLOURS.get(int(t), (200, 200, 200)) for t in tags]) / 255.0
        step = max(1, len(pts) // 4000)
        ax.scatter(*pts[::step].T, s=1, c=col[::step])
    if planes:
        ax.add_collection3d(Poly3DCollection(planes, alpha=0.12, facecolor="steelblue", edgecolor="navy"))
    lo, hi = np.asarray(meshes[0].bounds).reshape(3, 2).T
    c, r = (lo + hi) / 2, (hi - lo).max() * 0.7
    ax.set_xlim(c[0] - r, c[0] + r)
    ax.set_ylim(c[1] - r, c[1] + r)
    ax.set_zlim(c[2] - r, c[2] + r)
    ax.set_xlabel("x (R)")
    ax.set_ylabel("y (A)")
    ax.set_zlabel("z (S)")
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def show_case_figure(case: Any, path: str | Path, render_3d: bool = True) -> Path:
    """Write a PNG: labels and pseudo-echo of the six views at ED and ES, and a 3D render.

    ``case`` is a :class:`sono3d.heart.cohort.HeartCase` with views.
    """
    plt = pyplot()
    views = case.views
    cmap = label_colormap()
    names = [str(n) for n in views["view_names"]]
    n_ph = views["labels"].shape[0]
    n_v = len(names)
    extra_cols = 3 if render_3d else 0
    fig = plt.figure(figsize=(2.2 * (n_v + extra_cols), 2.3 * 2 * n_ph))
    gs = fig.add_gridspec(2 * n_ph, n_v + extra_cols)
    phases = [ph.upper() for ph in PHASES][:n_ph]
    for p in range(n_ph):
        for j, name in enumerate(names):
            a = fig.add_subplot(gs[2 * p, j])
            a.imshow(views["labels"][p, j], cmap=cmap, vmin=0, vmax=31, interpolation="nearest")
            a.set_title(f"{name} {phases[p]} labels", fontsize=8)
            b = fig.add_subplot(gs[2 * p + 1, j])
            b.imshow(views["echo"][p, j], cmap="gray", vmin=0, vmax=1)
            b.set_title(f"{name} {phases[p]} pseudo-echo", fontsize=8)
            for ax in (a, b):
                ax.set_xticks([])
                ax.set_yticks([])
    if render_3d:
        ax3 = fig.add_subplot(gs[:, n_v:])
        H, W = views["labels"].shape[-2:]
        sectors = None
        if "opening_deg" in views and "depth_mm" in views:
            sectors = list(zip(views["opening_deg"].tolist(), views["depth_mm"].tolist()))
        img = render_case_3d([case.ed], views["poses"][0], size=(700, 700), sectors=sectors, sizes_px=(H, W))
        ax3.imshow(img)
        ax3.set_axis_off()
        ax3.set_title("ED surfaces and the six view sectors", fontsize=9)
    extra = ""
    if case.params:
        p = case.params
        extra = f"  EDV {p.get('edv_ml', float('nan')):.1f} mL  ESV {p.get('esv_ml', float('nan')):.1f} mL  " \
                f"EF {100 * p.get('ef', float('nan')):.1f}%"
    fig.suptitle(f"case {case.id}{extra}", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path, dpi=90)


def correspondence_histogram(rows: list[dict], path: str | Path) -> Path:
    """Histograms of Chamfer distance, true vertex error and LV volume error over cases and phases.

    ``rows`` are the ``cases`` of a correspondence report (:func:`sono3d.heart.correspond.correspond_cohort`):
    ``phase``, ``is_template`` and the figures; the template's own phases are left out. Returns the PNG path.
    """
    plt = pyplot()
    scored = [r for r in rows if not r["is_template"]]
    panels = [("chamfer_mm", "Chamfer distance (mm)"), ("vertex_error_mm", "mean vertex error vs truth (mm)"),
              ("lv_volume_error_pct", "LV cavity volume error (%)")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (key, title) in zip(axes, panels):
        allv = np.asarray([r[key] for r in scored], dtype=np.float64)
        allv = allv[np.isfinite(allv)]
        bins = np.histogram_bin_edges(allv, bins=min(30, max(5, allv.size // 3))) if allv.size else None
        for ph, colour in zip(PHASES, ("tab:blue", "tab:orange")):
            v = np.asarray([r[key] for r in scored if r["phase"] == ph], dtype=np.float64)
            v = v[np.isfinite(v)]
            if v.size:
                ax.hist(v, bins=bins, alpha=0.6, color=colour, label=ph.upper())
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("phases")
        if ax.has_data():
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Template correspondences by robust optimal transport", fontsize=11)
    fig.tight_layout()
    return save_png(fig, path, dpi=100)
