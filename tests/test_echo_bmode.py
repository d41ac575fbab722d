"""Physics B-mode heart views (``heart cohort --appearance bmode``): contrast, speckle statistics,
speckle fixed in tissue, and the cohort flag."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.geometry.sector import sector_for_probe
from sono3d.heart.cohort import generate_case
from sono3d.simulate.echo_bmode import (HeartEchoParams, bmode_view, bmode_views, lattice_normal,
                                        tissue_coordinates, value_noise)

from conftest import one_line_error

runner = CliRunner()


@pytest.fixture(scope="module")
def case64():
    return generate_case(0, 0, 64)


def _sector(views, j: int, size: int):
    s = float(views["spacing_mm"][j])
    return sector_for_probe((size, size), (s, s), float(views["opening_deg"][j]), float(views["depth_mm"][j])), s


def test_blood_pool_darker_than_myocardium(case64):
    v = case64["views"]
    echo = bmode_views(v, seed=3, points=[case64["points"]["ed"], case64["points"]["es"]],
                       rng=np.random.default_rng(3))
    assert echo.shape == v["labels"].shape and echo.dtype == np.float32
    assert 0.0 <= echo.min() and echo.max() <= 1.0
    for p in range(2):
        for j in (0, 1, 4):  # A4C, A2C, mid short axis
            lab = v["labels"][p, j]
            blood = ndimage.binary_erosion(lab == 25, iterations=1)
            myo = lab == 1
            assert blood.sum() > 10 and myo.sum() > 10
            assert echo[p, j][blood].mean() + 0.15 < echo[p, j][myo].mean()
    # nothing outside the fan
    assert np.all(echo[v["labels"] == 0][:10] >= 0)
    s = float(v["spacing_mm"][0])
    from sono3d.geometry.sector import sector_mask

    outside = ~sector_mask(_sector(v, 0, 64)[0], (64, 64), (s, s))
    assert np.all(echo[:, 0][:, outside] == 0)


def test_blood_envelope_is_rayleigh():
    """Blood is many weak scatterers: its envelope is Rayleigh, mean/std = sqrt(pi/(4-pi)) = 1.913."""
    case = generate_case(0, 0, 128)
    v = case["views"]
    # stationary settings: exact time-gain compensation, no clutter, haze or steering loss
    params = replace(HeartEchoParams(), tgc=1.0, clutter=0.0, haze=0.0, steering_power=0.0, noise_db=-120.0)
    sector, s = _sector(v, 0, 128)
    vals = []
    for seed in range(3):
        env = bmode_view(v["labels"][:1, 0], v["poses"][:1, 0], sector, s, params, seed, return_envelope=True)
        blood = ndimage.binary_erosion(v["labels"][0, 0] == 25, iterations=5)
        vals.append(env[0][blood])
    e = np.concatenate(vals)
    assert len(e) > 1000
    assert abs(e.mean() / e.std() - np.sqrt(np.pi / (4 - np.pi))) < 0.12


def test_speckle_moves_with_the_tissue(case64):
    """Tissue translated with the image plane keeps its speckle; another seed does not."""
    v = case64["views"]
    ref = case64["points"]["ed"].astype(np.float64)
    t = np.array([4.0, -3.0, 2.0])
    poses = np.stack([v["poses"][0, 0], v["poses"][0, 0]])
    poses[1, :3, 3] += t
    labels = np.ones((2, 64, 64), dtype=np.uint8)  # uniform myocardium: only speckle varies
    sector, s = _sector(v, 0, 64)
    params = replace(HeartEchoParams(), strong_fraction=0.0)
    # the whole field moves with the mesh (no fading away from it)
    tissue = [lambda x: tissue_coordinates(x, ref, ref, inner_mm=1e4),
              lambda x: tissue_coordinates(x, ref + t, ref, inner_mm=1e4)]
    img = bmode_view(labels, poses, sector, s, params, 11, tissue, return_envelope=True)
    fixed = bmode_view(labels, poses, sector, s, params, 11, None, return_envelope=True)
    other = bmode_view(labels[:1], poses[:1], sector, s, params, 12, return_envelope=True)
    fan = img[0] > 0
    assert np.corrcoef(img[0][fan], img[1][fan])[0, 1] > 0.99
    assert np.corrcoef(img[0][fan], other[0][fan])[0, 1] < 0.3
    # without the tissue map the speckle stays in space: the moved plane sees other scatterers
    assert np.corrcoef(fixed[0][fan], fixed[1][fan])[0, 1] < 0.5
    # ED is the reference: its tissue coordinates are its world coordinates
    x = np.random.default_rng(0).uniform(-50, 50, (100, 3))
    assert np.array_equal(tissue_coordinates(x, ref, ref), x)
    moved = tissue_coordinates(x, ref + t, ref)
    assert np.all(np.linalg.norm(moved - x, axis=1) <= np.linalg.norm(t) + 1e-9)


def test_hashed_fields():
    rng = np.random.default_rng(0)
    x = rng.uniform(-100, 100, (20000, 3))
    n, u = lattice_normal(x, 0.2, 5)
    assert abs(n.mean()) < 0.03 and abs(n.std() - 1) < 0.03 and 0.45 < u.mean() < 0.55
    n2, _ = lattice_normal(x + 0.01, 0.2, 5)  # same cell mostly: same value
    assert np.mean(n2 == n) > 0.8
    vn = value_noise(x, 9.0, 1)
    assert abs(vn.std() - 1) < 0.1
    near = value_noise(x + 0.5, 9.0, 1)  # smooth: half a millimetre changes little
    assert np.corrcoef(vn, near)[0, 1] > 0.95


def test_sampled_settings_and_pseudo_unchanged():
    a = HeartEchoParams.sample(np.random.default_rng(1))
    b = HeartEchoParams.sample(np.random.default_rng(2))
    assert a != b
    for name, (lo, hi) in HeartEchoParams.RANGES.items():
        assert lo <= getattr(a, name) <= hi
    with pytest.raises(Exception, match="blood"):
        HeartEchoParams(blood=-1.0)
    pseudo = generate_case(4, 2, 32)
    bm = generate_case(4, 2, 32, appearance="bmode")
    # the same hearts, views and labels; only the echo differs
    assert np.array_equal(pseudo["views"]["labels"], bm["views"]["labels"])
    assert np.array_equal(pseudo["points"]["es"], bm["points"]["es"])
    assert not np.allclose(pseudo["views"]["echo"], bm["views"]["echo"])


def test_cli_cohort_appearance(tmp_path):
    out = tmp_path / "c"
    res = runner.invoke(app, ["heart", "cohort", str(out), "--n", "1", "--size", "32", "--appearance", "bmode",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "cohort.json").read_text())["appearance"] == "bmode"
    res = runner.invoke(app, ["heart", "cohort", str(out), "--n", "2", "--size", "32", "--no-progress"])
    one_line_error(res, "appearance bmode")
    res = runner.invoke(app, ["heart", "cohort", str(tmp_path / "d"), "--n", "1", "--size", "32",
                              "--appearance", "photo", "--no-progress"])
    one_line_error(res, "photo")
