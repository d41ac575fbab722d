"""``sono3d style train | apply | gap``: the domain bridge between synthetic and real echo views."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import typer

from sono3d.commands._common import print_json
from sono3d.errors import InputError
from sono3d.heart.cohort import case_ids
from sono3d.heart.data import split_cases
from sono3d.io.lock import writer_lock
from sono3d.simulate.echo_views import VIEW_NAMES
from sono3d.style.apply import apply_path, run_geometry
from sono3d.style.cyclegan import Domain, StyleConfig, load_style_run, train_cyclegan, translate
from sono3d.style.data import (VIEWS_SUFFIX, cohort_domain, cohort_geometry, cohort_info, read_views_file,
                               real_domain, views_domain, views_geometry)
from sono3d.style.gap import domain_gap

style_app = typer.Typer(
    help="Style transfer between synthetic and real echo views (CycleGAN) and the domain gap as a number.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(style_app, name="style")


def _view_indices(views: str) -> tuple[int, ...] | None:
    """View indices named by ``--views`` (``None``: all)."""
    if views == "all":
        return None
    names = [v.strip() for v in views.split(",") if v.strip()]
    bad = [v for v in names if v not in VIEW_NAMES]
    if bad or not names:
        raise InputError(f"--views must be 'all' or names from {', '.join(VIEW_NAMES)}, got {views!r}")
    return tuple(VIEW_NAMES.index(v) for v in names)


def _split_ids(cohort_dir: Path, split: str, seed: int) -> list[str]:
    """Case ids of a split of the S2MNet trainer (same seed: same split), or all of them."""
    ids = case_ids(cohort_dir)
    if not ids:
        raise InputError(f"{cohort_dir}: no cases (not a generated heart cohort?)")
    if split == "all":
        return ids
    if split not in ("train", "val", "test"):
        raise InputError(f"--split must be all, train, val or test, got {split!r}")
    chosen = split_cases(ids, seed)[split]
    if not chosen:
        raise InputError(f"{cohort_dir}: the {split} split is empty ({len(ids)} cases)")
    return chosen


@style_app.command("train")
def train(
    sources: list[Path] = typer.Argument(..., metavar="REAL... COHORT_DIR RUN_DIR",
                                         help="Real echo sources (images, DICOM, videos, folders, views .npz), "
                                         "then a generated cohort and the run folder."),
    size: int = typer.Option(128, "--size", help="Image size in pixels (square)."),
    epochs: int = typer.Option(None, "--epochs", help="Number of epochs (default: the config's)."),
    config: str = typer.Option("small", "--config", help="small (2 CPU cores) or paper (Zhu et al. 2017)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in RUN_DIR from its last checkpoint."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights, the order, the crops and the image buffers; "
                             "also the cohort split whose training cases are used."),
    depth_mm: float = typer.Option(None, "--depth-mm", help="Imaging depth of real sources without a pixel size."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Print a line per epoch on stderr."),
) -> None:
    """Train a CycleGAN between a cohort's views (its S2MNet training split) and real echo frames."""
    if len(sources) < 3:
        raise InputError("give at least one REAL source, then COHORT_DIR and RUN_DIR")
    *real_paths, cohort_dir, run_dir = sources
    if config not in ("small", "paper", "tiny"):  # tiny: for tests
        raise InputError(f"--config must be small or paper, got {config!r}")
    if epochs is not None and epochs < 1:
        raise InputError(f"--epochs must be a positive integer, got {epochs}")
    if size < 16 or size > 1024 or size % 4:
        raise InputError(f"--size must be a multiple of 4 between 16 and 1024, got {size}")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"{run_dir} exists and is not a folder")
    with writer_lock(run_dir, "run folder"):  # before the sources are read: a busy run is refused at once
        info = cohort_info(cohort_dir)
        geometry = cohort_geometry(cohort_dir, size)
        ids = _split_ids(cohort_dir, "train", seed)
        synthetic = cohort_domain(cohort_dir, ids, size)
        real = real_domain(real_paths, geometry, depth_mm)
        cfg = StyleConfig.preset(config)
        if epochs is not None:
            cfg = replace(cfg, epochs=epochs)
        meta = {"cohort": str(cohort_dir), "appearance": info.get("appearance", "pseudo"), "split_seed": seed,
                "real_sources": [str(p) for p in real_paths], "config_name": config,
                "geometry": {"size": geometry.size, "fov_mm": geometry.fov_mm, "depth_mm": geometry.depth_mm,
                             "opening_deg": geometry.opening_deg}}
        res = train_cyclegan(real, synthetic, run_dir, cfg if (not resume or epochs is not None) else None,
                             seed=seed, resume=resume, info=meta, progress=progress)
    res.pop("history", None)
    print_json(res)


@style_app.command("apply")
def apply(
    run_dir: Path = typer.Argument(..., help="A trained style run folder."),
    inp: Path = typer.Argument(..., help="A views .npz, an image, a folder of images, a video or a DICOM file."),
    out: Path = typer.Argument(..., help="Output: a .npz for a views file, a .png for one frame, else a folder."),
    direction: str = typer.Option("to-real", "--direction", help="to-real (synthetic to real style) or to-synthetic."),
    depth_mm: float = typer.Option(None, "--depth-mm", help="Imaging depth of a source without a pixel size."),
) -> None:
    """Translate views or echo frames into the other domain's style (only inside the fan)."""

    print_json(apply_path(run_dir, inp, out, direction, depth_mm))


@style_app.command("gap")
def gap(
    real: list[Path] = typer.Argument(..., help="Real sources (images, DICOM, videos, folders, views .npz)."),
    synthetic: list[Path] = typer.Option(..., "--synthetic", help="A generated cohort or a views .npz (repeatable)."),
    style: Path = typer.Option(None, "--style", help="A style run: translate one set before the test."),
    direction: str = typer.Option("to-real", "--direction",
                                  help="With --style: to-real translates the synthetic set, to-synthetic the real."),
    views: str = typer.Option("all", "--views", help="Views of synthetic sets to use: all or e.g. a4c,a2c,a3c."),
    split: str = typer.Option("test", "--split", help="Cases of a cohort: test (default, unseen by the bridge), "
                              "val, train or all (the S2MNet split for --seed)."),
    size: int = typer.Option(64, "--size", help="Side the classifier sees whole images at (without --patch)."),
    patch: int = typer.Option(0, "--patch", help="Classify PATCH x PATCH windows at the views' pixel size instead "
                              "of whole images: local appearance without the anatomy's layout (0: whole images)."),
    view_size: int = typer.Option(128, "--view-size", help="Side of the view geometry the sets are compared in."),
    epochs: int = typer.Option(40, "--epochs", help="Classifier training epochs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, the classifier and the bootstrap."),
    depth_mm: float = typer.Option(None, "--depth-mm", help="Imaging depth of real sources without a pixel size."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Classifier two-sample test: held-out ROC AUC of a small CNN telling real from synthetic (0.5: no gap)."""
    sel = _view_indices(views)
    run = load_style_run(style) if style is not None else None
    if direction not in ("to-real", "to-synthetic"):
        raise InputError(f"--direction must be to-real or to-synthetic, got {direction!r}")
    if epochs < 1 or size < 8 or patch < 0:
        raise InputError("--epochs must be >= 1, --size >= 8 and --patch >= 0")
    geometry = None
    parts = []
    for src in synthetic:
        if (src / "cohort.json").is_file():
            geometry = geometry or cohort_geometry(src, view_size)
            parts.append(cohort_domain(src, _split_ids(src, split, seed), view_size, views=sel))
        elif src.suffix.lower() == VIEWS_SUFFIX:
            geometry = geometry or views_geometry(read_views_file(src), view_size)
            parts.append(views_domain(src, sel))
        else:
            raise InputError(f"{src}: a synthetic set is a generated cohort folder or a views .npz")
    if geometry is None:
        if run is None:
            raise InputError("no view geometry for the real sources: give a cohort folder or a views file with its "
                             "sectors as --synthetic, or --style")
        geometry = run_geometry(run)
    syn = Domain(np.concatenate([p.images for p in parts]), np.concatenate([p.masks for p in parts]),
                 [n for p in parts for n in p.names])
    rl = real_domain(real, geometry, depth_mm)
    if syn.images.shape[1:] != rl.images.shape[1:]:
        raise InputError(f"synthetic views are {syn.images.shape[1]}x{syn.images.shape[2]} and real frames "
                         f"{rl.images.shape[1]}x{rl.images.shape[2]}: use --view-size to match them")
    if run is not None:
        if direction == "to-real":
            syn.images = translate(run, syn.images, syn.masks, "to-real")
        else:
            rl.images = translate(run, rl.images, rl.masks, "to-synthetic")
    # recordings (real) and cases (cohorts) are kept whole on one side of the split
    res = domain_gap(rl.images, syn.images, rl.masks, syn.masks, size=size, epochs=epochs, seed=seed, patch=patch,
                     real_groups=np.array([n.rsplit(":", 1)[0] for n in rl.names]),
                     synthetic_groups=np.array([n.split("/")[0].rsplit(":", 1)[0] for n in syn.names])).to_dict()
    if run is not None:
        res["style"] = {"run": str(run.path), "epoch": run.epoch, "direction": direction}
    if as_json:
        print_json(res)
    else:
        typer.echo(f"gap AUC {res['auc']:.3f} (95% CI {res['ci95'][0]:.3f}-{res['ci95'][1]:.3f}); "
                   f"{res['n_real']} real, {res['n_synthetic']} synthetic images")
