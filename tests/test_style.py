"""The domain bridge: CycleGAN networks and training, translation, the gap test, and the CLI.

Bad inputs of ``style train | apply | gap`` are in the catalogue (tests/test_bad_inputs.py); the
kill-and-resume of ``style train`` in tests/test_reliability.py.
"""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.errors import InputError
from sono3d.heart.cohort import generate_cohort
from sono3d.style.cyclegan import (CycleGAN, Domain, ImagePool, StyleConfig, cycle_losses, load_style_run,
                                   train_cyclegan, translate)
from sono3d.style.data import views_masks
from sono3d.style.gap import domain_gap, roc_auc
from sono3d.style.networks import PatchGAN, ResnetGenerator, receptive_field

from conftest import one_line_error, shared_file

runner = CliRunner()
TINY = StyleConfig.preset("tiny")


def _fan(n: int, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    m = (np.hypot(yy, xx - (size - 1) / 2) < size * 0.9) & (np.abs(xx - (size - 1) / 2) < yy * 0.9 + 1)
    return np.broadcast_to(m, (n, size, size)).copy()


def _domains(rng: np.random.Generator, n: int = 6, size: int = 32) -> tuple[Domain, Domain]:
    m = _fan(n, size)
    yy, xx = np.mgrid[:size, :size]
    smooth = np.clip(0.5 + 0.3 * np.sin(xx / 3 + rng.random((n, 1, 1)) * 6), 0, 1).astype(np.float32)
    speck = np.clip(rng.rayleigh(0.3, (n, size, size)), 0, 1).astype(np.float32)
    return (Domain(speck * m, m, [f"r{i}" for i in range(n)]), Domain(smooth * m, m, [f"s{i}" for i in range(n)]))


def test_network_shapes():
    g = ResnetGenerator(1, ngf=8, n_blocks=2)
    x = torch.randn(2, 1, 32, 48)
    y = g(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    d = PatchGAN(1, ndf=8)
    assert d(torch.randn(2, 1, 64, 64)).shape == (2, 1, 6, 6)
    assert d(torch.randn(1, 1, 128, 128)).shape == (1, 1, 14, 14)  # pix2pix's 70x70 PatchGAN at 128 px
    assert receptive_field(3) == 70
    # the paper's generators: six residual blocks at 128 px, nine at 256
    paper = StyleConfig.preset("paper")
    assert (paper.blocks_for(128), paper.blocks_for(256), paper.ngf, paper.ndf) == (6, 9, 64, 64)
    assert sum(type(m).__name__ == "_ResBlock" for m in g.modules()) == 2


def test_one_step_lowers_the_cycle_loss(rng):
    real, syn = _domains(rng, 4)
    torch.manual_seed(0)
    cfg = StyleConfig(ngf=8, ndf=8, n_blocks=2, crop=0, lambda_identity=0.0)
    model = CycleGAN(cfg, 32)
    m = torch.from_numpy(syn.masks[:, None])
    x = torch.where(m, torch.from_numpy(syn.images[:, None]) * 2 - 1, torch.tensor(-1.0))
    y = torch.where(m, torch.from_numpy(real.images[:, None]) * 2 - 1, torch.tensor(-1.0))
    opt = torch.optim.Adam(list(model.g_xy.parameters()) + list(model.g_yx.parameters()), lr=2e-4, betas=(0.5, 0.999))
    before = cycle_losses(model, x, m, y, m, cfg)
    opt.zero_grad()
    before["total"].backward()
    opt.step()
    with torch.no_grad():
        after = cycle_losses(model, x, m, y, m, cfg)
    assert float(after["cycle"]) < float(before["cycle"].detach())
    # only the fan is translated: black (-1) outside it
    assert torch.all(before["fake_y"][~m] == -1)


def test_image_pool_keeps_fifty(rng):
    pool = ImagePool(3)
    seen = [pool.query(torch.full((1, 1, 2, 2), float(i)), rng) for i in range(20)]
    assert len(pool.images) == 3
    assert all(s.shape == (1, 1, 2, 2) for s in seen)
    assert any(float(s[0, 0, 0, 0]) != i for i, s in enumerate(seen))  # older images were returned
    assert StyleConfig.preset("small").pool_size == 50


def test_resume_gives_identical_weights(rng, tmp_path):
    real, syn = _domains(rng)
    full = train_cyclegan(real, syn, tmp_path / "a", TINY, seed=3)
    assert full["epochs_done"] == 2
    train_cyclegan(real, syn, tmp_path / "b", TINY, seed=3, stop_after_epoch=1)
    train_cyclegan(real, syn, tmp_path / "b", None, seed=3, resume=True)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["pool_x"], b["pool_x"])
    # linear decay: the second (last) epoch ran at half the rate
    assert [h["lr"] for h in a["history"]] == pytest.approx([2e-4, 1e-4])
    with pytest.raises(InputError, match="already holds"):
        train_cyclegan(real, syn, tmp_path / "a", TINY)
    other = Domain(real.images[::-1].copy(), real.masks, real.names)
    with pytest.raises(InputError, match="differ"):
        train_cyclegan(other, syn, tmp_path / "b", None, resume=True)


def test_translate_only_inside_the_fan(rng, tmp_path):
    real, syn = _domains(rng)
    train_cyclegan(real, syn, tmp_path / "r", TINY, seed=1)
    run = load_style_run(tmp_path / "r")
    out = translate(run, syn.images, syn.masks, "to-real")
    assert out.shape == syn.images.shape and 0 <= out.min() and out.max() <= 1
    assert np.all(out[~syn.masks] == 0)
    back = translate(run, out, syn.masks, "to-synthetic")
    assert back.shape == out.shape
    with pytest.raises(InputError, match="trained on 32x32"):
        translate(run, np.zeros((1, 64, 64)), np.ones((1, 64, 64), bool))
    with pytest.raises(InputError, match="direction"):
        translate(run, syn.images, syn.masks, "sideways")


def test_views_masks_prefer_the_intake_coverage(rng):
    """A recording may cover less than the target fan: only what holds image data is translated."""
    echo = rng.random((2, 6, 32, 32)).astype(np.float32)
    sectors = {"opening_deg": np.full(6, 75.0), "depth_mm": np.full(6, 150.0), "spacing_mm": np.full(6, 5.0)}
    fans = views_masks({"echo": echo, **sectors})
    assert fans.shape == echo.shape and 0.2 < fans.mean() < 0.9 and not fans[:, :, 0, 0].any()
    coverage = fans[0].copy()
    coverage[:, 20:] = False  # the recording is shallower than the view
    got = views_masks({"echo": echo, **sectors, "coverage": coverage})
    assert np.array_equal(got, np.broadcast_to(coverage, echo.shape))
    filled = views_masks({"echo": echo * fans})  # neither: the non-zero region of each image
    assert (filled & fans).sum() / (filled | fans).sum() > 0.95


def test_gap_separates_different_sets_not_halves(rng):
    yy, xx = np.mgrid[:32, :32]

    def smooth(n: int) -> np.ndarray:
        f = 3 + rng.random((n, 1, 1)) * 3
        return np.clip(0.5 + 0.25 * np.sin(xx[None] / f + rng.random((n, 1, 1)) * 6), 0, 1).astype(np.float32)

    def speckle(n: int) -> np.ndarray:
        return np.clip(rng.rayleigh(0.25, (n, 32, 32)), 0, 1).astype(np.float32)

    diff = domain_gap(speckle(40), smooth(40), size=32, epochs=8, n_boot=300)
    assert diff.auc > 0.95 and diff.n_real == 40 and diff.n_test_synthetic == 40  # every image scored once
    assert diff.split_real == "images"
    a = speckle(80)
    same = domain_gap(a[:40], a[40:], size=32, epochs=8, n_boot=300)
    assert same.auc < 0.65
    assert same.ci95[0] <= same.auc <= same.ci95[1]
    # split by recording: whole groups on each side; patches see local appearance only
    grouped = domain_gap(speckle(40), smooth(40), size=32, epochs=6, n_boot=100, patch=16,
                         real_groups=np.repeat(["a", "b", "c", "d"], 10))
    assert grouped.split_real == "groups" and grouped.split_synthetic == "images" and grouped.auc > 0.95
    assert roc_auc([2.0, 3.0], [1.0, 0.0]) == 1.0 and roc_auc([1.0], [1.0]) == 0.5
    with pytest.raises(InputError, match="at least 4"):
        domain_gap(a[:2], a[2:10])


# --------------------------------------------------------------------------------------------
# Command line: a tiny cohort as the synthetic domain, views files of a B-mode cohort as "real"
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    root = tmp_path_factory.mktemp("style")
    generate_cohort(root / "pseudo", 5, seed=2, size=32)
    generate_cohort(root / "bmode", 3, seed=9, size=32, appearance="bmode")
    real = [root / "bmode" / "cases" / c / "views.npz" for c in ("00000", "00001", "00002")]
    run = root / "run"
    res = runner.invoke(app, ["style", "train", *map(str, real), str(root / "pseudo"), str(run), "--size", "32",
                              "--config", "tiny", "--no-progress"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output.strip().splitlines()[-1])
    assert info["epochs_done"] == 2 and info["n_real"] == 36 and info["n_synthetic"] == 36  # 3 train cases x 12
    return {"root": root, "real": real, "run": run}


def test_cli_apply_views_file(bridge, tmp_path):
    src = bridge["root"] / "pseudo" / "cases" / "00000" / "views.npz"
    out = tmp_path / "t.npz"
    res = runner.invoke(app, ["style", "apply", str(bridge["run"]), str(src), str(out)])
    assert res.exit_code == 0, res.output
    with np.load(src) as a, np.load(out) as b:
        assert b["echo"].shape == a["echo"].shape and np.array_equal(a["labels"], b["labels"])
        assert not np.allclose(a["echo"], b["echo"]) and np.all(b["echo"][a["labels"] == 0][:0] == 0)
        assert str(b["style_direction"]) == "to-real"


def test_cli_gap_json(bridge):
    res = runner.invoke(app, ["style", "gap", *map(str, bridge["real"]), "--synthetic", str(bridge["root"] / "pseudo"),
                              "--split", "all", "--view-size", "32", "--size", "32", "--epochs", "5", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output.strip().splitlines()[-1])
    assert rep["n_real"] == 36 and rep["n_synthetic"] == 60 and 0 <= rep["ci95"][0] <= rep["auc"] <= rep["ci95"][1]
    res = runner.invoke(app, ["style", "gap", *map(str, bridge["real"]), "--synthetic", str(bridge["root"] / "pseudo"),
                              "--style", str(bridge["run"]), "--split", "all", "--view-size", "32", "--size", "32",
                              "--epochs", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["style"]["direction"] == "to-real"


def test_cli_heart_through_the_bridge(bridge, tmp_path):
    cohort = bridge["root"] / "pseudo"
    run = tmp_path / "s2m"
    res = runner.invoke(app, ["heart", "train", str(cohort), str(run), "--config", "tiny", "--epochs", "1",
                              "--no-progress", "--style", str(bridge["run"])])
    assert res.exit_code == 0, res.output
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["extra"]["style"]["direction"] == "to-real"
    res = runner.invoke(app, ["heart", "train", str(cohort), str(run), "--resume", "--epochs", "2", "--no-progress"])
    one_line_error(res, "style run")
    res = runner.invoke(app, ["heart", "predict", str(run), str(bridge["real"][0]), str(tmp_path / "p"),
                              "--style", str(bridge["run"])])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "p" / "report.json").read_text())
    assert rep["style"]["direction"] == "to-synthetic" and rep["lv_edv_ml"] > 0
    res = runner.invoke(app, ["heart", "evaluate", str(run), str(cohort), str(tmp_path / "e"), "--resolution", "16",
                              "--no-figures", "--no-html", "--style", str(bridge["run"])])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "e" / "report.json").read_text())
    assert rep["style"]["direction"] == "to-real" and rep["n_cases"] >= 1


def test_cli_apply_real_image(bridge, tmp_path):
    """A real scanner screen goes through the intake into the run's view geometry, then is translated."""
    png = shared_file("echo/tte47/a4c.png")
    res = runner.invoke(app, ["style", "apply", str(bridge["run"]), str(png), str(tmp_path / "a4c.png"),
                              "--direction", "to-synthetic", "--depth-mm", "150"])
    assert res.exit_code == 0, res.output
    img = iio.imread(tmp_path / "a4c.png")
    assert img.shape == (32, 32) and img.max() > 0 and img[0, 0] == 0  # black outside the fan
    res = runner.invoke(app, ["style", "apply", str(bridge["run"]), str(png), str(tmp_path / "frames.npz")])
    one_line_error(res, "folder")
