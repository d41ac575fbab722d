"""Simulation and compounding speed: B-mode frames per second, seconds to compound a sweep.

* B-mode: :func:`sono3d.simulate.bmode` on 256x256 echogenicity frames (0.3 mm pixels, 90 degree
  sector), default :class:`~sono3d.simulate.BModeParams`; frames per second over ``--frames``
  frames after one warm-up frame.
* Compounding: :func:`sono3d.sweep.compound.compound_sweep` of 100 frames of 256x256 (0.3 mm
  pixels, 90 degree sector) into a 0.5 mm grid, two sweeps: a translation (0.5 mm steps) and a
  fan rocking +-30 degrees about the probe tip. Default configuration (linear splatting, mean,
  Gaussian then inverse-distance hole filling) and nearest-neighbour splatting. The numba kernels
  are compiled (or loaded from their cache) by a small warm-up call first.

Prints a table, then ONE JSON line.

    .venv/bin/python benchmarks/bench_simulate.py [--frames 100] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sono3d.geometry import fan_sweep_in_image, image_to_world_matrix, sector_for_probe, translation_sweep
from sono3d.simulate import bmode
from sono3d.sweep.compound import CompoundConfig, compound_sweep
from sono3d.types import Sweep

SIZE = 256
PIXEL_MM = 0.3
N_FRAMES = 100
VOXEL_MM = 0.5


def echo_frames(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random echogenicity frames ``(n, SIZE, SIZE)`` in [0, 1] (blobs on a dim background)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    e = ndimage.gaussian_filter(rng.random((n, SIZE, SIZE)), sigma=(0, 6, 6))
    e = (e - e.min()) / (e.max() - e.min())
    return e.astype(np.float32)


def time_best(fn, reps: int) -> float:  # noqa: ANN001
    """Best wall time of ``reps`` calls of ``fn()``."""
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def sweeps(frames: np.ndarray) -> dict[str, Sweep]:
    shape = (SIZE, SIZE)
    sector = sector_for_probe(shape, (PIXEL_MM, PIXEL_MM), angle_deg=90.0, depth_mm=SIZE * PIXEL_MM)
    base = image_to_world_matrix(np.column_stack([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]), [0.0, 0.0, 0.0],
                                 (PIXEL_MM, PIXEL_MM))
    n = frames.shape[0]
    poses = {
        "translation": translation_sweep(base, n, length_mm=0.5 * (n - 1)),
        "fan": fan_sweep_in_image(base, shape, n, span_deg=60.0, fan_axis="lateral"),
    }
    return {k: Sweep(frames, M, (PIXEL_MM, PIXEL_MM), sector=sector) for k, M in poses.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=N_FRAMES, help="frames per sweep / B-mode batch")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; the best time counts")
    args = ap.parse_args()

    echo = echo_frames(args.frames)
    sector = sector_for_probe((SIZE, SIZE), (PIXEL_MM, PIXEL_MM), angle_deg=90.0, depth_mm=SIZE * PIXEL_MM)
    bmode(echo[:1], (PIXEL_MM, PIXEL_MM), sector=sector, rng=0)  # warm-up (FFT plans, imports)
    t_bmode = time_best(lambda: bmode(echo, (PIXEL_MM, PIXEL_MM), sector=sector, rng=0), args.reps)
    frames = bmode(echo, (PIXEL_MM, PIXEL_MM), sector=sector, rng=0)

    rows = []
    configs = {"linear": CompoundConfig(spacing_mm=VOXEL_MM),
               "nearest": CompoundConfig(spacing_mm=VOXEL_MM, method="nearest")}
    for name, sweep in sweeps(frames).items():
        for cname, cfg in configs.items():
            compound_sweep(sweep.subset(slice(0, 2)), cfg)  # warm-up: numba compile or cache load
            runs = [compound_sweep(sweep, cfg).stats for _ in range(args.reps)]
            stats = min(runs, key=lambda st: st["seconds"])
            t = stats["seconds"]
            rows.append({"sweep": name, "method": cname, "seconds": t, "seconds_splat": stats["seconds_splat"],
                         "seconds_fill": stats["seconds_fill"], "voxels": int(np.prod(stats["shape"])),
                         "filled_fraction": stats["filled_fraction"]})

    print(f"B-mode {SIZE}x{SIZE}: {args.frames / t_bmode:.1f} frames/s ({t_bmode:.2f} s for {args.frames} frames)")
    print(f"{'sweep':>12} {'method':>8} {'seconds':>8} {'splat s':>8} {'fill s':>7} {'Mvoxels':>8} {'filled':>7}")
    for r in rows:
        print(f"{r['sweep']:>12} {r['method']:>8} {r['seconds']:>8.2f} {r['seconds_splat']:>8.2f} "
              f"{r['seconds_fill']:>7.2f} {r['voxels'] / 1e6:>8.2f} {r['filled_fraction']:>7.3f}")
    result = {
        "bench": "simulate",
        "frame_size": SIZE,
        "bmode_frames_per_s": args.frames / t_bmode,
        "compound_frames": args.frames,
        "voxel_mm": VOXEL_MM,
        "compound_seconds": {f"{r['sweep']}_{r['method']}": r["seconds"] for r in rows},
        "compound_voxels": {r["sweep"]: r["voxels"] for r in rows},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
