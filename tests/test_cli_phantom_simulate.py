"""``sono3d phantom uterus`` and ``sono3d simulate sweep``: round trip on small sizes, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.io import read_mesh, read_sweep, read_volume

from conftest import one_line_error

runner = CliRunner()


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "uterus"
    res = runner.invoke(app, ["phantom", "uterus", str(out), "--seed", "4", "--spacing", "1.5"])
    assert res.exit_code == 0, res.output
    return out


def test_phantom_uterus_writes_its_files(phantom_dir):
    for name in ("labels.nii.gz", "bmode.nii.gz", "structures.nii.gz", "surface.vtp", "phantom.json"):
        assert (phantom_dir / name).is_file(), name
    labels = read_volume(phantom_dir / "labels.nii.gz")
    assert set(np.unique(labels.array).tolist()) == {0.0, 0.5, 1.0}
    assert np.allclose(labels.spacing_mm, 1.5)
    echo = read_volume(phantom_dir / "bmode.nii.gz")
    assert echo.shape == labels.shape and 0 <= echo.array.min() and echo.array.max() <= 1
    desc = json.loads((phantom_dir / "phantom.json").read_text())
    assert desc["params"]["length_mm"] > 70 and "probe_tip" in desc["landmarks"]
    mesh = read_mesh(phantom_dir / "surface.vtp")
    assert mesh.n_cells > 0 and "labels" in mesh.cell_data
    assert not [p for p in phantom_dir.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_same_seed_writes_the_same_phantom(phantom_dir, tmp_path):
    res = runner.invoke(app, ["phantom", "uterus", str(tmp_path / "again"), "--seed", "4", "--spacing", "1.5"])
    assert res.exit_code == 0, res.output
    a = read_volume(phantom_dir / "labels.nii.gz").array
    b = read_volume(tmp_path / "again" / "labels.nii.gz").array
    assert np.array_equal(a, b)


@pytest.mark.parametrize("ext", [".seq.nrrd", ".igs.mha"])
def test_simulate_sweep_round_trip(phantom_dir, tmp_path, ext):
    out = tmp_path / f"sag{ext}"
    res = runner.invoke(app, ["simulate", "sweep", str(phantom_dir), str(out), "--frames", "6", "--size", "48",
                              "--jitter", "0.5", "--seed", "2"])
    assert res.exit_code == 0, res.output
    truth = tmp_path / "sag_truth.nii.gz"
    assert out.is_file() and truth.is_file()
    assert str(truth) in res.output
    sweep = read_sweep(out)
    assert sweep.frames.shape == (6, 48, 48) and sweep.has_poses and sweep.sector is not None
    assert np.allclose(sweep.frames.max(), 1.0, atol=0.02)
    # The true poses come back: the angles in meta match the rotation between frames 0 and 5.
    angles = np.array(sweep.meta["sweep"]["angles_deg"])
    R0 = sweep.image_to_world[0, :3, :3] / np.linalg.norm(sweep.image_to_world[0, :3, :3], axis=0)
    R5 = sweep.image_to_world[5, :3, :3] / np.linalg.norm(sweep.image_to_world[5, :3, :3], axis=0)
    rel = np.degrees(np.arccos(np.clip((np.trace(R5 @ R0.T) - 1) / 2, -1, 1)))
    assert rel == pytest.approx(abs(angles[5] - angles[0]), abs=1e-3)
    assert 90 < rel < 150
    assert set(np.unique(read_volume(truth).array).tolist()) == {0.0, 0.5, 1.0}


def test_simulate_bmode_transversal(phantom_dir, tmp_path):
    out = tmp_path / "tr.seq.nrrd"
    res = runner.invoke(app, ["simulate", "sweep", str(phantom_dir), str(out), "--direction", "transversal",
                              "--appearance", "bmode", "--frames", "3", "--size", "40", "--span", "60"])
    assert res.exit_code == 0, res.output
    sweep = read_sweep(out)
    assert sweep.frames.shape == (3, 40, 40) and 0 <= sweep.frames.min() and sweep.frames.max() <= 1
    assert np.allclose(read_volume(tmp_path / "tr_truth.nii.gz").array,
                       read_volume(phantom_dir / "bmode.nii.gz").array)


@pytest.mark.parametrize("args, words", [
    (["--frames", "1"], "at least 2 frames"),
    (["--frames", "0"], "at least 2 frames"),
    (["--span", "0"], "span"),
    (["--direction", "coronal"], "direction"),
    (["--appearance", "ct"], "appearance"),
])
def test_simulate_bad_options(phantom_dir, tmp_path, args, words):
    out = tmp_path / "bad.seq.nrrd"
    line = one_line_error(runner.invoke(app, ["simulate", "sweep", str(phantom_dir), str(out), *args]))
    assert words in line
    assert not list(tmp_path.iterdir())


def test_simulate_from_a_folder_without_phantom_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "labels.nii.gz").write_bytes(b"")
    line = one_line_error(runner.invoke(app, ["simulate", "sweep", str(empty), str(tmp_path / "x.seq.nrrd")]))
    assert "bmode.nii.gz" in line and "phantom.json" in line
    line = one_line_error(runner.invoke(app, ["simulate", "sweep", str(tmp_path / "nowhere"), str(tmp_path / "x.seq.nrrd")]))
    assert "nowhere" in line
    assert not (tmp_path / "x.seq.nrrd").exists()


def test_simulate_to_an_unknown_extension(phantom_dir, tmp_path):
    line = one_line_error(runner.invoke(app, ["simulate", "sweep", str(phantom_dir), str(tmp_path / "x.docx")]))
    assert ".docx" in line
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("spacing", ["0", "-1.5"])
def test_phantom_bad_spacing(tmp_path, spacing):
    line = one_line_error(runner.invoke(app, ["phantom", "uterus", str(tmp_path / "p"), "--spacing", spacing]))
    assert "spacing" in line
    assert not (tmp_path / "p").exists()
