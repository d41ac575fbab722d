"""``sono3d sweep reconstruct`` and ``sono3d sweep render``: the Gaussian sweep engine on files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from sono3d.commands.report import HTML_HELP, write_page
from sono3d.errors import InputError
from sono3d.io.lock import writer_lock
from sono3d.sweep.export import reconstruct_to_folder, render_to_sweep
from sono3d.sweep.joint import JointConfig
from sono3d.sweep.joint_export import read_plan, reconstruct_sweeps_to_folder
from sono3d.sweep.reconstruct import ReconstructConfig


def _spacing(value: Optional[float]) -> Optional[tuple[float, float]]:
    if value is None:
        return None
    if not value > 0:
        raise InputError(f"--spacing must be a positive number of mm, got {value}")
    return (float(value), float(value))


def span_option(value: Optional[str], poses: Optional[str]) -> tuple[Optional[float], Optional[str], Optional[str]]:
    """``--span``: degrees, or ``auto`` (estimated from the frames, on the fan prior); returns the
    degrees, the mode (``"auto"`` or None) and the pose mode it implies."""
    if value is None:
        return None, None, poses
    if value.strip().lower() == "auto":
        if poses not in (None, "fan"):
            raise InputError(f"--span auto estimates a fan: use it with --poses fan, not --poses {poses}")
        return None, "auto", "fan"
    try:
        deg = float(value)
    except ValueError:
        raise InputError(f"--span must be a number of degrees or 'auto', got {value!r}") from None
    return deg, None, poses


def reconstruct(
    paths: List[Path] = typer.Argument(..., metavar="SWEEP [SWEEP ...] OUT_DIR",
                                       help="Sweep file(s) (.seq.nrrd, .igs.mha, DICOM, video, image folder), then "
                                            "the output folder: gaussians.ply, volume.nii.gz, slices PNG, report.json."),
    preset: str = typer.Option("auto", "--preset", help="Configuration preset: auto (reads the sweep: fast for "
                               "dense sweeps, the frame-seeded blended model for sparse ones; several sweeps: "
                               "fast), fast, paper, quick or small."),
    poses: Optional[str] = typer.Option(None, "--poses", help="tracked (from the file) or fan (sensorless prior)."),
    span: Optional[str] = typer.Option(None, "--span", help="Fan prior: total sweep angle in degrees (default 120), "
                                       "or 'auto' to estimate it (and the pivot offset) from the frames."),
    fan_axis: Optional[str] = typer.Option(None, "--fan-axis", help="Fan prior: lateral (tilt) or axial (spin)."),
    pivot_offset: Optional[float] = typer.Option(None, "--pivot-offset",
                                                 help="Fan prior: pivot distance above the probe face, mm."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Pixel spacing in mm when the file has none."),
    gaussians_per_slice: Optional[int] = typer.Option(None, "--gaussians-per-slice",
                                                      help="Initial Gaussians per slice."),
    init: Optional[str] = typer.Option(None, "--init", help="on-slice or uniform initialisation."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Frames per optimisation step."),
    holdout: Optional[int] = typer.Option(None, "--holdout", help="Hold out every k-th frame (0: none)."),
    density_control: Optional[bool] = typer.Option(None, "--density-control/--no-density-control",
                                                   help="Prune and reinsert inactive Gaussians."),
    refine_poses: Optional[bool] = typer.Option(None, "--refine-poses/--no-refine-poses",
                                                help="Learn a smooth per-frame pose correction."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Rasterizer (auto: the fastest available)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Ground-truth volume for volume metrics."),
    plus_config: Optional[Path] = typer.Option(None, "--plus-config", help="PLUS configuration XML."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    html: bool = typer.Option(True, "--html/--no-html", help=HTML_HELP),
    # ---- several sweeps (issue 17): one volume, sweep-to-sweep registration
    plan: Optional[Path] = typer.Option(None, "--plan", help="JSON plan file of per-sweep options (poses, span, "
                                        "fan_axis, pivot_offset, spacing, register); see docs/sweep.md."),
    register: bool = typer.Option(False, "--register", help="Several sweeps: learn a transform for tracked sweeps "
                                  "in one tracker frame too (from the identity)."),
    truth_transform: Optional[Path] = typer.Option(None, "--truth-transform", help="Several sweeps: JSON of the "
                                                   "true transforms to the first sweep (truth.json of "
                                                   "'simulate sweep-pair'): the report gains the errors."),
    cross_view: bool = typer.Option(False, "--cross-view", help="Several sweeps: also train on each sweep alone and "
                                    "score it on the others' held-out frames (the paper's cross-view protocol)."),
) -> None:
    """Reconstruct a 3D volume from one sweep, or from several registered to the first, with 3D Gaussians."""
    if len(paths) < 2:
        raise InputError("give one or more sweeps and then the output folder: SWEEP [SWEEP ...] OUT_DIR")
    *sweeps, out_dir = paths
    span_deg, span_mode, poses = span_option(span, poses)
    if span_mode == "auto" and len(sweeps) > 1:
        raise InputError("--span auto estimates one sweep's fan; for several sweeps give the span in degrees "
                         "(per sweep in a --plan file)")
    config = ReconstructConfig.preset(
        preset, poses=poses, span_deg=span_deg, fan_axis=fan_axis, pivot_offset_mm=pivot_offset,
        gaussians_per_slice=gaussians_per_slice, init=init, epochs=epochs, batch=batch, holdout=holdout,
        density_control=density_control, refine_poses=refine_poses, backend=backend, device=device, seed=seed,
    )
    entries = read_plan(plan, sweeps) if plan is not None else None
    if len(sweeps) == 1:
        for name, given in (("--register", register), ("--truth-transform", truth_transform),
                            ("--cross-view", cross_view)):
            if given:
                raise InputError(f"{name} needs two or more sweeps")
    with writer_lock(out_dir, "output folder"):  # the page too
        if len(sweeps) == 1:
            sp = _spacing(spacing)
            if entries is not None:  # a plan for one sweep: its options
                config = entries[0].options.config_for(config)
                sp = _spacing(entries[0].spacing_mm) if entries[0].spacing_mm is not None else sp
            report = reconstruct_to_folder(sweeps[0], out_dir, config, truth_path=truth, plus_config=plus_config,
                                           spacing_mm=sp, progress=not quiet, span=span_mode)
        else:
            report = reconstruct_sweeps_to_folder(sweeps, out_dir, config, JointConfig(register_tracked=register),
                                                  plan=entries, truth_path=truth,
                                                  truth_transform_path=truth_transform, plus_config=plus_config,
                                                  spacing_mm=_spacing(spacing), cross_view=cross_view,
                                                  progress=not quiet)
        page = write_page(out_dir, truth=truth) if html else None
    if len(sweeps) > 1:
        _echo_joint(report)
    tr, ho = report["train"], report["holdout"]
    typer.echo(f"train ({tr['frames']} frames): {_fmt(tr)}")
    if ho["frames"]:
        typer.echo(f"held out ({ho['frames']} frames): {_fmt(ho)}")
    if "volume" in report:
        v = report["volume"]
        typer.echo(f"volume: psnr={v['psnr']:.4g} ncc={v['ncc']:.4g} dice={v['dice']:.4g}")
    if "span_estimate" in report:
        est = report["span_estimate"]
        typer.echo(f"span estimated {est['span_deg']:.1f} deg, pivot offset {est['pivot_offset_mm']:.1f} mm")
    typer.echo(f"{report['gaussians']} Gaussians, {report['epochs']} epochs, {report['seconds']:.1f} s "
               f"({report['backend']}); wrote {out_dir}")
    if page is not None:
        typer.echo(f"report: {page}")


def _fmt(m: dict) -> str:
    return " ".join(f"{k}={m[k]:.4g}" if m.get(k) is not None else f"{k}=n/a" for k in ("l1", "ssim", "psnr", "ncc"))


def _echo_joint(report: dict) -> None:
    """Per-sweep lines of a joint reconstruction: registration (and its error) and held-out scores."""
    for entry, reg in zip(report["sweeps"], report["registration"]):
        line = f"{entry['sweep']}: {reg['status']}"
        if reg["status"] == "registered":
            t = reg["translation_mm"]
            line += (f" (rotation {reg['rotation_deg']:.1f} deg, translation ({t[0]:.1f}, {t[1]:.1f}, {t[2]:.1f}) mm,"
                     f" NCC {reg['search']['ncc']:.3f})")
        if "error" in reg:
            line += f"; error {reg['error']['rotation_deg']:.2f} deg, {reg['error']['translation_mm']:.2f} mm"
        if "holdout" in entry and entry["holdout"]["frames"]:
            line += f"; held out: {_fmt(entry['holdout'])}"
        typer.echo(line)
    for x in report.get("cross_view", []):
        typer.echo(f"cross-view {x['trained_on']} -> {x['scored_on']} ({x['frames']} held-out frames): "
                   f"single ssim={x['single']['ssim']:.4g}, joint ssim={x['joint'].get('ssim', float('nan')):.4g}")
    for w in report.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)


def render(
    gaussians: Path = typer.Argument(..., help="Gaussians .ply written by 'sweep reconstruct'."),
    sweep: Path = typer.Argument(..., help="Sweep whose planes to render on."),
    out: Path = typer.Argument(..., help="Output sweep file (.seq.nrrd or .igs.mha)."),
    poses: str = typer.Option("tracked", "--poses", help="tracked or fan (as used to reconstruct)."),
    span: float = typer.Option(120.0, "--span", help="Fan prior: total sweep angle in degrees."),
    fan_axis: str = typer.Option("lateral", "--fan-axis", help="Fan prior: lateral or axial."),
    pivot_offset: float = typer.Option(0.0, "--pivot-offset", help="Fan prior: pivot offset, mm."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Pixel spacing in mm when the file has none."),
    backend: str = typer.Option("auto", "--backend", help="Rasterizer."),
    plus_config: Optional[Path] = typer.Option(None, "--plus-config", help="PLUS configuration XML."),
) -> None:
    """Render Gaussians on the planes of a sweep into a new sweep file."""
    with writer_lock(out, "output sweep"):
        path = render_to_sweep(gaussians, sweep, out, poses=poses, span_deg=span, fan_axis=fan_axis,
                               pivot_offset_mm=pivot_offset, backend=backend, plus_config=plus_config,
                               spacing_mm=_spacing(spacing))
    typer.echo(f"wrote {path}")


def add_commands(sweep_app: typer.Typer) -> None:
    sweep_app.command("reconstruct")(reconstruct)
    sweep_app.command("render")(render)
