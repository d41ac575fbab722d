"""``sono3d heart views`` through the CLI: fake screens, the real recordings in ../shared, bad input."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import one_line_error, shared_file
from echo_screens import fake_screen
from sono3d.cli import app
from sono3d.simulate.echo_views import VIEW_NAMES

runner = CliRunner()


def _screen(path, seed=0, **kw):
    rgb, fit = fake_screen(rng=np.random.default_rng(seed), **kw)
    iio.imwrite(path, rgb[0])
    return fit


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_subset_of_stills(tmp_path):
    _screen(tmp_path / "a4c.png", 0)
    _screen(tmp_path / "mid.png", 1, angle_deg=70.0)
    out = tmp_path / "v" / "views.npz"
    res = runner.invoke(app, ["heart", "views", str(out), "--a4c", str(tmp_path / "a4c.png"),
                              "--sax-mid", str(tmp_path / "mid.png"), "--size", "48", "--depth-mm", "a4c=150"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["present"] == ["a4c", "sax_mid"] and summary["phases"] == ["still"]
    assert summary["views"]["a4c"]["pixel_source"] == "depth option"
    assert "sax_mid" in res.stderr and "160 mm assumed" in res.stderr  # the guessed scale is said
    z = _load(out)
    assert z["echo"].shape == (1, 6, 48, 48) and z["echo"].dtype == np.float32
    assert z["present"].tolist() == [True, False, False, False, True, False]
    assert np.ptp(z["echo"][0, 0]) > 0.3 and np.ptp(z["echo"][0, 1]) == 0  # given vs missing
    assert list(z["view_names"]) == list(VIEW_NAMES) and list(z["phase_names"]) == ["still"]
    assert z["frames"].tolist() == [[0, -1, -1, -1, 0, -1]]
    assert z["coverage"][0].sum() > 0 and not z["coverage"][1].any()
    rec = json.loads(str(z["source"][0]))
    assert rec["file"].endswith("a4c.png") and rec["frames_used"] == [0]
    assert abs(rec["sector"]["angle_deg"] - 76.0) < 1 and json.loads(str(z["source"][1])) == {}
    assert (out.parent / "views.png").stat().st_size > 1000
    assert sorted(p.name for p in out.parent.iterdir()) == ["views.npz", "views.png"]


def test_loop_gives_two_phases(tmp_path):
    rgb, _ = fake_screen(rng=np.random.default_rng(0), frames=4)
    np.savez(tmp_path / "loop.npz", frames=rgb)
    _screen(tmp_path / "a2c.png", 2)
    out = tmp_path / "views.npz"
    res = runner.invoke(app, ["heart", "views", str(out), "--a4c", str(tmp_path / "loop.npz"),
                              "--a2c", str(tmp_path / "a2c.png"), "--size", "32", "--no-figure",
                              "--ed-frame", "1", "--es-frame", "3"])
    assert res.exit_code == 0, res.output
    z = _load(out)
    assert z["echo"].shape == (2, 6, 32, 32) and list(z["phase_names"]) == ["ed", "es"]
    assert z["frames"][:, 0].tolist() == [1, 3] and z["frames"][:, 1].tolist() == [0, 0]
    assert "a2c.png is a still image: used for both ED and ES" in res.stderr
    assert not (tmp_path / "views.png").exists()


def test_bad_inputs(tmp_path):
    _screen(tmp_path / "a4c.png", 0)
    out = str(tmp_path / "views.npz")
    good = ["--a4c", str(tmp_path / "a4c.png")]

    def fails(args, *words):
        res = runner.invoke(app, ["heart", "views", out, *args])
        one_line_error(res, *words)
        assert not (tmp_path / "views.npz").exists() and not (tmp_path / "views.png").exists()

    fails([], "no views given")
    fails(["--a2c", str(tmp_path / "missing.png")], "a2c", "missing.png", "no such file")
    (tmp_path / "notes.txt").write_text("hello")
    fails(["--a3c", str(tmp_path / "notes.txt")], "a3c", "notes.txt", "not an echo image, DICOM or video")
    fails([*good, "--a2c", str(tmp_path / "a4c.png")], "a2c", "same file as a4c")
    iio.imwrite(tmp_path / "black.png", np.zeros((300, 400), np.uint8))
    fails(["--a2c", str(tmp_path / "black.png")], "a2c", "black.png", "no imaging sector found")
    rng = np.random.default_rng(0)
    from scipy import ndimage as ndi

    photo = np.stack([ndi.gaussian_filter(rng.normal(size=(300, 400)), 20) for _ in range(3)], -1)
    photo = ((photo - photo.min()) / np.ptp(photo) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "photo.jpg", photo)
    fails(["--sax-basal", str(tmp_path / "photo.jpg")], "sax_basal", "photo.jpg", "no imaging sector found")
    rgb, _ = fake_screen(rng=rng, frames=3)
    np.savez(tmp_path / "loop.npz", frames=rgb)
    fails(["--a4c", str(tmp_path / "loop.npz"), "--ed-frame", "7"], "a4c", "loop.npz", "ED frame 7 is out of range")
    np.savez(tmp_path / "pickled.npz", frames=np.array([{"a": 1}], dtype=object))
    fails(["--a4c", str(tmp_path / "pickled.npz")], "a4c", "pickled.npz", "pickled Python objects", "expected")
    fails([*good, "--depth-mm", "a5c=100"], "--depth-mm", "unknown view")
    fails([*good, "--depth-mm", "-3"], "--depth-mm")
    res = runner.invoke(app, ["heart", "views", str(tmp_path / "views.txt"), *good])
    one_line_error(res, "must end in .npz")


def test_colour_doppler_warns(tmp_path):
    rgb, _ = fake_screen(rng=np.random.default_rng(4))
    img = rgb[0].copy()
    img[150:190, 170:230] = (30, 60, 230)
    iio.imwrite(tmp_path / "flow.png", img)
    res = runner.invoke(app, ["heart", "views", str(tmp_path / "views.npz"), "--a4c", str(tmp_path / "flow.png"),
                              "--size", "32", "--no-figure"])
    assert res.exit_code == 0, res.output
    assert "warning: a4c: flow.png: colour Doppler inside the sector" in res.stderr
    assert json.loads(str(_load(tmp_path / "views.npz")["source"][0]))["colour_doppler"] is True


@pytest.mark.shared
def test_real_tte47_stills(tmp_path):
    args = []
    for v in VIEW_NAMES:
        args += [f"--{v.replace('_', '-')}", str(shared_file(f"echo/tte47/{v}.png"))]
    out = tmp_path / "views.npz"
    res = runner.invoke(app, ["heart", "views", str(out), *args, "--size", "64",
                              "--depth-mm", "a4c=150,a2c=190,a3c=170,sax_basal=140,sax_mid=150,sax_apical=150"])
    assert res.exit_code == 0, res.output
    z = _load(out)
    assert z["echo"].shape == (1, 6, 64, 64) and z["present"].all()
    for j, v in enumerate(VIEW_NAMES):
        rec = json.loads(str(z["source"][j]))
        assert rec["pixel_source"] == "depth option" and 0.25 < rec["pixel_mm"] < 0.45
        assert rec["coverage"] > 0.6  # most of the cohort's fan holds image data
        assert z["echo"][0, j][z["coverage"][j]].mean() > 0.05
    assert (tmp_path / "views.png").is_file()


@pytest.mark.shared
@pytest.mark.slow
def test_real_apical_loop(tmp_path):
    out = tmp_path / "views.npz"
    res = runner.invoke(app, ["heart", "views", str(out), "--a4c", str(shared_file("echo/clips/echotracker_apical.mp4")),
                              "--size", "64"])
    assert res.exit_code == 0, res.output
    z = _load(out)
    assert z["echo"].shape == (2, 6, 64, 64) and z["present"].tolist() == [True] + [False] * 5
    rec = json.loads(str(z["source"][0]))
    ed, es = rec["frames_used"]
    assert rec["frames"] == 68 and rec["lv_area_mm2"][ed] > rec["lv_area_mm2"][es]
    assert rec["sector"]["clipped"] and rec["sector"]["apex_px"][1] < 0  # the capture cuts the fan's top
