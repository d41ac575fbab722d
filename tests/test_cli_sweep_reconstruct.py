"""`sono3d sweep reconstruct` / `sweep render` on small files, and their one-line errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.io import read_sweep, write_sweep, write_volume
from sono3d.simulate.slicing import sample_planes
from sono3d.sweep.poses import fan_prior_poses
from sono3d.types import Sweep, Volume

runner = CliRunner()
SHAPE, SPACING = (24, 24), (0.5, 0.5)


def _ellipsoid() -> Volume:
    """Label-like ellipsoid (interior 0.5, border 1) below the canonical probe face."""
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    aff[:3, 3] = [-8, -8, -14]
    x, y, z = np.meshgrid(*[np.arange(33) * 0.5 - 8] * 2, np.arange(33) * 0.5 - 14, indexing="ij")
    r = np.sqrt((x / 4) ** 2 + (y / 3) ** 2 + ((z + 6) / 3) ** 2)
    return Volume(np.where(r < 0.8, 0.5, np.where(r < 1.0, 1.0, 0.0)).astype(np.float32), aff)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    vol = _ellipsoid()
    P = fan_prior_poses(10, SHAPE, SPACING, 60.0)
    sweep = Sweep(sample_planes(vol, P, SHAPE), P, SPACING)
    write_sweep(d / "sweep.seq.nrrd", sweep)
    write_volume(d / "truth.nii.gz", vol)
    write_sweep(d / "one.seq.nrrd", sweep.subset([3]))
    black = Sweep(np.zeros_like(sweep.frames), P, SPACING)
    write_sweep(d / "black.seq.nrrd", black)
    return d


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_reconstruct_writes_everything(files, tmp_path):
    out = tmp_path / "out"
    res = _run("sweep", "reconstruct", str(files / "sweep.seq.nrrd"), str(out), "--preset", "small", "--epochs", "2",
               "--gaussians-per-slice", "10", "--truth", str(files / "truth.nii.gz"), "--quiet", "--seed", "3")
    assert res.exit_code == 0, res.output
    assert "held out" in res.output
    for name in ("gaussians.ply", "volume.nii.gz", "slices.png", "report.json"):
        assert (out / name).is_file(), name
    rep = json.loads((out / "report.json").read_text())
    for part in ("train", "holdout"):
        assert set(rep[part]) >= {"l1", "l2", "ssim", "psnr", "ncc"}
    assert rep["epochs"] == 2 and rep["gaussians"] == 8 * 10 and rep["seconds"] > 0
    assert rep["config"]["seed"] == 3 and rep["config"]["preset"] == "small"
    assert set(rep["volume"]) >= {"psnr", "ncc", "dice"}
    assert rep["truth"] == str(files / "truth.nii.gz")  # recorded for a later `sono3d report`
    img = nib.load(out / "volume.nii.gz")
    assert np.allclose(img.affine, rep["volume_grid"]["affine"], atol=1e-5)
    assert list(img.shape) == rep["volume_grid"]["shape"]
    # the grid covers the sweep: its corner is the probe-face side of the fan
    assert img.affine[2, 3] + (img.shape[2] - 1) * img.affine[2, 2] == pytest.approx(0.25, abs=0.6)

    rendered = tmp_path / "rendered.seq.nrrd"
    res = _run("sweep", "render", str(out / "gaussians.ply"), str(files / "sweep.seq.nrrd"), str(rendered))
    assert res.exit_code == 0, res.output
    back = read_sweep(rendered)
    assert back.frames.shape == (10,) + SHAPE
    assert np.allclose(back.image_to_world, read_sweep(files / "sweep.seq.nrrd").image_to_world, atol=1e-5)


def test_fan_prior_from_the_cli(files, tmp_path):
    out = tmp_path / "fan"
    res = _run("sweep", "reconstruct", str(files / "sweep.seq.nrrd"), str(out), "--preset", "small", "--epochs", "1",
               "--gaussians-per-slice", "5", "--poses", "fan", "--span", "60", "--fan-axis", "axial", "--holdout", "0",
               "--quiet")
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["poses"] == "fan" and rep["config"]["fan_axis"] == "axial" and rep["holdout"]["frames"] == 0


@pytest.mark.parametrize("args, match", [
    (["--poses", "fan", "--span", "0"], "span"),
    (["--fan-axis", "diagonal"], "fan axis"),
    (["--backend", "nonsense"], "backend"),
    (["--epochs", "0"], "epochs"),
    (["--preset", "huge"], "preset"),
    (["--holdout", "1"], "holdout"),
])
def test_bad_options_are_one_line_errors(files, tmp_path, args, match):
    out = tmp_path / "o"
    res = _run("sweep", "reconstruct", str(files / "sweep.seq.nrrd"), str(out), "--quiet", *args)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], res.output
    assert not out.exists()


@pytest.mark.parametrize("name, match", [("one.seq.nrrd", "at least 2 frames"), ("black.seq.nrrd", "black"),
                                         ("missing.seq.nrrd", "missing")])
def test_bad_sweeps_are_one_line_errors(files, tmp_path, name, match):
    out = tmp_path / "o"
    res = _run("sweep", "reconstruct", str(files / name), str(out), "--quiet")
    assert res.exit_code == 2
    assert res.output.startswith("error:") and "Traceback" not in res.output
    assert match in res.output or name in res.output
    assert not out.exists()


def test_render_refuses_a_ply_without_gaussian_fields(files, tmp_path):
    bad = tmp_path / "points.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                    b"property float z\nend_header\n" + np.zeros(3, "<f4").tobytes())
    out = tmp_path / "r.seq.nrrd"
    res = _run("sweep", "render", str(bad), str(files / "sweep.seq.nrrd"), str(out))
    assert res.exit_code == 2 and res.output.startswith("error:") and "missing" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_frames_of_mixed_size_are_refused(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.full((20, 30), 50, np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((22, 30), 50, np.uint8)).save(folder / "b.png")
    out = tmp_path / "o"
    res = _run("sweep", "reconstruct", str(folder), str(out), "--poses", "fan", "--spacing", "0.5", "--quiet")
    assert res.exit_code == 2 and res.output.startswith("error:") and "size" in res.output
    assert not out.exists()
