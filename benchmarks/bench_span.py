"""``--span auto`` on generated fans of known span, and what it finds on real sweeps.

Generated fans: a 3D speckle volume (:func:`sono3d.simulate.speckle.speckle_volume`, an isotropic
point spread function of 0.4 mm, 0.2 mm voxels) sliced on ``--frames`` lateral fan planes of
80x48 pixels of 0.25 mm over each span in ``--spans`` with each pivot offset in ``--pivots``;
the estimate (:func:`sono3d.sweep.span.estimate_span`) is compared with the truth.

Real sweeps (optional, ``--real`` with paths to sweeps readable by ``read_sweep``): the estimate is
reported as found. For a tracked sweep, the elevational distance between neighbouring frames that
the estimate implies at mid-depth (``step * (depth / 2 + pivot)``) is printed beside the tracked
one, a check of the decorrelation model on real speckle.

Prints a table, then ONE JSON line ``{"generated": [...], "real": [...], "max_error": ...}``::

    .venv/bin/python benchmarks/bench_span.py [--spans 30 60 90 120] [--pivots 0 3] [--frames 40]
        [--real ../shared/data/plus/SpinePhantomFreehand.igs.mha ...]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from sono3d.errors import InputError
from sono3d.io import read_sweep
from sono3d.simulate.slicing import sample_planes
from sono3d.simulate.speckle import speckle_volume
from sono3d.sweep.initialise import frame_mask
from sono3d.sweep.poses import fan_prior_poses
from sono3d.sweep.seed import elevation_positions
from sono3d.sweep.span import estimate_span
from sono3d.types import Sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=float, nargs="+", default=[30.0, 45.0, 60.0, 90.0, 120.0])
    ap.add_argument("--pivots", type=float, nargs="+", default=[0.0, 3.0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--real", nargs="*", default=[])
    args = ap.parse_args()

    shape, sp = (80, 48), (0.25, 0.25)
    vol = speckle_volume((-7, -22, -22), (7, 22, 2), 0.2, (0.4, 0.4, 0.4), seed=args.seed)
    gen = []
    print(f"{'span':>6} {'pivot':>6} {'estimate':>9} {'error %':>8} {'pivot est':>9}")
    for span in args.spans:
        for pivot in args.pivots:
            P = fan_prior_poses(args.frames, shape, sp, span, "lateral", pivot)
            est = estimate_span(Sweep(sample_planes(vol, P, shape), None, sp), "lateral")
            err = 100.0 * (est["span_deg"] - span) / span
            gen.append({"span": span, "pivot": pivot, "estimate": est["span_deg"], "error_pct": err,
                        "pivot_estimate": est["pivot_offset_mm"]})
            print(f"{span:>6.0f} {pivot:>6.1f} {est['span_deg']:>9.1f} {err:>8.1f} {est['pivot_offset_mm']:>9.2f}",
                  flush=True)
    real = []
    for path in args.real:
        sweep = read_sweep(path)
        try:
            est = estimate_span(sweep, "lateral")
        except InputError as exc:  # refused: said, not used
            real.append({"sweep": str(path), "refused": str(exc)})
            print(json.dumps(real[-1]))
            continue
        row = {"sweep": str(path), **{k: est[k] for k in ("span_deg", "step_deg", "pivot_offset_mm")}}
        if sweep.image_to_world is not None:
            mask = frame_mask(sweep.shape, sweep.spacing_mm, sweep.sector)
            tracked = float(np.median(np.diff(elevation_positions(sweep.image_to_world, mask))))
            depth = 0.5 * sweep.shape[0] * sweep.spacing_mm[0]
            row["implied_step_mm"] = math.radians(est["step_deg"]) * (depth + est["pivot_offset_mm"])
            row["tracked_step_mm"] = tracked
        real.append(row)
        print(json.dumps(row))
    print(json.dumps({"generated": gen, "real": real,
                      "max_error": max((abs(g["error_pct"]) for g in gen), default=None)}))


if __name__ == "__main__":
    main()
