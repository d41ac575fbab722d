"""``sono3d heart train | predict | evaluate``: S2MNet and the voxel baseline."""

from __future__ import annotations

from pathlib import Path

import typer

from sono3d.commands._common import print_json, view_file_option
from sono3d.commands.report import HTML_HELP, write_page
from sono3d.errors import InputError
from sono3d.heart.evaluate import evaluate_split, write_evaluation
from sono3d.heart.overlay import OVERLAY_LABELS
from sono3d.heart.pose import PoseTrainConfig, train_pose
from sono3d.heart.predict import predict_folder
from sono3d.heart.s2mnet import POSE_KIND
from sono3d.heart.training import TrainConfig
from sono3d.heart.training import train as run_training
from sono3d.heart.views_intake import parse_depths
from sono3d.io.lock import writer_lock
from sono3d.simulate.echo_views import VIEW_NAMES
from sono3d.style.apply import views_transform
from sono3d.viz.clinical import evaluation_figures
from sono3d.viz.overlay import overlay_figure


def add_commands(heart_app: typer.Typer) -> None:
    heart_app.command("train")(train)
    heart_app.command("predict")(predict)
    heart_app.command("evaluate")(evaluate)


def train(
    cohort_dir: Path = typer.Argument(..., help="A generated heart cohort (sono3d heart cohort)."),
    run_dir: Path = typer.Argument(..., help="Run folder: split, checkpoints and log are written here."),
    model: str = typer.Option("s2mnet", "--model", help="s2mnet, voxel (the Pix2Vox-style baseline) or pose (the "
                              "view-plane regressor for overlays)."),
    config: str = typer.Option("small", "--config", help="small (2 CPU cores) or paper (ResNet50, GPU)."),
    epochs: int = typer.Option(None, "--epochs", help="Number of epochs (default: the config's)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, the weights, the order and the augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in RUN_DIR from its last checkpoint "
                                "(or from its start if it was interrupted before the first one)."),
    workers: int = typer.Option(None, "--workers", help="DataLoader worker processes (default: the config's)."),
    max_cases: int = typer.Option(None, "--max-cases", help="Use only the first N cases of the cohort."),
    view_dropout: float = typer.Option(None, "--view-dropout", help="Probability that a training sample loses views "
                                       "(so that predict accepts any non-empty subset of the six views)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Print a line per epoch on stderr."),
    dtype: str = typer.Option(None, "--dtype", help="float32 (default) or float64 (about 2x slower; for "
                              "numerical checks, e.g. one process against several under torchrun)."),
    style: Path = typer.Option(None, "--style", help="A style run: train on the cohort's views translated to the "
                               "real style (the paper's route)."),
) -> None:
    """Train S2MNet, the voxel baseline or the view-plane regressor on a cohort (80/10/10 split by case); resumable."""
    if config not in ("small", "paper", "tiny"):
        raise InputError(f"--config must be small or paper, got {config!r}")
    if epochs is not None and epochs < 1:
        raise InputError(f"--epochs must be a positive integer, got {epochs}")
    if workers is not None and workers < 0:
        raise InputError(f"--workers must be >= 0, got {workers}")
    if max_cases is not None and max_cases < 3:
        raise InputError(f"--max-cases must be at least 3, got {max_cases}")
    if view_dropout is not None and not 0.0 <= view_dropout < 1.0:
        raise InputError(f"--view-dropout must be in [0, 1), got {view_dropout}")
    if model == POSE_KIND:
        if device != "cpu":
            raise InputError("the pose model trains on the CPU only (--device cpu)")
        if view_dropout is not None:
            raise InputError("--view-dropout is an option of s2mnet and voxel runs, not of --model pose")
        if style is not None:
            raise InputError("--style is an option of s2mnet and voxel runs, not of --model pose")
        pcfg = PoseTrainConfig.preset(config, epochs=epochs, max_cases=max_cases)
        res = train_pose(cohort_dir, run_dir, pcfg if (not resume or epochs is not None) else None, seed=seed,
                         resume=resume, progress=progress)
        res.pop("history", None)
        print_json(res)
        return
    cfg = TrainConfig.preset(config, epochs=epochs, workers=workers, max_cases=max_cases, view_dropout=view_dropout,
                             dtype=dtype)
    # On --resume the run's stored config wins (only --epochs may extend it).
    res = run_training(cohort_dir, run_dir, model, cfg if (not resume or epochs is not None) else None, seed=seed,
                       resume=resume, device=device, progress=progress,
                       **_style_bridge(style, "to-real"))
    res.pop("history", None)
    print_json(res)



def predict(
    paths: list[Path] = typer.Argument(..., help="RUN_DIR OUT_DIR (views from --views or the view files), or the "
                                       "older RUN_DIR VIEWS.npz OUT_DIR.", metavar="RUN_DIR [VIEWS.npz] OUT_DIR"),
    views: Path = typer.Option(None, "--views", help="views.npz (sono3d heart views, or a cohort case's): echo "
                               "[2, 6, H, W] (ED, ES) or [6, H, W]; blank views are missing."),
    a4c: Path = view_file_option("--a4c", "Apical four-chamber view"),
    a2c: Path = view_file_option("--a2c", "Apical two-chamber view"),
    a3c: Path = view_file_option("--a3c", "Apical three-chamber (long-axis) view"),
    sax_basal: Path = view_file_option("--sax-basal", "Basal short-axis view"),
    sax_mid: Path = view_file_option("--sax-mid", "Mid short-axis view"),
    sax_apical: Path = view_file_option("--sax-apical", "Apical short-axis view"),
    pose_run: Path = typer.Option(None, "--pose-run", help="A view-plane regressor run (train --model pose): writes "
                                  "overlay.png, the predicted heart's contours on each view."),
    strict: bool = typer.Option(False, "--strict", help="Refuse (exit 2) views the input check calls out of the "
                                "training distribution (default: a one-line warning)."),
    ed_frame: int = typer.Option(None, "--ed-frame", help="End-diastole frame of every loop (default: largest cavity)."),
    es_frame: int = typer.Option(None, "--es-frame", help="End-systole frame of every loop (default: smallest cavity)."),
    depth_mm: str = typer.Option(None, "--depth-mm", help="Depth shown on the scanner, for files without a pixel size: "
                                 "one value in mm (150) or per view (a4c=150,a2c=190). Default 160 mm."),
    mirror: bool = typer.Option(False, "--mirror", help="Mirror every view left-right."),
    html: bool = typer.Option(True, "--html/--no-html", help=HTML_HELP),
    style: Path = typer.Option(None, "--style", help="A style run: translate the views to the synthetic style "
                               "before the networks (the reverse route)."),
) -> None:
    """Heart mesh(es), LV volumes and EF from echo views: a views.npz or the recordings themselves.

    Any non-empty subset of the six views is accepted by a run trained with --view-dropout. From
    recordings, the views are taken in first (views.npz and views.png in OUT_DIR, as sono3d heart
    views writes them). report.json holds the volumes, EF (ED and ES given), the input check and,
    with --pose-run, the regressed view planes.
    """
    files = {"a4c": a4c, "a2c": a2c, "a3c": a3c, "sax_basal": sax_basal, "sax_mid": sax_mid, "sax_apical": sax_apical}
    given = {k: v for k, v in files.items() if v is not None}
    if len(paths) == 3:
        if views is not None:
            raise InputError("give the views file once: as the middle argument or with --views")
        run_dir, views, out_dir = paths
    elif len(paths) == 2:
        run_dir, out_dir = paths
    else:
        raise InputError(f"expected RUN_DIR [VIEWS.npz] OUT_DIR, got {len(paths)} arguments")
    if out_dir.suffix.lower() == ".npz":
        raise InputError(f"{out_dir}: OUT_DIR is a folder (is the views file in the wrong place?)")
    with writer_lock(out_dir, "output folder"):  # the page too
        res = predict_folder(run_dir, out_dir, views=views, recordings=given, pose_run=pose_run, strict=strict,
                             depth_mm=parse_depths(depth_mm), ed_frame=ed_frame, es_frame=es_frame, mirror=mirror,
                             **_style_bridge(style, "to-synthetic"))
        for w in res.warnings:
            typer.echo(f"warning: {w}", err=True)
        pred = res.prediction
        if pred.overlay is not None:
            overlay_figure(pred.echo, pred.overlay, pred.present, VIEW_NAMES, pred.phase_names, OVERLAY_LABELS,
                           out_dir / "overlay.png", title=_overlay_title(res.report))
        rep = res.report
        if html:
            rep["html"] = write_page(out_dir, views=res.views_file)
    print_json(rep)


def _overlay_title(report: dict) -> str:
    names = {"lv_volume_ml": "LV volume", "lv_edv_ml": "EDV", "lv_esv_ml": "ESV"}
    vols = [f"{name} {report[k]:.0f} mL" for k, name in names.items() if k in report]
    if "ef" in report:
        vols.append(f"EF {report['ef']:.0f} %")
    check = report["input_check"]
    verdict = ("input check unavailable" if not check.get("available") else
               f"input check: {'in' if check['in_distribution'] else 'OUT of'} distribution (score {check['score']:.2f})")
    return ", ".join(vols) + "; " + verdict


def _style_bridge(style: Path | None, direction: str) -> dict:
    """The ``--style`` hook (issue 15): keyword arguments that translate views with a CycleGAN run
    before the networks see them (none without ``--style``)."""
    if style is None:
        return {}
    transform, record = views_transform(style, direction)
    return {"views_transform": transform, "views_style": record}


def evaluate(
    run_dir: Path = typer.Argument(..., help="A trained S2MNet run folder."),
    cohort_dir: Path = typer.Argument(..., help="The cohort it was trained on."),
    out_dir: Path = typer.Argument(..., help="Output folder for report.json, cases.csv and the figures."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    baseline: Path = typer.Option(None, "--baseline", help="A voxel-baseline run folder to compare with."),
    resolution: int = typer.Option(128, "--resolution", help="Voxels per axis of the IoU grid."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Write the Bland-Altman and IoU figures."),
    html: bool = typer.Option(True, "--html/--no-html", help=HTML_HELP),
    views: str = typer.Option(None, "--views", help="Evaluate from a subset of the views only, e.g. a4c,a2c (a run "
                              "trained with --view-dropout)."),
    pose_run: Path = typer.Option(None, "--pose-run", help="A view-plane regressor run: plane errors and the overlay's "
                                  "LV Dice."),
    style: Path = typer.Option(None, "--style", help="A style run: evaluate on the split's views translated to the "
                               "real style (as a run trained with --style saw them)."),
) -> None:
    """IoU@128³, vertex MSE, Chamfer/Hausdorff, LV volumes, EF error and correlation on a split."""
    if resolution < 8 or resolution > 512:
        raise InputError(f"--resolution must be between 8 and 512, got {resolution}")
    subset = None if views is None else views.split(",")
    with writer_lock(out_dir, "output folder"):  # the page too
        evaluation = evaluate_split(run_dir, cohort_dir, split=split, baseline=baseline, resolution=resolution,
                                    views=subset, pose=pose_run, **_style_bridge(style, "to-real"))
        write_evaluation(evaluation, out_dir)
        if figures:
            evaluation_figures(evaluation.rows, out_dir, resolution=resolution)
        rep = evaluation.report
        keys = ("n_cases", "iou128", "vertex_mse", "chamfer_mm", "ef_mae", "ef_pearson")
        summary = {k: rep.get(k) for k in keys}
        for k in ("views_given", "pose", "overlay"):
            if k in rep:
                summary[k] = rep[k] if k == "views_given" else {m: v for m, v in rep[k].items() if m != "per_view"}
        if "baseline" in rep:
            summary["baseline"] = {k: rep["baseline"].get(k) for k in keys if k in rep["baseline"]}
        if html:
            summary["html"] = write_page(out_dir)
    print_json(summary)
