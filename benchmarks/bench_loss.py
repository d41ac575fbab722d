"""The training loss ``0.8 L1 + 0.2 (1 - SSIM)``, forward+backward: fused kernel against autograd.

Batches of random 256x256 frames and a random pixel mask (the cost does not depend on the mask's
values). Both versions run in this process, alternating, so the ratio is fair on a shared machine;
the table reports the median wall time.

Prints a table, then one JSON line per batch size::

    {"batch", "size", "ms_reference", "ms_fused", "speedup", "max_grad_diff"}

    .venv/bin/python benchmarks/bench_loss.py [--batches 8 32] [--size 256] [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sono3d.sweep.loss import hybrid_loss, hybrid_loss_reference


def time_fwd_bwd(fn, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Milliseconds of one forward+backward of ``fn`` and the gradient it gave."""
    xg = x.clone().requires_grad_(True)
    t = time.perf_counter()
    fn(xg, y, mask, 0.8)[0].backward()
    ms = (time.perf_counter() - t) * 1e3
    assert xg.grad is not None
    return ms, xg.grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    rows = []
    for b in args.batches:
        x = torch.rand(b, args.size, args.size, generator=g)
        y = (0.7 * x + 0.3 * torch.rand(b, args.size, args.size, generator=g)).clamp(0, 1)
        mask = (torch.rand(args.size, args.size, generator=g) > 0.3).float()
        for fn in (hybrid_loss, hybrid_loss_reference):  # warm-up (compiles the kernel)
            time_fwd_bwd(fn, x, y, mask)
        ref_ms, fused_ms = [], []
        for _ in range(args.reps):
            t, g_ref = time_fwd_bwd(hybrid_loss_reference, x, y, mask)
            ref_ms.append(t)
            t, g_fused = time_fwd_bwd(hybrid_loss, x, y, mask)
            fused_ms.append(t)
        r, f = statistics.median(ref_ms), statistics.median(fused_ms)
        rows.append({"batch": b, "size": args.size, "ms_reference": round(r, 2), "ms_fused": round(f, 2),
                     "speedup": round(r / f, 2), "max_grad_diff": float((g_ref - g_fused).abs().max())})
    print(f"{'batch':>5} {'size':>5} {'reference ms':>12} {'fused ms':>9} {'speedup':>8}")
    for row in rows:
        print(f"{row['batch']:>5} {row['size']:>5} {row['ms_reference']:>12.2f} {row['ms_fused']:>9.2f} "
              f"{row['speedup']:>8.2f}")
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
