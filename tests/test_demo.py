"""The README's `make demo` path: `sono3d demo` end to end, on a smaller sweep to stay quick."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.demo import demo_comparison
from sono3d.sweep import ReconstructConfig


def test_demo_comparison_writes_outputs_and_scores_both_methods(tmp_path):
    cfg = ReconstructConfig.preset("fast", epochs=15)
    rep = demo_comparison(tmp_path, seed=1, frames=20, size_px=64, progress=False, config=cfg)
    for name in ("volume.nii.gz", "gaussians.ply", "slices.png", "report.json", "sweep.seq.nrrd"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["holdout"]["frames"] == rep["holdout"]["frames"] > 0
    # Both methods must reproduce held-out label frames far better than an empty guess.
    assert rep["holdout"]["ssim"] > 0.5 and rep["baseline"]["ssim"] > 0.5


def test_demo_cli_reports_heldout_ssim(tmp_path, monkeypatch):
    import sono3d.demo as ev

    real = ev.demo_comparison

    def smaller(out_dir, seed=0, progress=True, **_):
        return real(out_dir, seed=seed, frames=20, size_px=64, progress=progress,
                    config=ReconstructConfig.preset("fast", epochs=10))

    monkeypatch.setattr(ev, "demo_comparison", smaller)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "held-out frames" in result.output and "SSIM" in result.output
    assert str(tmp_path / "volume.nii.gz") in result.output
