"""Evaluation of S2MNet (and the voxel baseline) on a split of a cohort.

Occupancy rule (IoU)
--------------------
A heart surface is a union of closed triangle surfaces (chambers' outer and inner shells, the LV
myocardium's epicardium-plus-endocardium shell, valves, vessels). A point is **occupied** when it
lies inside at least one connected component of the surface (ray parity, i.e. even-odd, per
component) or inside the closed LV cavity (the template's ``lv_cavity_faces``) when the mesh
carries it. So the occupied set is the whole heart, blood pools included. Ray parity is evaluated
for all voxel centres at once by casting one ray per (z, y) row along +x and counting crossings
(:func:`inside_parity`).

IoU@128³: both meshes are voxelised on the same grid of 128 x 128 x 128 voxel centres spanning the
union of their bounding boxes padded by 2 mm (voxels are not cubic in general). For the voxel
baseline the predicted occupancy probability (its own 32³/64³ box) is resampled trilinearly at the
128³ voxel centres of the union of the true mesh's box and the predicted occupied region's box
(padded 2 mm) and thresholded at 0.5.

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

All meshes are compared in each phase's echo frame (``sono3d.heart.data``), where the network
predicts them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError

__all__ = [
    "surface_components",
    "inside_parity",
    "occupancy",
    "grid_centres",
    "union_box",
    "evaluate_run",
]

_EPS = (0.53728, 0.71828)  # sub-voxel ray offsets (fractions of 1e-4 voxel) that avoid vertex hits


def surface_components(faces: np.ndarray, n_points: int | None = None) -> np.ndarray:
    """Connected component index of each triangle ``[F]`` (triangles sharing a vertex connect)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = np.asarray(faces, dtype=np.int64)
    n = int(n_points if n_points is not None else (f.max() + 1 if f.size else 0))
    if f.size == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    g = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    return lab[f[:, 0]]


def grid_centres(lo: np.ndarray, hi: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
    """Spacing ``[3]`` and voxel-centre coordinates per axis (x, y, z lists of ``[R]``) of a box grid."""
    lo = np.asarray(lo, dtype=np.float64)
    h = (np.asarray(hi, dtype=np.float64) - lo) / R
    return h, [lo[a] + (np.arange(R) + 0.5) * h[a] for a in range(3)]


def inside_parity(points: np.ndarray, faces: np.ndarray, lo: np.ndarray, hi: np.ndarray, R: int) -> np.ndarray:
    """Voxel centres inside a closed triangle surface by ray parity, ``bool [R, R, R]`` ``[z, y, x]``.

    The box ``[lo, hi]`` (mm, x y z) is cut into ``R`` voxels per axis; voxel ``(k, j, i)`` has centre
    ``lo + (i, j, k + 0.5) * h``. Each (z, y) row casts a ray along +x; a voxel is inside when an odd
    number of triangles cross its row before its centre. Rows are nudged by 1e-4 voxel so that no ray
    passes exactly through a vertex or an edge.
    """
    P = np.asarray(points, dtype=np.float64)
    F = np.asarray(faces, dtype=np.int64)
    out = np.zeros((R, R, R), dtype=bool)
    if F.size == 0:
        return out
    lo = np.asarray(lo, dtype=np.float64)
    h = (np.asarray(hi, dtype=np.float64) - lo) / R
    oy, oz = _EPS[0] * 1e-4 * h[1], _EPS[1] * 1e-4 * h[2]
    tri = P[F]  # [T, 3, 3]
    ty, tz = tri[:, :, 1], tri[:, :, 2]
    j0 = np.maximum(np.ceil((ty.min(1) - oy - lo[1]) / h[1] - 0.5), 0).astype(np.int64)
    j1 = np.minimum(np.floor((ty.max(1) - oy - lo[1]) / h[1] - 0.5), R - 1).astype(np.int64)
    k0 = np.maximum(np.ceil((tz.min(1) - oz - lo[2]) / h[2] - 0.5), 0).astype(np.int64)
    k1 = np.minimum(np.floor((tz.max(1) - oz - lo[2]) / h[2] - 0.5), R - 1).astype(np.int64)
    nj, nk = np.maximum(j1 - j0 + 1, 0), np.maximum(k1 - k0 + 1, 0)
    n = nj * nk
    keep = np.flatnonzero(n > 0)
    if keep.size == 0:
        return out
    n = n[keep]
    t = np.repeat(keep, n)
    local = np.arange(t.size) - np.repeat(np.cumsum(n) - n, n)
    jj = j0[t] + local // nk[t]
    kk = k0[t] + local % nk[t]
    py = lo[1] + (jj + 0.5) * h[1] + oy
    pz = lo[2] + (kk + 0.5) * h[2] + oz
    a, b, c = tri[t, 0], tri[t, 1], tri[t, 2]

    def cross2(u0, u1, v0, v1):  # noqa: ANN001, ANN202
        return u0 * v1 - u1 * v0

    d_c = cross2(b[:, 1] - a[:, 1], b[:, 2] - a[:, 2], py - a[:, 1], pz - a[:, 2])
    d_a = cross2(c[:, 1] - b[:, 1], c[:, 2] - b[:, 2], py - b[:, 1], pz - b[:, 2])
    d_b = cross2(a[:, 1] - c[:, 1], a[:, 2] - c[:, 2], py - c[:, 1], pz - c[:, 2])
    hit = ((d_a > 0) & (d_b > 0) & (d_c > 0)) | ((d_a < 0) & (d_b < 0) & (d_c < 0))
    if not hit.any():
        return out
    area = (d_a + d_b + d_c)[hit]
    x = (d_a[hit] * a[hit, 0] + d_b[hit] * b[hit, 0] + d_c[hit] * c[hit, 0]) / area
    ix = np.clip(np.ceil((x - lo[0]) / h[0] - 0.5), 0, R).astype(np.int64)
    flat = (kk[hit] * R + jj[hit]) * (R + 1) + ix
    counts = np.bincount(flat, minlength=R * R * (R + 1)).reshape(R, R, R + 1)[:, :, :R]
    return (np.cumsum(counts, axis=2) & 1).astype(bool)


def occupancy(points: np.ndarray, faces: np.ndarray, lo: np.ndarray, hi: np.ndarray, R: int,
              components: np.ndarray | None = None, cavity_faces: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Heart occupancy and LV-cavity occupancy (``bool [R, R, R]``, ``[z, y, x]``) of a surface.

    The heart is the union over connected components of their parity interiors plus the LV cavity
    (see the module notes); the LV cavity is ``None`` when ``cavity_faces`` is not given. Each
    component is voxelised within its own bounding box only.
    """
    P = np.asarray(points, dtype=np.float64)
    F = np.asarray(faces, dtype=np.int64)
    comp = surface_components(F, len(P)) if components is None else np.asarray(components)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    h = (hi - lo) / R
    heart = np.zeros((R, R, R), dtype=bool)

    def add(fc: np.ndarray, target: np.ndarray) -> None:
        used = P[np.unique(fc)]
        i0 = np.clip(np.floor((used.min(0) - lo) / h).astype(np.int64) - 1, 0, R)
        i1 = np.clip(np.ceil((used.max(0) - lo) / h).astype(np.int64) + 1, 0, R)
        size = i1 - i0
        if (size <= 0).any():
            return
        m = int(size.max())
        sub_lo = lo + i0 * h
        sub = inside_parity(P, fc, sub_lo, sub_lo + m * h, m)
        target[i0[2]:i1[2], i0[1]:i1[1], i0[0]:i1[0]] |= sub[:size[2], :size[1], :size[0]]

    for g in np.unique(comp):
        add(F[comp == g], heart)
    cavity = None
    if cavity_faces is not None and np.size(cavity_faces):
        cavity = np.zeros((R, R, R), dtype=bool)
        add(np.asarray(cavity_faces, dtype=np.int64).reshape(-1, 3), cavity)
        heart |= cavity
    return heart, cavity


def union_box(*point_sets: np.ndarray, pad_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """``lo, hi`` (mm) of the union of the point sets' bounding boxes, padded."""
    p = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1, 3) for s in point_sets])
    return p.min(0) - pad_mm, p.max(0) + pad_mm


def _boundary_points(occ: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Centres (mm, x y z) of occupied voxels with an empty 6-neighbour."""
    from scipy.ndimage import binary_erosion

    R = occ.shape[0]
    edge = occ & ~binary_erosion(occ, border_value=0)
    k, j, i = np.nonzero(edge)
    h = (np.asarray(hi) - np.asarray(lo)) / R
    return np.asarray(lo) + (np.stack([i, j, k], 1) + 0.5) * h


def _template_arrays(template: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    faces = np.asarray(template["faces"], dtype=np.int64)
    cav = template.get("lv_cavity_faces")
    cav = None if cav is None or np.size(cav) == 0 else np.asarray(cav, dtype=np.int64)
    return faces, surface_components(faces, int(np.asarray(template["points"]).shape[0])), cav


def _resample_probability(prob: np.ndarray, box_centre: np.ndarray, box_half: np.ndarray, lo: np.ndarray,
                          hi: np.ndarray, R: int) -> np.ndarray:
    """Trilinear resampling of a probability grid ``[r, r, r]`` (``[z, y, x]`` over its box) at the
    voxel centres of ``[lo, hi]`` cut into ``R`` per axis (zero outside its box)."""
    import torch
    import torch.nn.functional as F

    _, (xs, ys, zs) = grid_centres(lo, hi, R)
    r = prob.shape[0]
    # grid_sample with align_corners=False maps -1/+1 to the outer faces of the first/last voxel
    nx = (xs - box_centre[0]) / box_half[0]
    ny = (ys - box_centre[1]) / box_half[1]
    nz = (zs - box_centre[2]) / box_half[2]
    zz, yy, xx = np.meshgrid(nz, ny, nx, indexing="ij")
    g = torch.from_numpy(np.stack([xx, yy, zz], -1)[None].astype(np.float32))
    out = F.grid_sample(torch.from_numpy(prob[None, None].astype(np.float32)), g, mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    del r
    return out[0, 0].numpy()


def _volume_stats(pred: dict[str, list[float]], truth_ef: list[float]) -> dict[str, Any]:
    from sono3d.heart.clinical import agreement

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


def evaluate_run(run_dir: str | os.PathLike[str], cohort_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                 split: str = "test", baseline: str | os.PathLike[str] | None = None, resolution: int = 128,
                 figures: bool = True, max_cases: int | None = None) -> dict[str, Any]:
    """Evaluate an S2MNet run (and optionally a voxel baseline run) on a split of a cohort.

    Writes ``OUT_DIR/report.json`` (see the module notes for each figure), ``cases.csv`` (one row per
    case) and, with ``figures``, ``ef_bland_altman.png`` and ``iou_box.png``. Returns the report.
    """
    import torch

    from sono3d.heart.clinical import ejection_fraction, lv_volume_ml
    from sono3d.heart.data import load_cohort_arrays, read_split, resize_views
    from sono3d.heart.predict import load_run, template_mesh_with
    from sono3d.heart.cohort import read_manifest
    from sono3d.io.atomic import atomic_path
    from sono3d.metrics.surface import iou as iou_of, surface_distances

    if split not in ("train", "val", "test"):
        raise InputError(f"split must be train, val or test, got {split!r}")
    run = load_run(run_dir, expect_kind="s2mnet")
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
    arrays = load_cohort_arrays(cohort_dir, ids, size, targets=run.targets)
    faces, comp, cav = _template_arrays(run.template)
    if cav is None:
        raise InputError(f"{run_dir}: the template carries no LV cavity, so no volumes or EF can be computed")
    R = int(resolution)
    rows: list[dict[str, Any]] = []
    per_method = {"s2mnet": {"iou": [], "mse": [], "err": [], "chamfer": [], "hausdorff": [], "chamfer_occ": [],
                             "vol": {}},
                  "baseline": {"iou": [], "chamfer": [], "hausdorff": [], "vol": {}}}
    t_infer = []
    torch_threads = torch.get_num_threads()
    for ci, cid in enumerate(ids):
        views = torch.from_numpy(arrays.echo[ci])  # [2, 6, S, S]
        t0 = time.perf_counter()
        with torch.no_grad():
            pred = run.model.predict_points(views).double().numpy()  # [2, V, 3]
        t_infer.append(time.perf_counter() - t0)  # both phases, one batch
        prob = None
        if base is not None:
            bviews = torch.from_numpy(np.ascontiguousarray(resize_views(arrays.echo[ci], base.net_config.image_size)))
            with torch.no_grad():
                prob = torch.sigmoid(base.model(bviews)).numpy()  # [2, C, r, r, r]
        row: dict[str, Any] = {"id": cid}
        vols: dict[str, dict[str, float]] = {}
        for p, ph in enumerate(("ed", "es")):
            true_pts = arrays.points[ci, p].astype(np.float64)
            err = pred[p] - true_pts
            mse = float(np.mean(err ** 2))
            lo, hi = union_box(pred[p], true_pts, pad_mm=2.0)
            occ_p, _ = occupancy(pred[p], faces, lo, hi, R, comp, cav)
            occ_t, _ = occupancy(true_pts, faces, lo, hi, R, comp, cav)
            sd = surface_distances(pred[p], true_pts)
            bp, bt = _boundary_points(occ_p, lo, hi), _boundary_points(occ_t, lo, hi)
            m = per_method["s2mnet"]
            m["iou"].append(iou_of(occ_p, occ_t))
            m["mse"].append(mse)
            m["err"].append(float(np.linalg.norm(err, axis=1).mean()))
            m["chamfer"].append(sd.chamfer)
            m["hausdorff"].append(sd.hausdorff)
            m["chamfer_occ"].append(surface_distances(bp, bt).chamfer)
            mesh = template_mesh_with(run.template, pred[p])
            from sono3d.phantoms.heart import lv_cavity_from_heart

            cavity = lv_cavity_from_heart(mesh)
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
                pb = _resample_probability(pc[0], cb, hb, blo, bhi, R) >= 0.5
                tb, _ = occupancy(true_pts, faces, blo, bhi, R, comp, cav)
                b["iou"].append(iou_of(pb, tb))
                bpb = _boundary_points(pb, blo, bhi)
                if len(bpb):
                    sdb = surface_distances(bpb, _boundary_points(tb, blo, bhi))
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
        for key, name in (("div", "s2mnet"), ("del", "s2mnet_delaunay"), ("base", "baseline")):
            if key not in vols:
                continue
            edv, esv = vols[key]["ed"], vols[key]["es"]
            row[f"edv_{name}"], row[f"esv_{name}"] = edv, esv
            row[f"ef_{name}"] = ejection_fraction(edv, esv) if np.isfinite(edv) and edv > 0 else float("nan")
        row["edv_true"], row["esv_true"] = float(truth["edv_ml"]), float(truth["esv_ml"])
        rows.append(row)
    ef_true = [r["ef_true"] for r in rows]
    s = per_method["s2mnet"]
    report: dict[str, Any] = {
        "run": str(run_dir), "cohort": str(cohort_dir), "split": split, "n_cases": len(ids),
        "resolution": R,
        "iou128": _summary(s["iou"]),
        "vertex_mse": float(np.mean(s["mse"])), "vertex_mse_units": "mm^2 (mean over vertices and x, y, z)",
        "vertex_error_mm": float(np.mean(s["err"])),
        "chamfer_mm": float(np.mean(s["chamfer"])), "hausdorff_mm": float(np.mean(s["hausdorff"])),
        "chamfer_occupancy_mm": float(np.mean(s["chamfer_occ"])),
        "inference_s_per_case": float(np.median(t_infer)), "torch_threads": torch_threads,
    }
    report.update(_volume_stats({"ef": [r["ef_s2mnet"] for r in rows]}, ef_true))
    report["volumes"] = _volume_report(rows, "s2mnet")
    report["delaunay"] = {**_volume_stats({"ef": [r["ef_s2mnet_delaunay"] for r in rows]}, ef_true),
                          "volumes": _volume_report(rows, "s2mnet_delaunay")}
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=float) + "\n", encoding="utf-8")
    _write_rows(out / "cases.csv", rows)
    if figures and len(rows) >= 2:  # a Bland-Altman plot needs two pairs
        from sono3d.viz.clinical import ef_bland_altman_figure, iou_box_figure

        ef_pairs = {"S2MNet": [r["ef_s2mnet"] for r in rows]}
        if base is not None and all(np.isfinite([r.get("ef_baseline", np.nan) for r in rows])):
            ef_pairs["Voxel baseline"] = [r["ef_baseline"] for r in rows]
        ef_bland_altman_figure(ef_pairs, ef_true, out / "ef_bland_altman.png")
        ious = {"S2MNet": s["iou"]}
        if base is not None:
            ious["Voxel baseline"] = per_method["baseline"]["iou"]
        iou_box_figure(ious, out / "iou_box.png", resolution=R)
    return report


def _nanmean(values: list[float]) -> float | None:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def _volume_report(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    from sono3d.metrics.stats import mae

    out = {}
    for v in ("edv", "esv"):
        pred = [r[f"{v}_{name}"] for r in rows]
        true = [r[f"{v}_true"] for r in rows]
        out[f"{v}_mae_ml"] = mae(pred, true)
    return out


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    from sono3d.io.atomic import atomic_path

    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
