"""Peak memory of compounding and reconstructing a large sweep: 2,000 frames of 512x512.

A uterus phantom is swept by a simulated fan (2,000 frames of 512x512, label appearance) and the
frames are written as an 8-bit PLUS sequence (``.seq.nrrd``, raw encoding, per-frame
``ImageToReferenceTransform`` with the pixel spacing folded in, as PLUS records them): 500 MiB
of pixels, 2 GiB as float32, 4 GiB as float64. The frames are sampled 50 at a time, so the
generator itself stays small.

Then two fresh processes, each measuring its own peak resident memory (``ru_maxrss``):

* ``compound``: ``read_sweep`` -> ``compound_sweep`` (linear, mean, hole filling, 0.5 mm voxels)
  -> ``write_volume``, what ``sono3d sweep compound`` does;
* ``reconstruct``: ``reconstruct_to_folder`` (the ``fast`` preset), what ``sono3d sweep
  reconstruct`` does. Memory does not grow with the number of epochs (frames, rendering and
  Gaussians are allocated once), so ``--epochs`` (default 1) only shortens the run; the figure is
  the full pipeline's: reading, initialisation, training, the final rendering of every frame, the
  metrics, the volume and the report.

Large sweeps keep their frames as float16 (:data:`sono3d.types.COMPACT_FRAME_PIXELS`), and
consumers convert a batch of frames at a time. The target is a peak of at most 6 GB (6,000 MB)
per stage.

Prints a small table, then ONE JSON line::

    {"frames", "size", "frames_uint8_mb", "frames_float32_mb", "compound": {"peak_rss_mb", "seconds", ...},
     "reconstruct": {"peak_rss_mb", "seconds", "epochs", ...}, "target_mb": 6000, "within_target": bool}

    .venv/bin/python benchmarks/bench_large_sweep.py [--frames 2000] [--size 512] [--epochs 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sono3d.geometry.sector import sector_mask
from sono3d.io import read_sweep, write_volume
from sono3d.io.volumes import LPS_TO_RAS
from sono3d.phantoms.uterus import build_uterus
from sono3d.simulate.slicing import sample_planes
from sono3d.simulate.sweeps import SweepConfig, frame_geometry, probe_base_pose, probe_placement, sweep_poses
from sono3d.sweep.compound import CompoundConfig, compound_sweep
from sono3d.sweep.export import reconstruct_to_folder
from sono3d.sweep.reconstruct import ReconstructConfig

TARGET_MB = 6000.0


def write_large_sweep(path: Path, frames: int, size: int, seed: int = 0) -> dict:
    """Simulate a fan sweep 50 frames at a time and write it as an 8-bit PLUS ``.seq.nrrd``."""
    import nrrd

    phantom = build_uterus(seed=seed, mesh=False, spacing_mm=1.0)
    config = SweepConfig(frames=frames, size_px=size, seed=seed)
    shape, spacing, sector = frame_geometry(size, config.sector_angle_deg, config.depth_mm)
    base = probe_base_pose(probe_placement(phantom), config.direction, shape, spacing)
    poses, _ = sweep_poses(base, shape, config, np.random.default_rng(seed))
    mask = sector_mask(sector, shape, spacing)
    data = np.zeros((frames, 1, *shape), dtype=np.uint8)  # (N, 1, H, W): NRRD's W x H x 1 x N in C order
    for s in range(0, frames, 50):
        f = sample_planes(phantom.labels, poses[s:s + 50], shape, order=1, fill=0.0, mask=mask)
        data[s:s + 50, 0] = np.clip(np.rint(np.nan_to_num(f) * 255.0), 0, 255).astype(np.uint8)
    header = {
        "type": "uint8", "encoding": "raw", "space": "left-posterior-superior",
        "kinds": ["domain", "domain", "domain", "list"],
        "space directions": np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [np.nan] * 3]),
        "space origin": np.zeros(3),
        "ultrasound image orientation": "MF", "ultrasound image type": "BRIGHTNESS",
    }
    lps = LPS_TO_RAS @ poses  # PLUS records ImageToReference in LPS, pixel spacing folded in
    for i in range(frames):
        p = f"Seq_Frame{i:04d}_"
        header[p + "ImageToReferenceTransform"] = " ".join(repr(float(v)) for v in lps[i].ravel())
        header[p + "ImageToReferenceTransformStatus"] = "OK"
        header[p + "Timestamp"] = repr(i / 20.0)
        header[p + "ImageStatus"] = "OK"
    nrrd.write(str(path), data, header, index_order="C")
    return {"spacing_mm": list(spacing), "bytes": path.stat().st_size}


def stage(kind: str, sweep: str, out: str, epochs: int) -> dict:
    """One measured stage, in this (fresh) process."""
    t0 = time.perf_counter()
    if kind == "compound":
        sw = read_sweep(sweep)
        res = compound_sweep(sw, CompoundConfig(spacing_mm=max(0.5, min(sw.spacing_mm))))
        write_volume(Path(out) / "compound.nii.gz", res.volume)
        extra = {"frame_dtype": str(sw.frames.dtype), "shape": res.stats["shape"],
                 "recorded_fraction": round(res.stats["recorded_fraction"], 4)}
    else:
        rep = reconstruct_to_folder(sweep, out, ReconstructConfig.preset("fast", epochs=epochs), progress=False)
        extra = {"epochs": epochs, "gaussians": rep["gaussians"], "train_ssim": round(rep["train"]["ssim"], 4),
                 "timings": {k: round(v, 1) for k, v in rep["timings"].items()}}
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
            "seconds": round(time.perf_counter() - t0, 1), **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="Keep the sweep and outputs in this folder.")
    ap.add_argument("--stage", choices=("compound", "reconstruct"), help=argparse.SUPPRESS)
    ap.add_argument("--sweep", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, args.sweep, args.out, args.epochs)))
        return

    work = args.keep or Path(tempfile.mkdtemp(prefix="sono3d-large-"))
    work.mkdir(parents=True, exist_ok=True)
    sweep = work / "large.seq.nrrd"
    try:
        t0 = time.perf_counter()
        info = write_large_sweep(sweep, args.frames, args.size)
        print(f"wrote {sweep} ({info['bytes'] / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        results = {}
        for kind in ("compound", "reconstruct"):
            cmd = [sys.executable, __file__, "--stage", kind, "--sweep", str(sweep), "--out", str(work / kind),
                   "--epochs", str(args.epochs)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{kind} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{kind:<12} peak RSS {results[kind]['peak_rss_mb']:8.0f} MB  {results[kind]['seconds']:8.1f} s",
                  file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    n_px = args.frames * args.size * args.size
    peak = max(r["peak_rss_mb"] for r in results.values())
    print(json.dumps({"frames": args.frames, "size": args.size, "frames_uint8_mb": round(n_px / 2**20, 1),
                      "frames_float32_mb": round(4 * n_px / 2**20, 1), **results, "target_mb": TARGET_MB,
                      "within_target": peak <= TARGET_MB}))


if __name__ == "__main__":
    main()
