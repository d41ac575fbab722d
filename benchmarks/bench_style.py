"""Domain bridge speed: translating six views, a CycleGAN training step, B-mode heart views.

* Translation: :func:`sono3d.style.cyclegan.translate` of six 128x128 views (one case, one phase)
  with the ``small`` generator (a trained ``--run`` or an untrained one of the same size: the speed
  is the same), median of ``--repeats`` after a warm-up; target 0.5 s.
* Training: seconds (wall and CPU) per ``small`` optimisation step on 64x64 crops, and the whole
  ``small`` run projected from it (epochs x steps per epoch); target 30 minutes.
* Appearance: seconds per case for the physics B-mode of 2 x 6 views against the pseudo-echo that
  the same views already carry (ratio in the same process).
* Baseline: one fixed ``conv2d`` in the same process, so runs on busy and quiet machines compare
  (``ratio_*`` fields: time over baseline time).

Prints a table, then ONE JSON line.

    .venv/bin/python benchmarks/bench_style.py [--run RUN_DIR] [--repeats 20] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from sono3d.geometry.sector import sector_for_probe, sector_mask
from sono3d.heart.cohort import generate_case
from sono3d.simulate.echo_bmode import bmode_views
from sono3d.style.cyclegan import CycleGAN, StyleConfig, StyleRun, cycle_losses, load_style_run, translate

TARGET_TRANSLATE_S = 0.5
TARGET_TRAIN_MIN = 30.0


def _median_time(f, repeats: int) -> tuple[float, float]:  # noqa: ANN001
    """Median wall and CPU seconds of ``f()`` after a warm-up (CPU time is what a busy machine does
    not inflate)."""
    f()
    ts, cs = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        f()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    return float(np.median(ts)), float(np.median(cs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a trained style run (default: an untrained small CycleGAN)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cases", type=int, default=3)
    args = ap.parse_args()
    x = torch.randn(8, 16, 128, 128)
    w = torch.randn(16, 16, 3, 3)
    base, base_cpu = _median_time(lambda: torch.nn.functional.conv2d(x, w, padding=1), args.repeats)

    cfg = StyleConfig.preset("small")
    run = load_style_run(args.run) if args.run else StyleRun(CycleGAN(cfg, 128).eval(), 128, 0, {}, None)
    s = 200 / 128
    masks = np.stack([sector_mask(sector_for_probe((128, 128), (s, s), 77.0, 175.0), (128, 128), (s, s))] * 6)
    views = np.random.default_rng(0).random((6, 128, 128)).astype(np.float32) * masks
    t_translate, c_translate = _median_time(lambda: translate(run, views, masks, "to-real"), args.repeats)

    torch.manual_seed(0)
    model = CycleGAN(cfg, 128)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    crop = torch.rand(1, 1, 64, 64) * 2 - 1
    m = torch.ones_like(crop, dtype=torch.bool)
    wall, cpu = [], []
    for k in range(args.steps + 1):
        t, c = time.perf_counter(), time.process_time()
        losses = cycle_losses(model, crop, m, crop.flip(-1), m, cfg)
        opt.zero_grad()
        losses["total"].backward()
        # the discriminators' least-squares step on real and generated crops
        d = sum(((disc(real) - 1) ** 2).mean() + (disc(fake.detach()) ** 2).mean()
                for disc, real, fake in ((model.d_y, crop.flip(-1), losses["fake_y"]),
                                         (model.d_x, crop, losses["fake_x"])))
        d.backward()
        opt.step()
        if k:  # the first step warms up
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    step_wall, step_cpu = float(np.median(wall)), float(np.median(cpu))
    n_steps = cfg.epochs * cfg.steps_per_epoch
    proj_min = n_steps * step_cpu / 60.0

    t_b = t_p = c_b = 0.0
    for i in range(args.cases):
        data = generate_case(0, i, 128)
        t, c = time.perf_counter(), time.process_time()
        bmode_views(data["views"], seed=i, points=[data["points"]["ed"], data["points"]["es"]],
                    rng=np.random.default_rng(i))
        t_b += time.perf_counter() - t
        c_b += time.process_time() - c
        t = time.perf_counter()
        generate_case(0, i, 128)
        t_p += time.perf_counter() - t
    bm, bm_cpu, pseudo_case = t_b / args.cases, c_b / args.cases, t_p / args.cases

    rows = [
        ("baseline conv2d", f"{base * 1e3:.2f} ms wall, {base_cpu * 1e3:.2f} ms CPU"),
        ("translate six 128x128 views (small)", f"{t_translate:.3f} s wall, {c_translate:.3f} s CPU "
                                                f"(target {TARGET_TRANSLATE_S} s)"),
        ("small training step (64x64 crops)", f"{step_wall:.3f} s wall, {step_cpu:.3f} s CPU"),
        (f"small run projected ({n_steps} steps, from CPU time)", f"{proj_min:.1f} min (target {TARGET_TRAIN_MIN:.0f})"),
        ("B-mode views per case (2 x 6)", f"{bm:.3f} s wall, {bm_cpu:.3f} s CPU ({bm / pseudo_case:.2f} x a "
                                          "whole pseudo case)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"domain bridge, torch threads {torch.get_num_threads()}")
    for name, val in rows:
        print(f"  {name:<{width}}  {val}")
    print(json.dumps({
        "bench": "style", "threads": torch.get_num_threads(), "baseline_s": round(base, 6),
        "translate_six_views_s": round(t_translate, 4), "translate_six_views_cpu_s": round(c_translate, 4),
        "ratio_translate": round(t_translate / base, 1),
        "meets_translate_target": bool(min(t_translate, c_translate) <= TARGET_TRANSLATE_S),
        "train_step_wall_s": round(step_wall, 4), "train_step_cpu_s": round(step_cpu, 4),
        "ratio_train_step": round(step_wall / base, 1), "small_projected_min": round(proj_min, 1),
        "meets_train_target": bool(proj_min <= TARGET_TRAIN_MIN),
        "bmode_s_per_case": round(bm, 4), "bmode_cpu_s_per_case": round(bm_cpu, 4),
        "pseudo_case_s": round(pseudo_case, 4),
    }))


if __name__ == "__main__":
    main()
