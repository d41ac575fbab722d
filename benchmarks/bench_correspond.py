"""Benchmark: template correspondences by robust OT on a synthetic cohort, and onto GHDHeart.

Generates a small synthetic cohort (or uses ``--cohort DIR``), runs ``correspond_cohort`` with the
default options, and maps the template's LV myocardium and RV, LA, RA blood pools onto the GHDHeart surfaces in
``../shared/data/hearts/ghdheart`` (when present). Prints a table and one JSON line.

    .venv/bin/python benchmarks/bench_correspond.py [--n 8] [--workers 2] [--cohort DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from sono3d.heart.cohort import generate_cohort, load_case, read_ghdheart
from sono3d.heart.correspond import correspond_cohort, correspond_meshes, deformation_quality, ghdheart_template
from sono3d.metrics.surface import nearest_distances

ROOT = Path(__file__).resolve().parents[1]
GHD = ROOT.parent / "shared" / "data" / "hearts" / "ghdheart"


def ghdheart_mapping(template_mesh) -> dict | None:  # noqa: ANN001
    """Chamfer (mm) of the template's GHDHeart surfaces (LV myocardium, RV/LA/RA blood pools)
    deformed onto GHDHeart, overall and per chamber."""
    if not GHD.is_dir():
        return None
    pools = ghdheart_template(template_mesh)
    target = read_ghdheart(GHD)
    c0 = time.process_time()
    res = correspond_meshes(pools, target.ed)
    cpu = time.process_time() - c0
    q = deformation_quality(pools, res.displacement, target.ed)
    moved = np.asarray(pools.points) + res.displacement
    lp = np.asarray(pools.point_data["elemTag"])
    lt = np.asarray(target.ed.point_data["elemTag"])
    per = {}
    for tag, name in ((1, "lv"), (2, "rv"), (3, "la"), (4, "ra")):
        a, b = moved[lp == tag], np.asarray(target.ed.points)[lt == tag]
        per[name] = float(0.5 * (nearest_distances(a, b).mean() + nearest_distances(b, a).mean()))
    return {"chamfer_mm": q["chamfer_mm"], "hausdorff_mm": q["hausdorff_mm"],
            "chamfer_vertex_to_vertex_mm": per, "cpu_seconds": cpu, "n_template_points": int(pools.n_points),
            "n_target_points": int(target.ed.n_points)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="cases to generate")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cohort", type=Path, default=None, help="use this cohort instead of generating one")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cohort = args.cohort
        if cohort is None:
            cohort = Path(tmp) / "cohort"
            generate_cohort(cohort, args.n, seed=args.seed, size=32, workers=1)
        t0 = time.perf_counter()
        rep = correspond_cohort(cohort, workers=args.workers, reuse=False)
        wall = time.perf_counter() - t0
        template = load_case(cohort, rep["template"]["id"], views=False).ed
    ghd = ghdheart_mapping(template)

    cpu = rep["cpu_seconds_per_phase"]["mean"]
    rows = [
        ("cases", rep["n_cases"]),
        ("template vertices", rep["template"]["n_vertices"]),
        ("Chamfer mean / max (mm)", f"{rep['chamfer_mm']['mean']:.3f} / {rep['chamfer_mm']['max']:.3f}"),
        ("Hausdorff mean (mm)", f"{rep['hausdorff_mm']['mean']:.2f}"),
        ("vertex error vs truth mean (mm)", f"{rep['vertex_error_mm']['mean']:.3f}"),
        ("LV volume |error| mean / max (%)",
         f"{rep['lv_volume_error_pct']['mean']:.2f} / {rep['lv_volume_error_pct']['max']:.2f}"),
        (f"wall s per case ({args.workers} workers)", f"{rep['seconds_per_case']:.2f}"),
        ("CPU s per phase (one thread)", f"{cpu:.2f}"),
        ("CPU s per case (two phases)", f"{2 * cpu:.2f}"),
    ]
    if ghd is not None:
        rows.append(("GHDHeart Chamfer (mm)", f"{ghd['chamfer_mm']:.3f}"))
        rows.append(("GHDHeart Hausdorff (mm)", f"{ghd['hausdorff_mm']:.2f}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(json.dumps({
        "bench": "correspond", "n_cases": rep["n_cases"], "workers": args.workers,
        "chamfer_mm_mean": rep["chamfer_mm"]["mean"], "chamfer_mm_max": rep["chamfer_mm"]["max"],
        "vertex_error_mm_mean": rep["vertex_error_mm"]["mean"],
        "lv_volume_error_pct_mean": rep["lv_volume_error_pct"]["mean"],
        "seconds_per_case": rep["seconds_per_case"], "cpu_seconds_per_case": 2 * cpu,
        "wall_seconds": wall, "ghdheart": ghd,
    }))


if __name__ == "__main__":
    main()
