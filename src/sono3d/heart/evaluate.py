"""Evaluation of S2MNet (and the voxel baseline) on a split of a cohort.

IoU@128³: both meshes are voxelised (:mod:`sono3d.heart.occupancy`, whose notes give the occupancy
rule) on the same grid of 128 x 128 x 128 voxel centres spanning the union of their bounding boxes
padded by 2 mm (voxels are not cubic in general). For the voxel baseline the predicted occupancy
probability (its own 32³/64³ box) is resampled trilinearly at the 128³ voxel centres of the union
of the true mesh's box and the predicted occupied region's box (padded 2 mm) and thresholded at 0.5.

Other figures
-------------
* ``vertex_mse``: mean over vertices and the three coordinates of the squared error (mm²) between
  predicted and target vertices (the training loss); ``vertex_error_mm`` the mean Euclidean error.
* ``chamfer_mm``, ``hausdorff_mm``: between predicted and true mesh vertices
  (:func:`sono3d.metrics.surface.surface_distances`). For the voxel baseline, which has no mesh,
  between the boundary voxel centres of the predicted and true 128³ occupancies; the same
  occupancy-boundary figure is reported for S2MNet as ``chamfer_occupancy_mm``.
* LV volumes: ``divergence`` on the closed predicted LV cavity, and ``delaunay`` (the paper's
  convex-hull route) on its vertices; EF from each; EF MAE and Pearson r (95% CI) against the
  manifest's true EF. The voxel baseline's LV volume is the summed LV-cavity probability of its
  second output channel times the voxel volume.
* Strain (``strain``, meshes in the template's vertex order): GLS MAE and Pearson against the
  manifest's ``gls_pct`` (a cohort without it: the target meshes' GLS), GCS MAE, and the Pearson
  correlation of predicted EF with predicted GLS beside the truth's (the paper's Table 3 check;
  :func:`sono3d.heart.strain.strain_agreement`).

Fewer views (``views``): the other views are blanked and flagged missing (a run trained with
view dropout); every figure is then that subset's.

Overlays (``pose``, a view-plane regressor run, :mod:`sono3d.heart.pose`): each given view's plane
is regressed from the view; ``pose`` reports the median geodesic angle error (degrees) and apex
distance (mm) against the true planes, per view and over the views other than A4C (which defines
the echo frame, so its true plane is a constant); ``overlay`` the Dice overlap of the LV blood pool
between the predicted mesh sliced on the regressed plane and the true label image, inside the
view's sector (:mod:`sono3d.heart.overlay`), and the same on the true plane (``dice_true_plane``:
the mesh's share of the error).

All meshes are compared in each phase's echo frame (``sono3d.heart.data``), where the network
predicts them. :func:`evaluate_split` computes; :func:`write_evaluation` writes ``report.json`` and
``cases.csv``; the figures are drawn from the rows by :func:`sono3d.viz.clinical.evaluation_figures`.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sono3d.errors import InputError
from sono3d.heart.checkpoint import load_run
from sono3d.heart.clinical import agreement, ejection_fraction, lv_volume_ml
from sono3d.heart.cohort import load_case, read_manifest
from sono3d.heart.data import SPLITS, load_cohort_arrays, read_split, resize_views
from sono3d.heart.occupancy import (
    boundary_points,
    grid_centres,
    inside_parity,
    occupancy,
    resample_probability,
    surface_components,
    union_box,
)
from sono3d.heart.overlay import label_dice, sector_masks, slice_views, template_layers
from sono3d.heart.pose import plane_errors, predict_planes, view_planes
from sono3d.heart.predict import predict_views
from sono3d.heart.s2mnet import POSE_KIND
from sono3d.heart.strain import global_strains_pct, strain_agreement
from sono3d.heart.template import lv_cavity_with, record_faces
from sono3d.io.atomic import atomic_path
from sono3d.metrics.stats import mae
from sono3d.metrics.surface import iou as iou_of, surface_distances
from sono3d.simulate.echo_views import VIEW_NAMES
from sono3d.types import PHASES

# The occupancy functions (sono3d.heart.occupancy) are re-exported: they lived here before.
__all__ = [
    "Evaluation",
    "evaluate_split",
    "write_evaluation",
    "evaluate_run",
    "surface_components",
    "inside_parity",
    "occupancy",
    "grid_centres",
    "union_box",
    "view_subset",
]


@dataclass
class Evaluation:
    """The result of :func:`evaluate_split`.

    Attributes
    ----------
    report : dict
        The figures of ``report.json`` (see the module notes).
    rows : list of dict
        One row per case (``cases.csv``): per-phase IoU, vertex MSE, Chamfer, the volumes and EF of
        each method and the truth.
    """

    report: dict[str, Any]
    rows: list[dict[str, Any]]


def _volume_stats(pred: dict[str, list[float]], truth_ef: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ef = np.asarray(pred["ef"], dtype=np.float64)
    t = np.asarray(truth_ef, dtype=np.float64)
    if ef.size >= 2:
        ag = agreement(ef, t)
        out = {"ef_mae": ag.mae, "ef_pearson": None if ag.pearson is None else
               {"r": ag.pearson.r, "ci95": list(ag.pearson.ci), "p": ag.pearson.p},
               "ef_bias": ag.bland_altman.bias, "ef_loa": list(ag.bland_altman.loa)}
    elif ef.size == 1:
        out = {"ef_mae": float(abs(ef[0] - t[0])), "ef_pearson": None}
    return out


def _summary(values: list[float]) -> dict[str, float] | None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None
    return {"median": float(np.median(v)), "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def evaluate_split(run_dir: str | os.PathLike[str], cohort_dir: str | os.PathLike[str], split: str = "test",
                   baseline: str | os.PathLike[str] | None = None, resolution: int = 128,
                   max_cases: int | None = None, views: Sequence[str] | None = None,
                   pose: str | os.PathLike[str] | None = None, views_transform: Any = None,
                   views_style: dict[str, Any] | None = None) -> Evaluation:
    """Evaluate an S2MNet run (and optionally a voxel baseline run) on a split of a cohort.

    ``views``: evaluate from this subset of :data:`VIEW_NAMES` only; ``pose``: a view-plane
    regressor run, for the plane errors and overlay Dice. ``views_transform`` (the style bridge,
    ``--style``) maps each case's views before the networks see them, as in training;
    ``views_style`` describes it in the report. Writes nothing; see the module notes for each
    figure of the report.
    """
    if split not in SPLITS:
        raise InputError(f"split must be train, val or test, got {split!r}")
    present = view_subset(views)
    run = load_run(run_dir, expect_kind="s2mnet")
    pose_run = load_run(pose, expect_kind=POSE_KIND) if pose is not None else None
    base = load_run(baseline, expect_kind="voxel") if baseline is not None else None
    ids = read_split(run_dir)[split]
    if max_cases is not None:
        ids = ids[:max_cases]
    if not ids:
        raise InputError(f"{run_dir}: the {split} split is empty")
    if base is not None and read_split(baseline)[split] != read_split(run_dir)[split]:
        raise InputError(f"{baseline}: the baseline run's {split} split differs from {run_dir}'s (train both with "
                         "the same cohort and seed)")
    truth_rows = {r["id"]: r for r in read_manifest(cohort_dir)}
    missing = [i for i in ids if i not in truth_rows]
    if missing:
        raise InputError(f"{cohort_dir}: case {missing[0]} of the run's {split} split is not in this cohort")
    size = run.net_config.image_size
    arrays = load_cohort_arrays(cohort_dir, ids, size, targets=run.targets, views_transform=views_transform)
    faces, cav = record_faces(run.template)
    comp = surface_components(faces, int(np.asarray(run.template["points"]).shape[0]))
    if cav is None:
        raise InputError(f"{run_dir}: the template carries no LV cavity, so no volumes or EF can be computed")
    R = int(resolution)
    rows: list[dict[str, Any]] = []
    overlay_rows: list[dict[str, np.ndarray]] = []
    per_method = {"s2mnet": {"iou": [], "mse": [], "err": [], "chamfer": [], "hausdorff": [], "chamfer_occ": [],
                             "vol": {}},
                  "baseline": {"iou": [], "chamfer": [], "hausdorff": [], "vol": {}}}
    t_infer = []
    torch_threads = torch.get_num_threads()
    layers = template_layers(run.template) if pose_run is not None else None
    for ci, cid in enumerate(ids):
        t0 = time.perf_counter()
        pred = predict_views(run, arrays.echo[ci], present)  # [2, V, 3] from views [2, 6, S, S]
        t_infer.append(time.perf_counter() - t0)  # both phases, one batch
        if pose_run is not None:
            overlay_rows.append(_overlay_case(cohort_dir, cid, pose_run, layers, arrays.echo[ci], present, pred,
                                              arrays.points[ci]))
        prob = None
        if base is not None:
            bviews = torch.from_numpy(np.ascontiguousarray(resize_views(arrays.echo[ci], base.net_config.image_size)))
            bp = None
            if not present.all():
                bp = torch.from_numpy(present).float()[None].expand(len(bviews), -1).contiguous()
                bviews = bviews * bp[:, :, None, None]
            with torch.no_grad():
                prob = torch.sigmoid(base.model(bviews, bp)).numpy()  # [2, C, r, r, r]
        row: dict[str, Any] = {"id": cid}
        vols: dict[str, dict[str, float]] = {}
        for p, ph in enumerate(PHASES):
            true_pts = arrays.points[ci, p].astype(np.float64)
            err = pred[p] - true_pts
            mse = float(np.mean(err ** 2))
            lo, hi = union_box(pred[p], true_pts, pad_mm=2.0)
            occ_p, _ = occupancy(pred[p], faces, lo, hi, R, comp, cav)
            occ_t, _ = occupancy(true_pts, faces, lo, hi, R, comp, cav)
            sd = surface_distances(pred[p], true_pts)
            bp, bt = boundary_points(occ_p, lo, hi), boundary_points(occ_t, lo, hi)
            m = per_method["s2mnet"]
            m["iou"].append(iou_of(occ_p, occ_t))
            m["mse"].append(mse)
            m["err"].append(float(np.linalg.norm(err, axis=1).mean()))
            m["chamfer"].append(sd.chamfer)
            m["hausdorff"].append(sd.hausdorff)
            m["chamfer_occ"].append(surface_distances(bp, bt).chamfer)
            cavity = lv_cavity_with(run.template, pred[p])
            vols.setdefault("div", {})[ph] = lv_volume_ml(cavity, "divergence")
            vols.setdefault("del", {})[ph] = lv_volume_ml(np.asarray(cavity.points), "delaunay")
            row.update({f"iou_{ph}": m["iou"][-1], f"vertex_mse_{ph}": mse, f"chamfer_{ph}": sd.chamfer})
            if prob is not None:
                b = per_method["baseline"]
                pc = prob[p]
                r = pc.shape[-1]
                hb = base.model.box_half.numpy().astype(np.float64)
                cb = base.model.box_centre.numpy().astype(np.float64)
                occ_cells = np.argwhere(pc[0] >= 0.5)
                if occ_cells.size:
                    vox = (occ_cells[:, ::-1] + 0.5) / r * 2 * hb + cb - hb
                    blo, bhi = union_box(true_pts, vox, pad_mm=2.0)
                else:
                    blo, bhi = union_box(true_pts, pad_mm=2.0)
                pb = resample_probability(pc[0], cb, hb, blo, bhi, R) >= 0.5
                tb, _ = occupancy(true_pts, faces, blo, bhi, R, comp, cav)
                b["iou"].append(iou_of(pb, tb))
                bpb = boundary_points(pb, blo, bhi)
                if len(bpb):
                    sdb = surface_distances(bpb, boundary_points(tb, blo, bhi))
                    b["chamfer"].append(sdb.chamfer)
                    b["hausdorff"].append(sdb.hausdorff)
                else:
                    b["chamfer"].append(float("nan"))
                    b["hausdorff"].append(float("nan"))
                voxel_ml = float(np.prod(2 * hb / r)) / 1000.0
                vols.setdefault("base", {})[ph] = float(pc[1].sum()) * voxel_ml if pc.shape[0] > 1 else float("nan")
                row[f"baseline_iou_{ph}"] = b["iou"][-1]
        truth = truth_rows[cid]
        row["ef_true"] = float(truth["ef"]) * 100.0
        pred_strain = global_strains_pct(pred[0], pred[1])
        true_strain = global_strains_pct(arrays.points[ci, 0], arrays.points[ci, 1])
        if pred_strain is not None:
            row["gls_s2mnet"], row["gcs_s2mnet"] = pred_strain
            # the manifest's strain is the truth; a cohort without it (generator 1): the target meshes'
            row["gls_true"] = float(truth.get("gls_pct", true_strain[0] if true_strain else float("nan")))
            row["gcs_true"] = float(truth.get("gcs_pct", true_strain[1] if true_strain else float("nan")))
        for key, name in (("div", "s2mnet"), ("del", "s2mnet_delaunay"), ("base", "baseline")):
            if key not in vols:
                continue
            edv, esv = (vols[key][ph] for ph in PHASES)
            row[f"edv_{name}"], row[f"esv_{name}"] = edv, esv
            row[f"ef_{name}"] = ejection_fraction(edv, esv) if np.isfinite(edv) and edv > 0 else float("nan")
        row["edv_true"], row["esv_true"] = float(truth["edv_ml"]), float(truth["esv_ml"])
        rows.append(row)
    ef_true = [r["ef_true"] for r in rows]
    s = per_method["s2mnet"]
    report: dict[str, Any] = {
        "run": str(run_dir), "cohort": str(cohort_dir), "split": split, "n_cases": len(ids),
        "resolution": R, "views_given": [v for v, p in zip(VIEW_NAMES, present) if p],
        "iou128": _summary(s["iou"]),
        "vertex_mse": float(np.mean(s["mse"])), "vertex_mse_units": "mm^2 (mean over vertices and x, y, z)",
        "vertex_error_mm": float(np.mean(s["err"])),
        "chamfer_mm": float(np.mean(s["chamfer"])), "hausdorff_mm": float(np.mean(s["hausdorff"])),
        "chamfer_occupancy_mm": float(np.mean(s["chamfer_occ"])),
        "inference_s_per_case": float(np.median(t_infer)), "torch_threads": torch_threads,
    }
    report.update(_volume_stats({"ef": [r["ef_s2mnet"] for r in rows]}, ef_true))
    report["volumes"] = _volume_report(rows, "s2mnet")
    if views_style:
        report["style"] = dict(views_style)
    if all("gls_s2mnet" in r for r in rows) and len(rows) >= 2:
        report["strain"] = strain_agreement([r["gls_s2mnet"] for r in rows], [r["gls_true"] for r in rows],
                                            [r["ef_s2mnet"] for r in rows], ef_true)
        report["strain"]["gcs_mae"] = float(np.mean([abs(r["gcs_s2mnet"] - r["gcs_true"]) for r in rows]))
    report["delaunay"] = {**_volume_stats({"ef": [r["ef_s2mnet_delaunay"] for r in rows]}, ef_true),
                          "volumes": _volume_report(rows, "s2mnet_delaunay")}
    if pose_run is not None:
        report.update(_overlay_report(overlay_rows, present, str(pose)))
        for row, o in zip(rows, overlay_rows):
            for j, v in enumerate(VIEW_NAMES):
                if present[j]:
                    row[f"dice_lv_{v}"] = float(np.nanmean(o["dice"][:, j]))
                    row[f"angle_err_{v}"] = float(np.mean(o["angle"][:, j]))
                    row[f"position_err_{v}"] = float(np.mean(o["position"][:, j]))
    if base is not None:
        b = per_method["baseline"]
        bl: dict[str, Any] = {"run": str(baseline), "iou128": _summary(b["iou"]), "vertex_mse": None,
                              "chamfer_mm": _nanmean(b["chamfer"]), "hausdorff_mm": _nanmean(b["hausdorff"])}
        efs = [r.get("ef_baseline", float("nan")) for r in rows]
        if all(np.isfinite(efs)):
            bl.update(_volume_stats({"ef": efs}, ef_true))
            bl["volumes"] = _volume_report(rows, "baseline")
        else:
            bl.update({"ef_mae": None, "ef_pearson": None, "note": "this voxel model has no LV-cavity channel"})
        report["baseline"] = bl
    return Evaluation(report, rows)


def view_subset(views: Sequence[str] | None) -> np.ndarray:
    """Presence flags ``[6]`` of a subset of :data:`VIEW_NAMES` (``None``: all six)."""
    if views is None:
        return np.ones(len(VIEW_NAMES), dtype=bool)
    names = [str(v).strip().replace("-", "_") for v in views if str(v).strip()]
    unknown = [v for v in names if v not in VIEW_NAMES]
    if unknown:
        raise InputError(f"unknown view {unknown[0]!r} (views: {', '.join(VIEW_NAMES)})")
    if not names:
        raise InputError("the view subset is empty")
    return np.array([v in names for v in VIEW_NAMES])


def _overlay_case(cohort_dir: str | os.PathLike[str], cid: str, pose_run: Any, layers: Any, echo: np.ndarray,
                  present: np.ndarray, pred: np.ndarray, true_pts: np.ndarray) -> dict[str, np.ndarray]:
    """Plane errors and LV blood-pool Dice ``[P, 6]`` of one case (NaN for missing views)."""
    v = load_case(cohort_dir, cid, views=True).views
    labels, size = v["labels"], int(v["labels"].shape[-1])
    spacing = np.asarray(v["spacing_mm"], dtype=np.float64)
    masks = sector_masks(v["opening_deg"], v["depth_mm"], spacing, size)
    rot, apex = predict_planes(pose_run, echo, present)
    true_rot, true_apex = view_planes(v["poses"], size)
    P = len(pred)
    out = {k: np.full((P, len(VIEW_NAMES)), np.nan) for k in ("dice", "dice_true_plane", "angle", "position")}
    idx = np.flatnonzero(present)
    for p in range(P):
        out["angle"][p, idx], out["position"][p, idx] = plane_errors(rot[p, idx], apex[p, idx], true_rot[p, idx],
                                                                     true_apex[p, idx])
        lab, _ = slice_views(layers, pred[p], rot[p], apex[p], spacing, size, masks)
        lab_t, _ = slice_views(layers, pred[p], true_rot[p], true_apex[p], spacing, size, masks)
        for j in idx:
            out["dice"][p, j] = label_dice(lab[j], labels[p, j])
            out["dice_true_plane"][p, j] = label_dice(lab_t[j], labels[p, j])
    return out


def _overlay_report(rows: list[dict[str, np.ndarray]], present: np.ndarray, pose: str) -> dict[str, Any]:
    """``pose`` and ``overlay`` entries of the report (medians over cases, phases and views)."""
    cat = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}  # [N * P, 6]
    idx = np.flatnonzero(present)
    others = [j for j in idx if VIEW_NAMES[j] != "a4c"]

    def med(a: np.ndarray) -> float | None:
        a = a[np.isfinite(a)]
        return float(np.median(a)) if a.size else None

    per_view = {VIEW_NAMES[j]: {"angle_deg": med(cat["angle"][:, j]), "position_mm": med(cat["position"][:, j]),
                                "dice_lv": med(cat["dice"][:, j]), "dice_lv_true_plane": med(cat["dice_true_plane"][:, j])}
                for j in idx}
    return {
        "pose": {"run": pose, "median_angle_deg": med(cat["angle"][:, idx].ravel()),
                 "median_position_mm": med(cat["position"][:, idx].ravel()),
                 "median_angle_deg_without_a4c": med(cat["angle"][:, others].ravel()) if others else None,
                 "median_position_mm_without_a4c": med(cat["position"][:, others].ravel()) if others else None,
                 "per_view": {k: {m: d[m] for m in ("angle_deg", "position_mm")} for k, d in per_view.items()}},
        "overlay": {"label": "lv_blood", "median_dice": med(cat["dice"][:, idx].ravel()),
                    "median_dice_true_plane": med(cat["dice_true_plane"][:, idx].ravel()),
                    "per_view": {k: {m: d[m] for m in ("dice_lv", "dice_lv_true_plane")} for k, d in per_view.items()}},
    }


def write_evaluation(evaluation: Evaluation, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``OUT_DIR/report.json`` and ``OUT_DIR/cases.csv`` (one row per case); returns ``OUT_DIR``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(evaluation.report, indent=1, default=float) + "\n", encoding="utf-8")
    _write_rows(out / "cases.csv", evaluation.rows)
    return out


def evaluate_run(run_dir: str | os.PathLike[str], cohort_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                 split: str = "test", baseline: str | os.PathLike[str] | None = None, resolution: int = 128,
                 max_cases: int | None = None, views: Sequence[str] | None = None,
                 pose: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """:func:`evaluate_split` then :func:`write_evaluation` into ``out_dir``; returns the report.

    The figures are the caller's: :func:`sono3d.viz.clinical.evaluation_figures` draws them from the
    rows (``sono3d heart evaluate`` does).
    """
    evaluation = evaluate_split(run_dir, cohort_dir, split, baseline, resolution, max_cases, views, pose)
    write_evaluation(evaluation, out_dir)
    return evaluation.report


def _nanmean(values: list[float]) -> float | None:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def _volume_report(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    out = {}
    for v in ("edv", "esv"):
        pred = [r[f"{v}_{name}"] for r in rows]
        true = [r[f"{v}_true"] for r in rows]
        out[f"{v}_mae_ml"] = mae(pred, true)
    return out


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
