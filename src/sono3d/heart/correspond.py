"""Template correspondences by robust optimal transport: the deformation labels S2MNet learns.

``sono3d heart correspond`` deforms one template heart (:mod:`sono3d.heart.template`) onto both
phases of every case of a cohort and writes the displacements of the template's vertices
(``cases/<id>/deformation.npz``) and a report; this module runs that (:func:`correspond_cohort`,
:func:`correspond_case`). The pieces live below it and are re-exported here:

* :mod:`sono3d.heart.ot`: robust (unbalanced, entropic) optimal transport between labelled point
  sets (:func:`transport_plan`, :func:`ot_match`, :func:`ot_match_local`, :func:`grid_reduce`);
* :mod:`sono3d.heart.registration`: one template-to-target deformation, global fit then OT and
  spline levels (:class:`CorrespondOptions`, :func:`correspond_points`, :func:`correspond_meshes`)
  and its quality (:func:`deformation_quality`);
* :mod:`sono3d.heart.surfaces`: labelled surfaces as points, labels and masses;
* :mod:`sono3d.heart.template`: the template (:class:`Template`, :func:`load_template`).

The histogram of the report is drawn by :func:`sono3d.viz.heart.correspondence_histogram`
(``write_histogram`` here), which the command calls. See ``docs/correspondence.md``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from sono3d.errors import InputError, SonoError
from sono3d.heart.cohort import DEFORMATION_EXPECTED, HeartCase, case_ids, load_case
from sono3d.heart.ot import Match, grid_reduce, ot_match, ot_match_local, transport_plan
from sono3d.heart.registration import (
    CorrespondOptions,
    Correspondence,
    correspond_meshes,
    correspond_points,
    deformation_quality,
    deformed_lv_cavity,
    fit_global,
)
from sono3d.heart.surfaces import (
    SUBLABEL_ARRAYS,
    ghdheart_template,
    mesh_points_labels_weights,
    shared_sublabel_arrays,
    vertex_areas,
)
from sono3d.heart.template import Template, load_template, template_hash
from sono3d.io.atomic import atomic_path
from sono3d.io.lock import writer_lock
from sono3d.io.npz import read_npz, write_npz
from sono3d.io.testing import kill_point
from sono3d.heart.pool import run_in_workers
from sono3d.types import PHASES
from sono3d.viz.heart import correspondence_histogram as write_histogram

__all__ = [
    "CorrespondOptions",
    "Correspondence",
    "Match",
    "transport_plan",
    "ot_match",
    "ot_match_local",
    "grid_reduce",
    "fit_global",
    "correspond_points",
    "mesh_points_labels_weights",
    "correspond_meshes",
    "template_hash",
    "ghdheart_template",
    "SUBLABEL_ARRAYS",
    "shared_sublabel_arrays",
    "vertex_areas",
    "deformed_lv_cavity",
    "deformation_quality",
    "Template",
    "load_template",
    "correspond_case",
    "correspond_cohort",
    "write_histogram",
    "REPORT_NAME",
    "FIGURE_NAME",
]

REPORT_NAME = "correspondence_report.json"
FIGURE_NAME = "correspondence_hist.png"


def correspond_case(template: Template, case: HeartCase, options: CorrespondOptions | None = None) -> dict:
    """Deform the template onto both phases of one case (a :class:`~sono3d.heart.cohort.HeartCase`).

    Returns ``{"id", "seconds", "phases": {phase: quality dict}, "arrays": {...}}`` where the
    arrays are those of ``deformation.npz``.
    """
    opt = options or CorrespondOptions()
    t0 = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    phases: dict[str, dict] = {}
    for ph in PHASES:
        target = getattr(case, ph, None)
        if target is None:
            continue
        c0 = time.process_time()
        r = correspond_meshes(template.mesh, target, opt, names=(f"template {template.id}", f"case {case.id} {ph}"))
        cpu = time.process_time() - c0
        q = deformation_quality(template.mesh, r.displacement, target, getattr(case, f"lv_cavity_{ph}", None),
                                template.cavity)
        q["seconds"] = r.seconds
        q["cpu_seconds"] = cpu
        q["is_template"] = template_hash(target) == template.sha1  # the template itself: trivially matched
        phases[ph] = q
        arrays[ph] = r.displacement.astype(np.float32)
        arrays[f"confidence_{ph}"] = r.confidence.astype(np.float32)
        arrays[f"affine_{ph}"] = r.global_transform
    if not phases:
        raise InputError(f"case {case.id} has no surfaces")
    names = list(phases)
    arrays.update({
        "phases": np.array(names),
        "template_id": np.array(template.id),
        "template_sha1": np.array(template.sha1),
        "options_json": np.array(_options_json(opt)),
    })
    for key in ("chamfer_mm", "hausdorff_mm", "vertex_error_mm", "lv_volume_error_pct"):
        arrays[key] = np.array([phases[p][key] for p in names])
    arrays["is_template_phase"] = np.array([p for p in names if phases[p]["is_template"]], dtype="<U2")
    return {"id": case.id, "seconds": time.perf_counter() - t0, "phases": phases, "arrays": arrays}


def _options_json(opt: CorrespondOptions) -> str:
    return json.dumps(opt.to_dict(), sort_keys=True)


def _cached(path: Path, template: Template, opt: CorrespondOptions) -> dict | None:
    """The phases of an existing deformation.npz made with the same template and options."""
    try:
        z = read_npz(path, DEFORMATION_EXPECTED, "deformation")
        if (str(z["template_sha1"]) != template.sha1 or str(z["options_json"]) != _options_json(opt)
                or "is_template_phase" not in z):
            return None
        names = [str(n) for n in z["phases"]]
        own = {str(v) for v in z["is_template_phase"]}
        return {p: {"chamfer_mm": float(z["chamfer_mm"][k]), "hausdorff_mm": float(z["hausdorff_mm"][k]),
                    "vertex_error_mm": float(z["vertex_error_mm"][k]),
                    "lv_volume_error_pct": float(z["lv_volume_error_pct"][k]), "seconds": float("nan"),
                    "is_template": p in own}
                for k, p in enumerate(names)}
    except (SonoError, KeyError, ValueError, IndexError):
        return None  # unreadable or of another version: recomputed


_TEMPLATE_CACHE: dict = {}


def _work(args: tuple) -> dict:
    """Correspond one case of a cohort and write its deformation.npz (a top-level function, so
    spawned workers can run it)."""
    cohort_dir, cid, template_spec, opt, single_thread, reuse = args
    if single_thread:
        torch.set_num_threads(1)
    key = (str(cohort_dir), template_spec)
    if key not in _TEMPLATE_CACHE:
        _TEMPLATE_CACHE.clear()
        _TEMPLATE_CACHE[key] = load_template(cohort_dir, template_spec)
    template = _TEMPLATE_CACHE[key]
    path = Path(cohort_dir) / "cases" / cid / "deformation.npz"
    if reuse and path.is_file():
        phases = _cached(path, template, opt)
        if phases is not None:
            return {"id": cid, "seconds": float("nan"), "phases": phases, "reused": True}
    case = load_case(cohort_dir, cid, views=False)
    res = correspond_case(template, case, opt)
    write_npz(path, res.pop("arrays"), compress=False)
    kill_point("correspond-case")
    res["reused"] = False
    return res


def _summary(values: list[float]) -> dict | None:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None
    return {"mean": float(v.mean()), "median": float(np.median(v)), "max": float(v.max()), "n": int(v.size)}


def correspond_cohort(cohort_dir: str | os.PathLike[str], template: str | None = None,
                      options: CorrespondOptions | None = None, workers: int = 1, progress: bool = False,
                      reuse: bool = True) -> dict:
    """Deformations of the template onto every case and phase of a generated cohort.

    Writes ``cases/<id>/deformation.npz`` (arrays ``ed``, ``es``: displacement of the template's
    vertices [V, 3] float32 mm; ``confidence_<phase>`` [V]; ``affine_<phase>`` [4, 4];
    ``template_id``, ``template_sha1``, ``options_json``, ``phases``; the per-phase quality
    figures ``chamfer_mm``, ``hausdorff_mm``, ``vertex_error_mm``, ``lv_volume_error_pct``),
    then ``correspondence_report.json`` (:data:`REPORT_NAME`) in the cohort folder. The report's
    ``cases`` rows are what :func:`sono3d.viz.heart.correspondence_histogram` draws (the command
    writes it as ``correspondence_hist.png``, :data:`FIGURE_NAME`). A case whose deformation.npz was made with the same template and options is not recomputed
    when ``reuse``. The template's own ED phase is left out of the summary figures (it is
    trivially matched). Returns the report dict.
    """
    opt = options or CorrespondOptions()
    d = Path(cohort_dir)
    if not d.is_dir():
        raise InputError(f"{d}: no such cohort folder")
    if not (d / "cases").is_dir():
        raise InputError(f"{d}: no cases/ folder (not a generated heart cohort)")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers <= 0:
        raise InputError(f"the number of workers must be a positive integer, got {workers}")
    with writer_lock(d, "cohort folder"):
        tmpl = load_template(d, template)  # fail early on a bad template
        _TEMPLATE_CACHE.clear()
        _TEMPLATE_CACHE[(str(d), template)] = tmpl
        ids = case_ids(d)
        jobs = [(str(d), cid, template, opt, workers > 1, reuse) for cid in ids]
        t0 = time.perf_counter()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), unit="case", desc="correspond")
        results = []
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(_work(job))
                if bar is not None:
                    bar.update(1)
        else:
            for r in run_in_workers(_work, jobs, workers, f"{d}: corresponding the cohort"):
                results.append(r)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - t0
        results.sort(key=lambda r: r["id"])
        rows = [{"id": r["id"], "phase": p, **q} for r in results for p, q in r["phases"].items()]
        scored = [row for row in rows if not row["is_template"]]
        computed = [r for r in results if not r.get("reused")]
        vol = [row["lv_volume_error_pct"] for row in scored]
        report = {
            "cohort": str(d),
            "template": {"id": tmpl.id, "sha1": tmpl.sha1, "n_vertices": int(tmpl.mesh.n_points)},
            "n_cases": len(results),
            "n_phases_scored": len(scored),
            "chamfer_mm": _summary([row["chamfer_mm"] for row in scored]),
            "hausdorff_mm": _summary([row["hausdorff_mm"] for row in scored]),
            "vertex_error_mm": _summary([row["vertex_error_mm"] for row in scored]),
            "lv_volume_error_pct": _summary([abs(v) for v in vol]),
            "lv_volume_error_signed_pct": _summary(vol),
            "seconds_per_case": (wall / len(computed)) if computed else None,
            "seconds_per_case_one_worker": _summary([r["seconds"] for r in computed]),
            "cpu_seconds_per_phase": _summary([row.get("cpu_seconds", float("nan")) for row in rows]),
            "workers": int(workers),
            "reused_cases": len(results) - len(computed),
            "options": opt.to_dict(),
            "cases": rows,
        }
        with atomic_path(d / REPORT_NAME) as tmp:
            tmp.write_text(json.dumps(_finite_or_none(report), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return report


def _finite_or_none(o):  # noqa: ANN001, ANN202
    """JSON has no NaN: non-finite numbers become null."""
    if isinstance(o, dict):
        return {k: _finite_or_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_or_none(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o

