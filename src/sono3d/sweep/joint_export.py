"""Several sweep files to one reconstruction folder: the plan file, the true transforms, the outputs.

:func:`reconstruct_sweeps_to_folder` is ``sono3d sweep reconstruct SWEEP [SWEEP ...] OUT_DIR`` for
two or more sweeps: it reads the sweeps, registers and reconstructs them together
(:func:`~sono3d.sweep.joint.reconstruct_sweeps`) and writes ``gaussians.ply`` and ``volume.nii.gz``
in the first sweep's frame, ``slices_<name>.png`` per sweep and ``report.json`` (with
``registration`` per sweep). A sweep that cannot be registered is reconstructed alone into
``OUT_DIR/<name>/`` and named in a warning.

Plan file (``--plan``), JSON, per-sweep options keyed by the sweep as given on the command line, by
its file name, or by its name without extension::

    {"sweeps": {"a.seq.nrrd": {"poses": "fan", "span": 120},
                "b.seq.nrrd": {"poses": "fan", "span": 90, "fan_axis": "axial", "register": "search"}}}

Keys per sweep: ``poses`` (tracked or fan), ``span`` (degrees), ``fan_axis`` (lateral or axial),
``pivot_offset`` (mm), ``spacing`` (pixel spacing, mm, for files that store none) and ``register``
(auto, none, refine, search). Options not in the plan come from the command line, for every sweep.

True transforms (``--truth-transform``), JSON: ``{"to_first": [4x4 per sweep]}`` (each sweep's own
frame to the first's; ``sono3d simulate sweep-pair`` writes it as ``truth.json``) or, for two
sweeps, ``{"b_to_a": 4x4}``; an optional ``frame_to_world`` (4x4 per sweep) places the ``--truth``
volume, given in world coordinates, in the first sweep's frame.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.transforms import invert_rigid, is_rotation
from sono3d.io import read_sweep, read_volume, write_volume
from sono3d.io.atomic import full_suffix
from sono3d.io.lock import writer_lock
from sono3d.sweep.compound import CompoundConfig, clip_mask
from sono3d.sweep.export import reconstruct_to_folder, save_slices_png, write_report
from sono3d.sweep.gaussians import save_ply
from sono3d.sweep.initialise import sweep_bounds
from sono3d.sweep.joint import JointConfig, SweepOptions, cross_view_protocol, reconstruct_sweeps
from sono3d.sweep.reconstruct import PRESETS, ReconstructConfig
from sono3d.sweep.render import default_volume_spacing, grid_for_bounds, sample_volume
from sono3d.types import Volume

__all__ = ["PLAN_KEYS", "SweepEntry", "read_plan", "read_truth_transforms", "sweep_names",
           "reconstruct_sweeps_to_folder"]

#: Per-sweep keys of a plan file.
PLAN_KEYS = ("poses", "span", "fan_axis", "pivot_offset", "spacing", "register")


@dataclass(frozen=True)
class SweepEntry:
    """One sweep's plan: its pose and registration options and, for files without one, its pixel spacing."""

    options: SweepOptions = SweepOptions()
    spacing_mm: float | None = None


def sweep_names(paths: list[str | os.PathLike[str]]) -> list[str]:
    """Short unique names of sweep files: the file name without its extension (``a.seq.nrrd`` -> ``a``)."""
    stems = []
    for p in paths:
        name = Path(p).name
        suffix = full_suffix(name)
        stems.append(name[: len(name) - len(suffix)] if suffix and len(suffix) < len(name) else name)
    out = []
    for k, s in enumerate(stems):
        out.append(s if stems.count(s) == 1 else f"{k + 1}_{s}")
    return out


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{what} must be a number, got {value!r}")
    return float(value)


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{what} {path} is not valid JSON ({exc})") from None


def read_plan(path: str | os.PathLike[str], sweeps: list[str | os.PathLike[str]]) -> list[SweepEntry]:
    """Per-sweep options from a plan file (see the module notes), one entry per sweep in ``sweeps``.

    Raises
    ------
    InputError
        A missing or unreadable file, JSON of the wrong shape, a plan entry naming no sweep given
        (or several), an unknown key or a bad value; each message names the plan and the entry.
    """
    p = Path(path)
    data = _read_json(p, "plan file")
    if not isinstance(data, dict) or not isinstance(data.get("sweeps"), dict) or set(data) - {"sweeps"}:
        raise InputError(f'plan file {p} must be {{"sweeps": {{"<sweep>": {{...options...}}, ...}}}}')
    given = [str(s) for s in sweeps]
    keys = [(str(s), Path(s).name, n) for s, n in zip(given, sweep_names(sweeps))]
    entries = [SweepEntry() for _ in given]
    seen: set[int] = set()
    for name, opts in data["sweeps"].items():
        hits = [k for k, forms in enumerate(keys) if name in forms]
        if not hits:
            raise InputError(f"plan file {p} names sweep {name!r}, which is not among the sweeps given "
                             f"({', '.join(Path(s).name for s in given)})")
        if len(hits) > 1:
            raise InputError(f"plan file {p}: {name!r} names more than one sweep; use the path as given")
        k = hits[0]
        if k in seen:
            raise InputError(f"plan file {p} gives options for sweep {given[k]} twice")
        seen.add(k)
        if not isinstance(opts, dict):
            raise InputError(f"plan file {p}: the options of {name!r} must be an object")
        bad = sorted(set(opts) - set(PLAN_KEYS))
        if bad:
            raise InputError(f"plan file {p}: unknown option(s) {', '.join(bad)} for {name!r} "
                             f"(known: {', '.join(PLAN_KEYS)})")
        where = f"plan file {p}, sweep {name!r}:"
        try:
            spacing = None if "spacing" not in opts else _number(opts["spacing"], "spacing")
            if spacing is not None and spacing <= 0:
                raise InputError(f"spacing must be positive, got {spacing}")
            options = SweepOptions(
                poses=opts.get("poses"),
                span_deg=None if "span" not in opts else _number(opts["span"], "span"),
                fan_axis=opts.get("fan_axis"),
                pivot_offset_mm=None if "pivot_offset" not in opts else _number(opts["pivot_offset"], "pivot_offset"),
                register=opts.get("register", "auto"),
            )
            if options.fan_axis is not None and options.fan_axis not in ("lateral", "axial"):
                raise InputError(f"fan axis must be 'lateral' or 'axial', got {options.fan_axis!r}")
        except InputError as exc:
            raise InputError(f"{where} {exc}") from None
        entries[k] = SweepEntry(options, spacing)
    return entries


def _rigid(value: Any, what: str) -> np.ndarray:
    try:
        T = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} is not a 4x4 matrix") from None
    if T.shape != (4, 4) or not np.all(np.isfinite(T)) or not is_rotation(T[:3, :3], atol=1e-3) \
            or not np.allclose(T[3], [0, 0, 0, 1]):
        raise InputError(f"{what} is not a rigid 4x4 matrix")
    return T


def read_truth_transforms(path: str | os.PathLike[str], n: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """True transforms of ``n`` sweeps to the first's frame, and the first frame's ``frame_to_world`` if given.

    Raises
    ------
    InputError
        A missing file, bad JSON, no ``to_first`` (or ``b_to_a`` for two sweeps), the wrong number of
        matrices, or a matrix that is not rigid.
    """
    p = Path(path)
    data = _read_json(p, "truth transform file")
    if not isinstance(data, dict):
        raise InputError(f"truth transform file {p} must hold a JSON object with 'to_first'")
    if "to_first" in data:
        mats = data["to_first"]
    elif "b_to_a" in data and n == 2:
        mats = [np.eye(4).tolist(), data["b_to_a"]]
    else:
        raise InputError(f"truth transform file {p} has no 'to_first' list"
                         + (" (nor 'b_to_a')" if n == 2 else ""))
    if not isinstance(mats, list) or len(mats) != n:
        raise InputError(f"truth transform file {p} gives {len(mats) if isinstance(mats, list) else 'no'} "
                         f"transforms for {n} sweeps")
    out = [_rigid(m, f"truth transform {k + 1} in {p}") for k, m in enumerate(mats)]
    frame = None
    if "frame_to_world" in data:
        f = data["frame_to_world"]
        if not isinstance(f, list) or len(f) != n:
            raise InputError(f"truth transform file {p}: frame_to_world must list one 4x4 matrix per sweep")
        frame = _rigid(f[0], f"frame_to_world of the first sweep in {p}")
    return out, frame


def reconstruct_sweeps_to_folder(
    sweep_paths: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: ReconstructConfig | None = None,
    joint: JointConfig | None = None,
    plan: list[SweepEntry] | None = None,
    truth_path: str | os.PathLike[str] | None = None,
    truth_transform_path: str | os.PathLike[str] | None = None,
    plus_config: str | os.PathLike[str] | None = None,
    spacing_mm: tuple[float, float] | None = None,
    cross_view: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Read several sweeps, reconstruct them as one volume and write the outputs (see the module notes).

    Parameters
    ----------
    sweep_paths : list of path-like
        Two or more sweeps; the first sets the output's frame.
    out_dir : path-like
        Output folder (created); every file is written atomically, ``report.json`` last.
    config : ReconstructConfig, optional
        Training options and the pose options of every sweep (defaults to ``fast``).
    joint : JointConfig, optional
    plan : list of SweepEntry, optional
        Per-sweep options (:func:`read_plan`).
    truth_path : path-like, optional
        Ground-truth volume: in the first sweep's frame, or in world coordinates placed by the
        ``frame_to_world`` of ``truth_transform_path``.
    truth_transform_path : path-like, optional
        True transforms (:func:`read_truth_transforms`): the report gains each registration's error.
    plus_config : path-like, optional
        PLUS configuration applied to every sweep (calibration, clip rectangle).
    spacing_mm : (dy, dx), optional
        Pixel spacing for files that store none (a plan's ``spacing`` wins for its sweep).
    cross_view : bool
        Also reconstruct each sweep alone and score it on the other sweeps' held-out frames through
        the learned registration (the paper's cross-view protocol): ``report["cross_view"]``.

    Returns
    -------
    dict
        The report (also in ``report.json``) with ``outputs`` and ``warnings``.
    """
    with writer_lock(out_dir, "output folder"):
        paths = [Path(s) for s in sweep_paths]
        if len(paths) < 1:
            raise InputError("give at least one sweep")
        cfg = config if config is not None else PRESETS["fast"]
        entries = plan if plan is not None else [SweepEntry() for _ in paths]
        if len(entries) != len(paths):
            raise InputError(f"{len(entries)} plan entries for {len(paths)} sweeps")
        names = sweep_names(paths)
        sweeps = []
        for path, entry in zip(paths, entries):
            sp = (entry.spacing_mm, entry.spacing_mm) if entry.spacing_mm is not None else spacing_mm
            sweeps.append(read_sweep(path, plus_config=plus_config, spacing_mm=sp))
        masks: list[np.ndarray | None] = [None] * len(sweeps)
        if plus_config is not None:
            cc = CompoundConfig.from_plus(plus_config)
            masks = [clip_mask(s.shape, cc, s.sector, s.spacing_mm) for s in sweeps]
        transforms = frame = None
        if truth_transform_path is not None:
            transforms, frame = read_truth_transforms(truth_transform_path, len(paths))
        truth = None
        if truth_path is not None:
            truth = read_volume(truth_path)
            if frame is not None:  # world -> the first sweep's frame
                truth = Volume(truth.array, invert_rigid(frame) @ truth.affine, truth.meta)
        options = [e.options for e in entries]
        result = reconstruct_sweeps(sweeps, cfg, options, joint, truth=truth, truth_transforms=transforms,
                                    names=[p.name for p in paths], masks=masks, progress=progress)

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        warnings: list[str] = []
        joined = [k for k, f in enumerate(result.sweeps) if f.joined]
        boxes = [sweep_bounds(result.sweeps[k].poses, result.sweeps[k].frame_mask) for k in joined]
        lo = np.min([b[0] for b in boxes], axis=0)
        hi = np.max([b[1] for b in boxes], axis=0)
        vs = cfg.volume_spacing_mm or default_volume_spacing(lo, hi, min((s.spacing_mm for s in sweeps),
                                                                        key=lambda v: max(v)))
        affine, shape = grid_for_bounds(lo, hi, vs)
        volume = sample_volume(result.gaussians, affine, shape, backend=result.report["backend"], cutoff=cfg.cutoff)
        volume.array = np.clip(volume.array, 0.0, None).astype(np.float32)
        files: dict[str, Path] = {
            "gaussians": save_ply(out / "gaussians.ply", result.gaussians,
                                  comments=(f"joint reconstruction of {', '.join(p.name for p in paths)}",
                                            f"frame of {paths[0].name}")),
            "volume": write_volume(out / "volume.nii.gz", volume),
        }
        for k in joined:
            fit = result.sweeps[k]
            n = sweeps[k].n_frames
            held = np.zeros(n, dtype=bool)
            held[fit.holdout_index] = True
            show = np.unique(np.linspace(0, n - 1, min(12, n)).round().astype(int))
            files[f"slices_{names[k]}"] = save_slices_png(out / f"slices_{names[k]}.png", sweeps[k].frames,
                                                          fit.rendered, show, held)
        for k, fit in enumerate(result.sweeps):
            if fit.joined:
                continue
            s = fit.registration.get("search", {})
            warnings.append(f"sweeps {paths[0].name} and {paths[k].name} do not overlap: the best match has NCC "
                            f"{s.get('ncc', float('nan')):.2f} over {100 * s.get('overlap', 0.0):.0f}% of the smaller "
                            f"sweep; {paths[k].name} is reconstructed alone in {out / names[k]}")
            alone_sp = (entries[k].spacing_mm,) * 2 if entries[k].spacing_mm else spacing_mm
            single = reconstruct_to_folder(paths[k], out / names[k], options[k].config_for(cfg),
                                           plus_config=plus_config, spacing_mm=alone_sp, progress=progress)
            files[f"alone_{names[k]}"] = Path(single["outputs"]["report"])
        report = dict(result.report)
        if cross_view:
            report["cross_view"] = cross_view_protocol(result, sweeps, cfg, options, masks, progress=progress)[0]
        report["volume_grid"] = {"shape": list(shape), "spacing_mm": vs, "affine": affine.tolist()}
        report["timings"] = {**report["timings"], "export": time.perf_counter() - t0}
        report["inputs"] = [str(p) for p in paths]
        report["warnings"] = warnings
        report["outputs"] = {k: str(v) for k, v in files.items()} | {"report": str(out / "report.json")}
        write_report(out / "report.json", report)
        return report
