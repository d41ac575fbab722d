"""``sono3d heart train | predict | evaluate``: S2MNet and the voxel baseline."""

from __future__ import annotations

from pathlib import Path

import typer

from sono3d.commands._common import print_json
from sono3d.commands.report import HTML_HELP, write_page
from sono3d.errors import InputError
from sono3d.heart.evaluate import evaluate_split, write_evaluation
from sono3d.heart.pose import PoseTrainConfig, train_pose
from sono3d.heart.predict import predict_files
from sono3d.heart.s2mnet import POSE_KIND
from sono3d.heart.training import TrainConfig, train as run_training
from sono3d.viz.clinical import evaluation_figures


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
    resume: bool = typer.Option(False, "--resume", help="Continue the run in RUN_DIR from its last checkpoint."),
    workers: int = typer.Option(None, "--workers", help="DataLoader worker processes (default: the config's)."),
    max_cases: int = typer.Option(None, "--max-cases", help="Use only the first N cases of the cohort."),
    view_dropout: float = typer.Option(None, "--view-dropout", help="Probability that a training sample loses views "
                                       "(so that predict accepts any non-empty subset of the six views)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Print a line per epoch on stderr."),
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
        pcfg = PoseTrainConfig.preset(config, epochs=epochs, max_cases=max_cases)
        res = train_pose(cohort_dir, run_dir, pcfg if (not resume or epochs is not None) else None, seed=seed,
                         resume=resume, progress=progress)
        res.pop("history", None)
        print_json(res)
        return
    cfg = TrainConfig.preset(config, epochs=epochs, workers=workers, max_cases=max_cases, view_dropout=view_dropout)
    # On --resume the run's stored config wins (only --epochs may extend it).
    res = run_training(cohort_dir, run_dir, model, cfg if (not resume or epochs is not None) else None, seed=seed,
                       resume=resume, device=device, progress=progress)
    res.pop("history", None)
    print_json(res)


def predict(
    run_dir: Path = typer.Argument(..., help="A trained S2MNet run folder."),
    views: Path = typer.Argument(..., help="views.npz with echo [2, 6, H, W] (ED, ES) or [6, H, W]; poses optional."),
    out_dir: Path = typer.Argument(..., help="Output folder for heart_ed.vtp, heart_es.vtp and report.json."),
    html: bool = typer.Option(True, "--html/--no-html", help=HTML_HELP),
) -> None:
    """Predict the heart mesh(es), LV volumes and EF from six echo views."""
    rep = predict_files(run_dir, views, out_dir)
    if html:
        rep["html"] = write_page(out_dir, views=views)
    print_json(rep)


def evaluate(
    run_dir: Path = typer.Argument(..., help="A trained S2MNet run folder."),
    cohort_dir: Path = typer.Argument(..., help="The cohort it was trained on."),
    out_dir: Path = typer.Argument(..., help="Output folder for report.json, cases.csv and the figures."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    baseline: Path = typer.Option(None, "--baseline", help="A voxel-baseline run folder to compare with."),
    resolution: int = typer.Option(128, "--resolution", help="Voxels per axis of the IoU grid."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Write the Bland-Altman and IoU figures."),
    html: bool = typer.Option(True, "--html/--no-html", help=HTML_HELP),
) -> None:
    """IoU@128³, vertex MSE, Chamfer/Hausdorff, LV volumes, EF error and correlation on a split."""
    if resolution < 8 or resolution > 512:
        raise InputError(f"--resolution must be between 8 and 512, got {resolution}")
    evaluation = evaluate_split(run_dir, cohort_dir, split=split, baseline=baseline, resolution=resolution)
    write_evaluation(evaluation, out_dir)
    if figures:
        evaluation_figures(evaluation.rows, out_dir, resolution=resolution)
    rep = evaluation.report
    keys = ("n_cases", "iou128", "vertex_mse", "chamfer_mm", "ef_mae", "ef_pearson")
    summary = {k: rep.get(k) for k in keys}
    if "baseline" in rep:
        summary["baseline"] = {k: rep["baseline"].get(k) for k in keys if k in rep["baseline"]}
    if html:
        summary["html"] = write_page(out_dir)
    print_json(summary)
