"""Meshes, LV volumes and EF from six echo views with a trained S2MNet run.

LV cavity of a predicted mesh: the template carries the triangles of its closed LV blood pool
(``lv_cavity_faces``: the LV endocardium plus a flat cap over the base ring, in the template's
vertex indices). The predicted mesh has the template's vertex order, so the same triangles over the
predicted vertices are the predicted cavity; it is closed by construction (checked with
:func:`sono3d.geometry.mesh.require_watertight`) and its volume is taken by the divergence theorem
(:func:`sono3d.heart.clinical.lv_volume_ml`). The run's checkpoint is read by
:func:`sono3d.heart.checkpoint.load_run`.

Frames: the network predicts each phase in its echo frame (the A4C image's frame, see
:mod:`sono3d.heart.data`). When ``views.npz`` holds the views' ``poses``, the meshes are mapped to
the world frame of those poses; otherwise they stay in the echo frame (``report.json`` says which).
Volumes and EF do not depend on the frame.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sono3d.errors import InputError
from sono3d.geometry.mesh import require_watertight
from sono3d.heart.checkpoint import LoadedRun, load_run
from sono3d.heart.clinical import ejection_fraction, lv_volume_ml
from sono3d.heart.data import echo_frame, from_frame, load_views, resize_views
from sono3d.heart.strain import global_strains_pct
from sono3d.heart.template import lv_cavity_with, template_mesh_with
from sono3d.io.atomic import atomic_path
from sono3d.types import PHASES

# LoadedRun, load_run (sono3d.heart.checkpoint) and template_mesh_with (sono3d.heart.template) are
# re-exported: they lived here before.
__all__ = ["LoadedRun", "load_run", "template_mesh_with", "predict_views", "predict_files", "lv_volumes_from_points"]


def lv_volumes_from_points(template: dict[str, np.ndarray], points: np.ndarray) -> float:
    """LV cavity volume (mL, divergence theorem) of a mesh in the template's vertex order.

    ``template`` is the run's template record (:mod:`sono3d.heart.template`).
    """
    cavity = lv_cavity_with(template, points)
    require_watertight(cavity, "predicted LV cavity")
    return lv_volume_ml(cavity, "divergence")


def predict_views(run: LoadedRun, echo: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Predicted vertices ``[P, V, 3]`` (mm, echo frame) of views ``[P, 6, H, W]`` in [0, 1].

    ``present [6]`` (bool, optional): the views given; the others are blanked. A run trained
    without view dropout needs all six (:class:`InputError` otherwise).
    """
    x = torch.from_numpy(np.ascontiguousarray(resize_views(echo, run.net_config.image_size)))
    p = None
    if present is not None and not np.all(present):
        p = torch.from_numpy(np.asarray(present, dtype=bool)).float()[None].expand(len(x), -1).contiguous()
        x = x * p[:, :, None, None]
    with torch.no_grad():
        return run.model.predict_points(x, p).double().numpy()


def predict_files(run_dir: str | os.PathLike[str], views_path: str | os.PathLike[str],
                  out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``sono3d heart predict``: write ``heart_ed.vtp`` (and ``heart_es.vtp``) and ``report.json``.

    ``report.json`` holds ``lv_edv_ml`` (and ``lv_esv_ml``, ``ef`` in percent, ``gls_pct`` and
    ``gcs_pct`` (:mod:`sono3d.heart.strain`; null for a template of another vertex order) when both
    phases are given), ``frame`` (``world`` or ``echo``), ``seconds``, ``views`` (the views file's
    path as given, so ``sono3d report`` finds it later) and the files written. Everything is
    computed before anything is written, so a failure leaves no partial output.
    """
    run = load_run(run_dir, expect_kind="s2mnet")
    v = load_views(views_path, run.net_config.n_views)
    t0 = time.perf_counter()
    pts = predict_views(run, v["echo"], v["present"])
    frame = "echo"
    if v["poses"] is not None:
        pts = np.stack([from_frame(pts[p], echo_frame(v["poses"][p, 0])) for p in range(len(pts))])
        frame = "world"
    vols = [lv_volumes_from_points(run.template, pts[p]) for p in range(len(pts))]
    seconds = time.perf_counter() - t0
    report: dict[str, Any] = {"lv_edv_ml": vols[0], "frame": frame, "epoch": run.epoch,
                              "seconds": seconds, "seconds_per_phase": seconds / len(pts),
                              "views": os.fspath(views_path)}
    if len(pts) == 2:
        report["lv_esv_ml"] = vols[1]
        report["ef"] = ejection_fraction(vols[0], vols[1])
        strains = global_strains_pct(pts[0], pts[1])  # None for a template of another vertex order
        report["gls_pct"], report["gcs_pct"] = strains if strains is not None else (None, None)
    meshes = {PHASES[p]: template_mesh_with(run.template, pts[p]) for p in range(len(pts))}
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for ph, mesh in meshes.items():
        path = out / f"heart_{ph}.vtp"
        with atomic_path(path) as tmp:
            mesh.save(str(tmp), binary=True)
        files.append(str(path))
    report["files"] = files
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report
