"""Two sweeps, one volume: joint reconstruction against each sweep alone, over several seeds (issue 17).

For every seed: a uterus phantom (``build_uterus(seed)``, 1 mm voxels, label appearance), a sweep
pair (:func:`sono3d.simulate.sweep_pair.simulate_sweep_pair`: a sagittal and a transversal fan of
``--frames`` frames over -60..+60 degrees, b displaced by up to ``--offset-mm`` and ``--offset-deg``,
each in its own frame), then, all sensorless (``--poses fan --span 120``, the ``--preset`` preset,
every 5th frame held out):

* each sweep reconstructed alone (its CPU seconds, held-out SSIM, volume Dice);
* both reconstructed together (:func:`sono3d.sweep.joint.reconstruct_sweeps`): CPU seconds,
  registration error against the true ``b_to_a`` (rotation degrees, translation mm at b's centre),
  held-out SSIM on each sweep, volume Dice;
* the cross-view protocol (the paper's section 5.3.2): each single model on the other sweep's
  held-out frames placed by the learned registration, beside the joint model on the same frames;
* with ``--tracked-seeds K`` (first K seeds): the two sweeps in one tracker frame (their true world
  poses) reconstructed with ``register_tracked`` (``--register``): the transform's distance from
  the identity.

Dice: ``value > 0.25`` in the model and in the phantom's label volume, on the phantom's 1 mm grid,
over the union of the two sweeps' swept regions (the same voxels for all three models; the truth
is placed in each model's frame by its true ``frame_to_world``). CPU ratio: the joint run's CPU
seconds over the mean of the two single runs' (same process, after a warm-up run; CPU time is less
sensitive than wall time to a busy shared machine).

Prints a table per seed, a summary, then ONE JSON line. ``--picture PATH`` draws the first seed's
three volumes against the truth (``sono3d.viz.volumes``).

    .venv/bin/python benchmarks/bench_joint.py [--seeds 10] [--size 128] [--frames 100] [--preset fast]
        [--offset-mm 20] [--offset-deg 30] [--exact-offset] [--tracked-seeds 3] [--tracked-only]
        [--picture joint.png] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.geometry.transforms import invert_rigid
from sono3d.phantoms.uterus import build_uterus
from sono3d.simulate.sweep_pair import SweepPairConfig, simulate_sweep_pair
from sono3d.sweep.evaluate import swept_region, volume_metrics
from sono3d.sweep.joint import JointConfig, cross_view_protocol, reconstruct_sweeps, score_frames
from sono3d.sweep.reconstruct import ReconstructConfig, _sample_in_region, reconstruct_sweep
from sono3d.sweep.register import sweep_centre, transform_error
from sono3d.types import Sweep, Volume
from sono3d.viz.volumes import volume_slices_figure


def _cpu() -> float:
    return time.process_time()


def _model_on_truth(model: Any, truth: Volume, frame_to_world: np.ndarray, region: np.ndarray,
                    backend: str) -> np.ndarray:
    """The model (in a sweep's own frame) sampled on the truth's world grid, zero outside ``region``."""
    placed = Volume(truth.array, invert_rigid(frame_to_world) @ truth.affine)
    return _sample_in_region(model, placed, region, backend, 3.0)


def run_seed(seed: int, args: argparse.Namespace, picture: Path | None) -> dict[str, Any]:
    pair = _pair(seed, args)
    rec = pair.record
    a, b = pair.a, pair.b
    T_true = np.asarray(rec["b_to_a"])
    F = [np.asarray(rec["sweeps"][k]["frame_to_world"]) for k in ("a", "b")]
    world = [np.asarray(rec["sweeps"][k]["poses_world"]) for k in ("a", "b")]
    cfg = ReconstructConfig.preset(args.preset, poses="fan", span_deg=120.0, seed=seed, epochs=args.epochs)
    truth = pair.truth
    from_mask = None
    singles = {}
    out: dict[str, Any] = {"seed": seed, "offset_deg": rec["offset"]["rotation_deg"],
                           "offset_mm": rec["offset"]["translation_mm"]}
    for k, (name, sw) in enumerate((("a", a), ("b", b))):
        t = _cpu()
        r = reconstruct_sweep(sw, cfg, progress=False)
        out[f"cpu_{name}"] = _cpu() - t
        out[f"holdout_ssim_{name}"] = r.report["holdout"]["ssim"]
        singles[k] = r
        from_mask = r.frame_mask
    assert from_mask is not None
    region = swept_region(truth.affine, truth.shape, world[0], from_mask) | \
        swept_region(truth.affine, truth.shape, world[1], from_mask)
    backend = singles[0].report["backend"]
    vols = {}
    for k, name in enumerate(("a", "b")):
        vols[name] = _model_on_truth(singles[k].gaussians, truth, F[k], region, backend)
        out[f"dice_{name}"] = volume_metrics(vols[name], truth.array, region, 0.25)["dice"]

    t = _cpu()
    joint = reconstruct_sweeps([a, b], cfg, joint=JointConfig(), truth_transforms=[np.eye(4), T_true],
                               names=["a", "b"], progress=False)
    out["cpu_joint"] = _cpu() - t
    out["cpu_ratio"] = out["cpu_joint"] / (0.5 * (out["cpu_a"] + out["cpu_b"]))
    reg = joint.report["registration"][1]
    out["status"] = reg["status"]
    out["search_ncc"] = reg["search"]["ncc"]
    centre_b = sweep_centre(joint.sweeps[1].prior_poses, joint.sweeps[1].frame_mask)
    searched = transform_error(np.asarray(reg["search"]["transform"]), T_true, centre_b)
    out["search_rot_err_deg"], out["search_trans_err_mm"] = searched["rotation_deg"], searched["translation_mm"]
    out["rot_err_deg"] = reg["error"]["rotation_deg"]
    out["trans_err_mm"] = reg["error"]["translation_mm"]
    out["seconds_register"] = joint.timings["register"]
    for k, name in enumerate(("a", "b")):
        out[f"joint_holdout_ssim_{name}"] = joint.report["sweeps"][k]["holdout"]["ssim"]
    vols["joint"] = _model_on_truth(joint.gaussians, truth, F[0], region, backend)
    out["dice_joint"] = volume_metrics(vols["joint"], truth.array, region, 0.25)["dice"]
    cross, _ = cross_view_protocol(joint, [a, b], cfg, singles=singles)
    for x in cross:
        key = f"{x['trained_on']}_to_{x['scored_on']}"
        out[f"cross_{key}_ssim"] = x["single"]["ssim"]
        out[f"cross_{key}_joint_ssim"] = x["joint"]["ssim"]
    # the same protocol through the true transform (what a perfect registration would give)
    Ts = {0: np.eye(4), 1: T_true}
    for i, j in ((0, 1), (1, 0)):
        hold = joint.sweeps[j].holdout_index
        poses = invert_rigid(Ts[i])[None] @ Ts[j][None] @ joint.sweeps[j].prior_poses[hold]
        sw = (a, b)[j]
        x = singles[i].gaussians
        out[f"cross_{'ab'[i]}_to_{'ab'[j]}_true_ssim"] = score_frames(x, sw.frames[hold], poses,
                                                                      joint.sweeps[j].frame_mask, backend)["ssim"]

    if seed < args.tracked_seeds:
        out.update(tracked_check(seed, args, pair))

    if picture is not None:
        centre = tuple(int(v) for v in np.round(np.mean(np.argwhere(truth.array > 0.25), axis=0)))
        volume_slices_figure([("truth (labels)", truth.array), (f"sagittal alone (Dice {out['dice_a']:.3f})", vols["a"]),
                              (f"transversal alone (Dice {out['dice_b']:.3f})", vols["b"]),
                              (f"joint (Dice {out['dice_joint']:.3f})", vols["joint"])],
                             centre, picture, outline=truth.array, region=region)
    return out


def _pair(seed: int, args: argparse.Namespace) -> Any:
    phantom = build_uterus(seed=seed, mesh=False, spacing_mm=1.0)
    return simulate_sweep_pair(phantom, SweepPairConfig(frames=args.frames, size_px=args.size,
                                                        offset_mm=args.offset_mm, offset_deg=args.offset_deg,
                                                        exact_offset=args.exact_offset, seed=seed))


def tracked_check(seed: int, args: argparse.Namespace, pair: Any = None) -> dict[str, Any]:
    """The pair with its true world poses (one tracker frame), reconstructed with ``--register``:
    how far the learned transform ends from the identity (the truth)."""
    pair = pair if pair is not None else _pair(seed, args)
    world = [np.asarray(pair.record["sweeps"][k]["poses_world"]) for k in ("a", "b")]
    tracked = [Sweep(s.frames, P, s.spacing_mm, s.sector) for s, P in ((pair.a, world[0]), (pair.b, world[1]))]
    tcfg = ReconstructConfig.preset(args.preset, poses="tracked", seed=seed, epochs=args.epochs)
    tj = reconstruct_sweeps(tracked, tcfg, joint=JointConfig(register_tracked=True),
                            truth_transforms=[np.eye(4), np.eye(4)], progress=False)
    e = tj.report["registration"][1]["error"]
    return {"seed": seed, "tracked_rot_deg": e["rotation_deg"], "tracked_trans_mm": e["translation_mm"]}


COLUMNS = [("seed", "{:d}"), ("offset_deg", "{:.1f}"), ("offset_mm", "{:.1f}"), ("rot_err_deg", "{:.2f}"),
           ("trans_err_mm", "{:.2f}"), ("dice_a", "{:.4f}"), ("dice_b", "{:.4f}"), ("dice_joint", "{:.4f}"),
           ("cross_a_to_b_ssim", "{:.4f}"), ("joint_holdout_ssim_b", "{:.4f}"), ("cross_b_to_a_ssim", "{:.4f}"),
           ("joint_holdout_ssim_a", "{:.4f}"), ("cpu_ratio", "{:.2f}")]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    rot = [r["rot_err_deg"] for r in rows]
    tr = [r["trans_err_mm"] for r in rows]
    s: dict[str, Any] = {
        "search_rot_err_deg_median": _pct([r["search_rot_err_deg"] for r in rows], 50),
        "search_trans_err_mm_median": _pct([r["search_trans_err_mm"] for r in rows], 50),
        "seeds": len(rows),
        "rot_err_deg_median": _pct(rot, 50), "rot_err_deg_p90": _pct(rot, 90), "rot_err_deg_max": max(rot),
        "trans_err_mm_median": _pct(tr, 50), "trans_err_mm_p90": _pct(tr, 90), "trans_err_mm_max": max(tr),
        "dice_joint_above_both": sum(r["dice_joint"] > max(r["dice_a"], r["dice_b"]) for r in rows),
        "dice_a_median": _pct([r["dice_a"] for r in rows], 50),
        "dice_b_median": _pct([r["dice_b"] for r in rows], 50),
        "dice_joint_median": _pct([r["dice_joint"] for r in rows], 50),
        "cpu_ratio_median": _pct([r["cpu_ratio"] for r in rows], 50),
        "cpu_ratio_max": max(r["cpu_ratio"] for r in rows),
    }
    for i, j in (("a", "b"), ("b", "a")):
        s[f"cross_{i}_to_{j}_ssim_median"] = _pct([r[f"cross_{i}_to_{j}_ssim"] for r in rows], 50)
        s[f"cross_{i}_to_{j}_true_ssim_median"] = _pct([r[f"cross_{i}_to_{j}_true_ssim"] for r in rows], 50)
        s[f"joint_on_{j}_ssim_median"] = _pct([r[f"joint_holdout_ssim_{j}"] for r in rows], 50)
        s[f"joint_above_cross_{i}_to_{j}"] = sum(r[f"joint_holdout_ssim_{j}"] > r[f"cross_{i}_to_{j}_ssim"]
                                                 for r in rows)
    tracked = [r for r in rows if "tracked_rot_deg" in r]
    if tracked:
        s["tracked_rot_deg_max"] = max(r["tracked_rot_deg"] for r in tracked)
        s["tracked_trans_mm_max"] = max(r["tracked_trans_mm"] for r in tracked)
        s["tracked_seeds"] = len(tracked)
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=128, help="frame side in pixels (the paper: 256)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--offset-mm", type=float, default=20.0)
    ap.add_argument("--offset-deg", type=float, default=30.0)
    ap.add_argument("--exact-offset", action="store_true", help="displace b by exactly the bounds")
    ap.add_argument("--tracked-seeds", type=int, default=3, help="seeds that also run the tracked --register check")
    ap.add_argument("--tracked-only", action="store_true", help="only the tracked --register check, every seed")
    ap.add_argument("--picture", type=Path, default=None, help="PNG of the first seed's volumes")
    ap.add_argument("--out", type=Path, default=None, help="JSON file of every seed's row (written after each seed)")
    args = ap.parse_args()

    # warm-up: imports, numba compilation, torch's optimiser set-up
    phantom = build_uterus(seed=0, mesh=False, spacing_mm=2.0)
    warm = simulate_sweep_pair(phantom, SweepPairConfig(frames=8, size_px=32))
    reconstruct_sweeps([warm.a, warm.b], ReconstructConfig.preset("small", poses="fan", epochs=1), progress=False)

    if args.tracked_only:
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows.append(tracked_check(seed, args))
            print(f"seed {seed}: {rows[-1]['tracked_rot_deg']:.3f} deg, {rows[-1]['tracked_trans_mm']:.3f} mm "
                  "from the identity", flush=True)
        print(json.dumps({"size": args.size, "frames": args.frames, "preset": args.preset, "seeds": len(rows),
                          "tracked_rot_deg_max": round(max(r["tracked_rot_deg"] for r in rows), 4),
                          "tracked_trans_mm_max": round(max(r["tracked_trans_mm"] for r in rows), 4)}))
        return
    rows = []
    print(" ".join(f"{name:>{max(len(name), 7)}}" for name, _ in COLUMNS), flush=True)
    for n, seed in enumerate(range(args.first_seed, args.first_seed + args.seeds)):
        row = run_seed(seed, args, args.picture if n == 0 else None)
        rows.append(row)
        print(" ".join(f"{fmt.format(row[name]):>{max(len(name), 7)}}" for name, fmt in COLUMNS), flush=True)
        if args.out is not None:
            args.out.write_text(json.dumps(rows, indent=1))
    s = summary(rows)
    for key, value in s.items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    print(json.dumps({"size": args.size, "frames": args.frames, "preset": args.preset,
                      **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}}))


if __name__ == "__main__":
    main()
