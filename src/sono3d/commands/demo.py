"""``sono3d demo``: the whole sweep path on a generated uterus, against the compounding baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def demo(
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="Keep the results in this folder (default: a new temp folder)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the phantom, the sweep and the training."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Simulate a uterus sweep, reconstruct it with 3D Gaussians and compare with compounding."""
    import tempfile

    from sono3d.sweep.evaluate import demo_comparison

    folder = out if out is not None else Path(tempfile.mkdtemp(prefix="sono3d-demo-"))
    rep = demo_comparison(folder, seed=seed, progress=not quiet)
    g, b = rep["holdout"], rep["baseline"]
    typer.echo(f"held-out frames ({g['frames']}), Gaussians vs compounding: SSIM {g['ssim']:.3f} vs {b['ssim']:.3f}, "
               f"PSNR {g['psnr']:.2f} vs {b['psnr']:.2f} dB (per-frame mean), "
               f"{g['psnr_pooled']:.2f} vs {b['psnr_pooled']:.2f} dB (pooled MSE)")
    typer.echo(f"training frames: SSIM {rep['train']['ssim']:.3f} L1 {rep['train']['l1']:.4f}; "
               f"{rep['gaussians']} Gaussians, {rep['seconds']:.0f} s ({rep['backend']})")
    typer.echo(f"volume: {rep['outputs']['volume']}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
