"""``sono3d demo``: the whole sweep path on a generated uterus, against the compounding baseline."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from sono3d import demo as demo_module
from sono3d.commands.report import HTML_HELP, write_page
from sono3d.errors import InputError
from sono3d.io.lock import writer_lock


def demo(
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="Keep the results in this folder (default: a new temp folder)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the phantom, the sweep and the training."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    html: bool = typer.Option(True, "--html/--no-html", help=HTML_HELP),
) -> None:
    """Simulate a uterus sweep, reconstruct it with 3D Gaussians and compare with compounding."""
    if out is not None and out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder (--out names the folder for the results)")
    folder = out if out is not None else Path(tempfile.mkdtemp(prefix="sono3d-demo-"))
    # Looked up on the module at call time, so a test can swap in a smaller demo.
    with writer_lock(folder, "output folder"):  # the page too
        rep = demo_module.demo_comparison(folder, seed=seed, progress=not quiet)
        page = write_page(folder) if html else None
    g, b = rep["holdout"], rep["baseline"]
    # PSNR from the MSE pooled over all held-out frames: a per-frame mean is infinite as soon as
    # one empty frame is reproduced exactly, which compounding does.
    typer.echo(f"held-out frames ({g['frames']}), Gaussians vs compounding: SSIM {g['ssim']:.3f} vs {b['ssim']:.3f}, "
               f"PSNR {g['psnr_pooled']:.2f} vs {b['psnr_pooled']:.2f} dB, L1 {g['l1']:.4f} vs {b['l1']:.4f}")
    typer.echo(f"training frames: SSIM {rep['train']['ssim']:.3f} L1 {rep['train']['l1']:.4f}; "
               f"{rep['gaussians']} Gaussians, {rep['seconds']:.0f} s ({rep['backend']})")
    typer.echo(f"volume: {rep['outputs']['volume']}")
    if page is not None:
        typer.echo(f"report: {page} (open it in a browser)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
