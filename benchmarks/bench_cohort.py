"""Heart cohort speed: seconds per case (two phases, six views each, files written).

* In-process, one core: :func:`sono3d.heart.cohort.generate_case` (meshes, 12 label images,
  pseudo-echo) and :func:`sono3d.heart.cohort.write_case` (four VTP files, ``views.npz``,
  ``params.json``), timed separately after one warm-up case, over ``--cases`` cases.
* End to end: :func:`sono3d.heart.cohort.generate_cohort` with ``--workers`` spawned workers
  (process start-up included) into a temporary folder.
* Projection: seconds for 1,000 cases on 2 workers from the in-process seconds per case
  (``1000 * s / 2``; the target is 600 s).

Prints a table, then ONE JSON line.

    .venv/bin/python benchmarks/bench_cohort.py [--cases 10] [--size 128] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sono3d.heart.cohort import generate_case, generate_cohort, write_case
from sono3d.simulate.echo_views import ViewOptions

TARGET_S_1000_ON_2 = 600.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    opt = ViewOptions(size=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_case(_mk(root / "warm"), generate_case(0, 10_000, args.size, opt))  # imports, caches
        t_gen = t_write = 0.0
        for i in range(args.cases):
            t = time.perf_counter()
            data = generate_case(0, i, args.size, opt)
            t_gen += time.perf_counter() - t
            t = time.perf_counter()
            write_case(_mk(root / f"c{i}"), data)
            t_write += time.perf_counter() - t
        gen, wr = t_gen / args.cases, t_write / args.cases
        per_case = gen + wr
        t = time.perf_counter()
        generate_cohort(root / "pool", args.cases, seed=1, size=args.size, workers=args.workers, options=opt)
        pool_s = time.perf_counter() - t
    projected = 1000 * per_case / 2
    rows = [
        ("generate (meshes + 12 views + echo)", f"{gen:.3f} s/case"),
        ("write (4 vtp + views.npz)", f"{wr:.3f} s/case"),
        ("total, one core", f"{per_case:.3f} s/case"),
        (f"generate_cohort, {args.workers} workers, {args.cases} cases", f"{pool_s:.2f} s "
                                                                         f"({pool_s / args.cases:.3f} s/case)"),
        ("projected 1,000 cases on 2 workers", f"{projected:.0f} s (target {TARGET_S_1000_ON_2:.0f} s)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"heart cohort, {args.size}x{args.size} views")
    for name, val in rows:
        print(f"  {name:<{width}}  {val}")
    print(json.dumps({
        "bench": "cohort", "size": args.size, "cases": args.cases, "generate_s_per_case": round(gen, 4),
        "write_s_per_case": round(wr, 4), "s_per_case": round(per_case, 4), "workers": args.workers,
        "pool_s_per_case": round(pool_s / args.cases, 4), "projected_1000_on_2_workers_s": round(projected, 1),
        "target_s": TARGET_S_1000_ON_2, "meets_target": bool(projected <= TARGET_S_1000_ON_2),
    }))


def _mk(p: Path) -> Path:
    p.mkdir(parents=True)
    return p


if __name__ == "__main__":
    main()
