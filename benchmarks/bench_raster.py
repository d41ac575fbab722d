"""Forward+backward of one 256x256 slice at 12k and 50k Gaussians, every rasterizer backend.

The scene looks like a reconstruction in progress: means spread over a 100 mm cube, a tenth of
them placed within two standard deviations of the slice plane, standard deviations 1-2 mm,
random rotations, the slice a rotated 100 mm square through the cube's centre, cutoff 3.

The dense reference keeps autograd state for every (pixel, Gaussian), which does not fit in memory
for a whole slice, so it is timed strip by strip (forward and backward per strip, the
gradients summed, strips sized to ~25M pixel-Gaussian pairs): the same arithmetic as one call,
with bounded memory.

``--reference-rows R`` times the reference on R rows only and scales the time to the whole slice
(its cost per row is constant), recorded as ``reference_rows_timed`` in the JSON.

Wall time is what the table reports; ``cpu_ms_fwd_bwd`` (process CPU time, all threads) is less
sensitive to other load on a shared machine.

``pairs_per_s`` counts the Gaussian-pixel pairs inside the cutoff (the contributions that exist),
the same number for every backend, divided by the forward+backward time.

Prints a table, then one JSON line per row.

    .venv/bin/python benchmarks/bench_raster.py [--sizes 12000 50000] [--reps 5] [--skip-reference-50k]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from sono3d.sweep.raster import available_backends, render_slices
from sono3d.sweep.raster._conic import slice_pairs
from sono3d.sweep.raster.reference import render_slices_reference

SIZE = 256
FOV_MM = 100.0
CUTOFF = 3.0
#: (pixel, Gaussian) pairs per reference strip: about 1 GB of autograd state
REF_STRIP_PAIRS = 25_000_000


def make_scene(n: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Gaussian tensors (means, log_scales, quats, opacity_logits, intensities) and one slice pose."""
    g = torch.Generator().manual_seed(seed)
    ang = torch.tensor([0.3, -0.2, 0.5])
    cx, cy, cz = (torch.cos(ang)).tolist()
    sx, sy, sz = (torch.sin(ang)).tolist()
    Rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    R = Rz @ Ry @ Rx
    spacing = FOV_MM / SIZE
    M = torch.eye(4)
    M[:3, 0] = R[:, 0] * spacing
    M[:3, 1] = R[:, 1] * spacing
    M[:3, 2] = R[:, 2]
    M[:3, 3] = -(R[:, 0] + R[:, 1]) * spacing * (SIZE - 1) / 2
    log_scales = torch.log(1.0 + torch.rand(n, 3, generator=g))
    means = (torch.rand(n, 3, generator=g) - 0.5) * FOV_MM
    near = n // 10
    # a tenth within 2 sigma of the plane: in-plane uniform, off-plane offset ~ U(-2, 2) * 1.5 mm
    inplane = (torch.rand(near, 2, generator=g) - 0.5) * FOV_MM
    off = (torch.rand(near, generator=g) * 4 - 2) * 1.5
    means[:near] = inplane[:, :1] * R[:, 0] + inplane[:, 1:] * R[:, 1] + off[:, None] * R[:, 2]
    quats = torch.randn(n, 4, generator=g)
    opacity_logits = torch.randn(n, generator=g)
    intensities = torch.rand(n, generator=g)
    return [means, log_scales, quats, opacity_logits, intensities], M[None]


def contributing_pairs(tensors: list[torch.Tensor], M: torch.Tensor) -> int:
    """Gaussian-pixel pairs with Mahalanobis distance <= cutoff (counted with the culled conics)."""
    with torch.no_grad():
        pairs = slice_pairs(*tensors, M, (SIZE, SIZE), CUTOFF)
        total = 0
        cols = torch.arange(SIZE, dtype=torch.float32)
        for s in range(0, len(pairs), 512):
            p = pairs.params[s : s + 512]
            dc = cols[None, None, :] - p[:, 0, None, None]
            dr = cols[None, :, None] - p[:, 1, None, None]
            q = p[:, 2, None, None] * dc * dc + 2 * p[:, 3, None, None] * dc * dr + p[:, 4, None, None] * dr * dr
            total += int((q <= pairs.rad2[s : s + 512, None, None]).sum())
    return total


def fwd_bwd(backend: str, tensors: list[torch.Tensor], M: torch.Tensor, ref_rows: int = SIZE) -> tuple[float, float]:
    """Wall and process-CPU seconds of one forward+backward (loss = the image times a fixed weight).

    For the reference, only the first ``ref_rows`` rows are run and the time is scaled by
    ``SIZE / ref_rows`` (its cost is the same for every row: all pixels against all Gaussians).
    """
    dev = device_of(backend)
    leaves = [t.detach().to(dev).requires_grad_() for t in tensors] + [M.detach().to(dev).requires_grad_()]
    weight = torch.linspace(-1, 1, SIZE * SIZE, device=dev).reshape(1, SIZE, SIZE)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    if backend == "reference":
        n = tensors[0].shape[0]
        strip = max(1, min(SIZE, REF_STRIP_PAIRS // (n * SIZE)))
        for r in range(0, ref_rows, strip):
            # the strip's origin is row r of the slice
            Ms = torch.cat([leaves[5][:, :, :3], (leaves[5][:, :, 3] + r * leaves[5][:, :, 1])[:, :, None]], dim=2)
            rows = min(strip, ref_rows - r)
            img = render_slices_reference(*leaves[:5], Ms, (rows, SIZE), cutoff=CUTOFF, chunk_pixels=rows * SIZE)
            (img * weight[:, r : r + rows]).sum().backward()
        scale = SIZE / ref_rows
        return (time.perf_counter() - t0) * scale, (time.process_time() - c0) * scale
    else:
        img = render_slices(*leaves[:5], leaves[5], (SIZE, SIZE), backend=backend, cutoff=CUTOFF)
        (img * weight).sum().backward()
        sync()
    return time.perf_counter() - t0, time.process_time() - c0


def device_of(backend: str) -> str:
    """Where a backend's tensors live: the GPU kernels on cuda, everything else (the reference the
    speed-ups are taken against included) on the CPU."""
    return "cuda" if backend == "triton" else "cpu"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[12000, 50000])
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each fast backend (median)")
    ap.add_argument("--reference-reps", type=int, default=1)
    ap.add_argument("--skip-reference-50k", action="store_true", help="skip the dense reference above 20k")
    ap.add_argument("--reference-rows", type=int, default=SIZE,
                    help="time the reference on this many rows and scale to the slice (default: all)")
    ap.add_argument("--backends", nargs="+", default=None, help="fast backends (default: all that import)")
    args = ap.parse_args()
    fast = args.backends or [b for b in available_backends() if b != "reference"]
    if not torch.cuda.is_available():
        fast = [b for b in fast if b != "triton"]
    rows = []
    for n in args.sizes:
        tensors, M = make_scene(n)
        npairs = contributing_pairs(tensors, M)
        timings: dict[str, tuple[float, float]] = {}
        if args.reference_reps > 0 and not (args.skip_reference_50k and n > 20000):
            timings["reference"] = min(fwd_bwd("reference", tensors, M, args.reference_rows)
                                       for _ in range(args.reference_reps))
        for b in fast:
            fwd_bwd(b, tensors, M)  # warm-up (JIT, caches)
            ts = sorted(fwd_bwd(b, tensors, M) for _ in range(args.reps))
            timings[b] = ts[len(ts) // 2]
        ref = timings.get("reference")
        for b, (t, cpu) in timings.items():
            rows.append({
                "gaussians": n,
                "backend": b,
                "device": device_of(b),
                "ms_fwd_bwd": round(1e3 * t, 3),
                "speedup_vs_reference": round(ref[0] / t, 1) if ref else None,
                "cpu_ms_fwd_bwd": round(1e3 * cpu, 3),
                "cpu_speedup_vs_reference": round(ref[1] / cpu, 1) if ref else None,
                "pairs_per_s": round(npairs / t),
                "contributing_pairs": npairs,
                "threads": torch.get_num_threads(),
                "reference_rows_timed": args.reference_rows if b == "reference" else None,
            })
    print(f"{'gaussians':>9} {'backend':>10} {'ms fwd+bwd':>11} {'x ref':>8} {'Mpairs/s':>9}")
    for r in rows:
        sp = "-" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.1f}"
        print(f"{r['gaussians']:>9} {r['backend']:>10} {r['ms_fwd_bwd']:>11.2f} {sp:>8} {r['pairs_per_s'] / 1e6:>9.2f}")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
