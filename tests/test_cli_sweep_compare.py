"""`sono3d sweep compare`: both methods on the same held-out frames, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import one_line_error
from sono3d.cli import app
from sono3d.io import write_sweep
from sono3d.simulate.slicing import sample_planes
from sono3d.sweep.poses import fan_prior_poses
from sono3d.types import Sweep, Volume

runner = CliRunner()
SHAPE, SPACING = (24, 24), (0.5, 0.5)
KEYS = {"ssim", "psnr", "l1", "ncc", "seconds"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    aff[:3, 3] = [-8, -8, -14]
    x, y, z = np.meshgrid(*[np.arange(33) * 0.5 - 8] * 2, np.arange(33) * 0.5 - 14, indexing="ij")
    r = np.sqrt((x / 4) ** 2 + (y / 3) ** 2 + ((z + 6) / 3) ** 2)
    vol = Volume(np.where(r < 0.8, 0.5, np.where(r < 1.0, 1.0, 0.1)).astype(np.float32), aff)
    P = fan_prior_poses(12, SHAPE, SPACING, 60.0)
    sweep = Sweep(sample_planes(vol, P, SHAPE), P, SPACING)
    write_sweep(d / "sweep.seq.nrrd", sweep)
    write_sweep(d / "untracked.seq.nrrd", Sweep(sweep.frames, None, SPACING))
    write_sweep(d / "three.seq.nrrd", sweep.subset([0, 1, 2]))
    return d


def _run(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("poses", [("--poses", "tracked"), ("--poses", "fan", "--span", "60", "--no-html")])
def test_compare_writes_both_methods(files, tmp_path, poses):
    out = tmp_path / "cmp"
    res = _run("sweep", "compare", str(files / "sweep.seq.nrrd"), str(out), "--preset", "small", "--epochs", "2",
               "--holdout", "4", "--quiet", *poses)
    assert res.exit_code == 0, res.output
    assert "compounding" in res.output and "gaussians" in res.output
    rep = json.loads((out / "report.json").read_text())
    for method in ("compounding", "gaussians"):
        assert KEYS <= set(rep[method]), method
        assert 0 < rep[method]["ssim"] <= 1 and rep[method]["seconds"] > 0
    assert rep["holdout"] == [2, 6, 10]
    assert rep["compounding"]["voxel_mm"] == pytest.approx(0.5)  # the pixel size
    assert (out / "compare.png").stat().st_size > 1000
    assert not list(out.glob("*.tmp*"))
    assert [f["frame"] for f in rep["per_frame"]] == rep["holdout"]
    assert all(0 < f[m]["ssim"] <= 1 for f in rep["per_frame"] for m in ("compounding", "gaussians"))
    # the page of the folder (sono3d report recognises it), unless --no-html
    assert (out / "report.html").is_file() == ("--no-html" not in poses)


def test_compare_bad_input_is_one_line(files, tmp_path):
    res = _run("sweep", "compare", str(files / "untracked.seq.nrrd"), str(tmp_path / "a"), "--quiet")
    line = one_line_error(res, "no poses", "--poses fan")
    assert "--span" in line
    res = _run("sweep", "compare", str(files / "three.seq.nrrd"), str(tmp_path / "b"), "--holdout", "2", "--quiet")
    one_line_error(res, "leaves 2 training", "at least 3")
    res = _run("sweep", "compare", str(files / "sweep.seq.nrrd"), str(tmp_path / "c"), "--span", "wide")
    one_line_error(res, "--span")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
