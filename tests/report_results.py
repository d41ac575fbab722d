"""Small result folders of every kind the report recognises, written in the verbs' file formats.

They are made directly (not by running the verbs) so that the report and browser tests stay fast;
``tests/test_report_cli.py`` checks the verbs' own folders end to end.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from sono3d.io import write_volume
from sono3d.phantoms.heart import heart_mesh, heart_phases, sample_shape
from sono3d.sweep.gaussians import Gaussians, save_ply
from sono3d.types import Volume


def ellipsoid_volume(n: int = 40, spacing: float = 1.0) -> Volume:
    """A bright ellipsoid shell in a dark cube, centred at the origin (mm)."""
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = -(n - 1) * spacing / 2
    c = (np.arange(n) - (n - 1) / 2) * spacing
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    r = np.sqrt((x / (0.35 * n)) ** 2 + (y / (0.25 * n)) ** 2 + (z / (0.3 * n)) ** 2)
    arr = np.where(r < 0.8, 0.5, np.where(r < 1.0, 1.0, 0.0)).astype(np.float32)
    return Volume(arr, aff)


def _png(path: Path, seed: int = 0) -> Path:
    from PIL import Image

    img = (np.random.default_rng(seed).random((40, 90)) * 255).astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


def _gaussians(path: Path, n: int = 300, seed: int = 0) -> Path:
    import torch

    rng = np.random.default_rng(seed)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    g = Gaussians(means=t(rng.normal(0, 8, (n, 3))), log_scales=t(np.zeros((n, 3))),
                  quats=t(np.tile([1.0, 0, 0, 0], (n, 1))), opacity_logits=t(rng.normal(0, 1, n)),
                  intensities=t(rng.random(n)))
    return save_ply(path, g)


def _metrics(seed: float) -> dict:
    return {"l1": 0.01 + seed, "l2": 0.001, "ssim": 0.9 - seed, "psnr": 30.0, "ncc": 0.8, "psnr_pooled": 27.0,
            "frames": 10}


def sweep_result(folder: Path, demo: bool = False, n: int = 40) -> Path:
    """A ``sweep reconstruct`` folder (``demo``: with the compounding baseline and the truth)."""
    folder.mkdir(parents=True, exist_ok=True)
    vol = ellipsoid_volume(n)
    write_volume(folder / "volume.nii.gz", vol)
    _gaussians(folder / "gaussians.ply")
    _png(folder / "slices.png")
    rep = {"train": _metrics(0.0), "holdout": _metrics(0.01), "seconds": 3.0, "gaussians": 300, "epochs": 5,
           "backend": "numba", "poses": "tracked", "timings": {"setup": 0.5, "train": 2.0, "volume": 0.5, "total": 3.0},
           "volume_grid": {"shape": list(vol.array.shape), "spacing_mm": 1.0, "affine": vol.affine.tolist()},
           "sweep": {"path": "sweep.seq.nrrd", "frames": 50, "shape": [64, 64], "spacing_mm": [1.0, 1.0]},
           "config": {"preset": "fast", "dice_threshold": 0.25}}
    if demo:
        truth = ellipsoid_volume(n)
        truth.array[truth.array > 0] = 1.0
        write_volume(folder / "truth.nii.gz", truth)
        rep["volume"] = {"psnr": 20.0, "ncc": 0.9, "dice": 0.95, "threshold": 0.25}
        rep["baseline"] = {**_metrics(0.02), "coverage": 1.0}
    (folder / "report.json").write_text(json.dumps(rep))
    return folder


def compare_result(folder: Path) -> Path:
    """A ``sweep compare`` folder as described for that verb: report.json and compare.png (+ the volume)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = [{"frame": 2 + 5 * k, "gaussians": {"ssim": 0.9 + 0.01 * k, "l1": 0.01},
               "compounding": {"ssim": 0.85 + 0.01 * k, "l1": 0.02}} for k in range(6)]
    rep = {"gaussians": _metrics(0.0), "compounding": _metrics(0.05), "holdout": [f["frame"] for f in frames],
           "per_frame": frames}
    (folder / "report.json").write_text(json.dumps(rep))
    _png(folder / "compare.png", 1)
    write_volume(folder / "volume.nii.gz", ellipsoid_volume(32))
    return folder


def heart_predict_result(folder: Path, input_check: dict | None = None) -> tuple[Path, Path]:
    """A ``heart predict`` folder (ED and ES meshes of a generated heart) and a views file beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    phases = heart_phases(sample_shape(np.random.default_rng(3)))
    for name, ph in phases.items():
        heart_mesh(ph.points).save(str(folder / f"heart_{name}.vtp"), binary=True)
    edv, esv = phases["ed"].lv_volume_mm3 / 1000, phases["es"].lv_volume_mm3 / 1000
    rep = {"lv_edv_ml": edv, "lv_esv_ml": esv, "ef": 100 * (edv - esv) / edv, "frame": "world", "seconds": 0.1,
           "files": ["heart_ed.vtp", "heart_es.vtp"]}
    if input_check is not None:
        rep["input_check"] = input_check
    (folder / "report.json").write_text(json.dumps(rep))
    views = folder.parent / f"{folder.name}_views.npz"
    yy, xx = np.mgrid[:48, :48]
    ring = [np.exp(-((np.hypot(yy - 24, xx - 24) - 8 - v) ** 2) / 6) for v in range(6)]
    echo = np.stack([np.stack(ring), 0.8 * np.stack(ring)]).astype(np.float32)
    np.savez(views, echo=echo, view_names=np.array(["a4c", "a2c", "a3c", "sax_basal", "sax_mid", "sax_apical"]))
    return folder, views


def heart_evaluate_result(folder: Path, n: int = 8) -> Path:
    """A ``heart evaluate`` folder: report.json and cases.csv of ``n`` cases."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        ef = 40 + 25 * rng.random()
        rows.append({"id": f"{k:05d}", "iou_ed": 0.8 + 0.1 * rng.random(), "iou_es": 0.75 + 0.1 * rng.random(),
                     "baseline_iou_ed": 0.7 + 0.1 * rng.random(), "baseline_iou_es": 0.65 + 0.1 * rng.random(),
                     "ef_true": ef, "ef_s2mnet": ef + rng.normal(0, 4), "ef_baseline": ef + rng.normal(-5, 8)})
    with (folder / "cases.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    rep = {"split": "test", "n_cases": n, "resolution": 128,
           "iou128": {"median": 0.85, "mean": 0.85, "min": 0.8, "max": 0.9}, "vertex_mse": 5.0, "chamfer_mm": 2.0,
           "hausdorff_mm": 8.0, "ef_mae": 3.0, "ef_bias": 0.5, "ef_loa": [-7.0, 8.0],
           "ef_pearson": {"r": 0.9, "ci95": [0.5, 0.98], "p": 0.01},
           "baseline": {"iou128": {"median": 0.75}, "ef_mae": 8.0, "chamfer_mm": 3.0}}
    (folder / "report.json").write_text(json.dumps(rep))
    return folder
