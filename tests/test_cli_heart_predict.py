"""``sono3d heart predict`` from recordings, fewer views, the input check and overlays, on a tiny cohort."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.heart.checkpoint import load_run
from sono3d.heart.cohort import generate_cohort, load_case
from sono3d.heart.data import load_cohort_arrays, read_split
from sono3d.heart.input_check import check_views
from sono3d.heart.predict import predict_views
from sono3d.heart.views_intake import cohort_geometry
from sono3d.simulate.echo_views import ViewOptions

from conftest import one_line_error, shared_file
from echo_screens import paste_view

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    cohort = root / "cohort"
    generate_cohort(cohort, 6, seed=11, size=64)
    out = {"cohort": cohort, "root": root}
    for name, extra in (("s2m", ["--view-dropout", "0.5"]), ("pose", ["--model", "pose"])):
        run = root / name
        res = runner.invoke(app, ["heart", "train", str(cohort), str(run), "--config", "tiny", "--epochs", "1",
                                  "--seed", "1", "--no-progress", *extra])
        assert res.exit_code == 0, res.output
        out[name] = run
    return out


class _Payload:
    """Unpickling this creates a file: proof that a views file was never unpickled when it is absent."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _screen(view: np.ndarray, name: str, path) -> None:
    grey, _ = paste_view(view, cohort_geometry(name, ViewOptions(size=64)), (260, 360), (180.3, 24.6), 0.7)
    Image.fromarray(np.round(grey * 255).astype(np.uint8)).save(path)


def test_view_dropout_run_predicts_from_subsets(runs):
    run = load_run(runs["s2m"])
    assert run.net_config.view_presence
    echo = load_case(runs["cohort"], read_split(runs["s2m"])["test"][0]).views["echo"]
    six = predict_views(run, echo)
    two = predict_views(run, echo, np.array([1, 1, 0, 0, 0, 0], bool))
    blanked = echo.copy()
    blanked[:, 2:] = 0.7  # whatever is in a missing view is ignored
    assert np.allclose(predict_views(run, blanked, np.array([1, 1, 0, 0, 0, 0], bool)), two, atol=1e-5)
    assert np.abs(six - two).max() > 1e-3  # the subset is a different input


def test_input_check_flags_noise_grey_and_swaps(runs):
    run = load_run(runs["s2m"])
    stats = run.state["input_check"]
    assert stats["thresholds"].shape == (6,) and stats["precision"].shape[0] == stats["means"].shape[1]
    arr = load_cohort_arrays(runs["cohort"], read_split(runs["s2m"])["train"][:2], 64)
    ok = check_views(run.model, stats, arr.echo[0])
    assert ok["available"] and ok["in_distribution"] and ok["view_order_ok"] and ok["score"] <= 1
    rng = np.random.default_rng(0)
    noise = check_views(run.model, stats, rng.random(arr.echo[0].shape).astype(np.float32))
    grey = check_views(run.model, stats, np.full(arr.echo[0].shape, 0.4, np.float32))
    swapped = check_views(run.model, stats, arr.echo[0][:, [4, 1, 2, 3, 0, 5]])
    assert not noise["in_distribution"] and noise["score"] > 1
    assert not grey["in_distribution"]
    assert not swapped["in_distribution"] and not swapped["view_order_ok"]
    assert swapped["per_view"][0]["predicted_view"] == "sax_mid" and swapped["per_view"][4]["predicted_view"] == "a4c"
    sub = check_views(run.model, stats, arr.echo[0], np.array([1, 0, 0, 0, 0, 1], bool))
    assert sub["per_view"][1]["score"] is None and sub["per_view"][5]["score"] is not None


def test_predict_from_recordings_with_overlay(runs, tmp_path):
    case = load_case(runs["cohort"], "00000")
    paths = {}
    for j, name in ((0, "a4c"), (1, "a2c")):
        paths[name] = tmp_path / f"{name}.png"
        _screen(case.views["echo"][0, j], name, paths[name])
    out = tmp_path / "pred"
    res = runner.invoke(app, ["heart", "predict", str(runs["s2m"]), str(out), "--a4c", str(paths["a4c"]),
                              "--a2c", str(paths["a2c"]), "--pose-run", str(runs["pose"]), "--depth-mm", "175"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["views_given"] == ["a4c", "a2c"] and rep["phases"] == ["still"] and rep["lv_volume_ml"] > 0
    chk = rep["input_check"]
    assert chk["available"] and len(chk["per_view"]) == 6 and chk["per_view"][2]["present"] is False
    assert isinstance(chk["in_distribution"], bool) and isinstance(chk["view_order_ok"], bool)
    assert set(rep["planes"]) == {"a4c", "a2c"}
    grey = rep["overlay_grey"]["a4c"][0]  # pseudo-echo: blood black, walls white
    assert set(rep["overlay_grey"]) == {"a4c", "a2c"} and grey["lv_blood"] < grey["lv_myocardium"]
    for f in ("views.npz", "views.png", "overlay.png", "heart_still.vtp", "report.html"):
        assert (out / f).is_file(), f
    assert rep["seconds"] < 30 and rep["views"].endswith("views.npz")


def test_strict_refuses_noise_and_old_checkpoints_say_the_check_is_unavailable(runs, tmp_path):
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "noise.npz", echo=rng.random((2, 6, 64, 64)).astype(np.float32))
    out = tmp_path / "o"
    line = one_line_error(runner.invoke(app, ["heart", "predict", str(runs["s2m"]), str(out), "--views",
                                              str(tmp_path / "noise.npz"), "--strict"]), "--strict")
    assert "out of the training distribution" in line and not out.exists()
    res = runner.invoke(app, ["heart", "predict", str(runs["s2m"]), str(out), "--views", str(tmp_path / "noise.npz")])
    assert res.exit_code == 0 and "warning: input out of the training distribution" in res.stderr
    old = tmp_path / "old"
    shutil.copytree(runs["s2m"], old)
    state = torch.load(old / "checkpoint.pt", weights_only=True)
    del state["input_check"]
    torch.save(state, old / "checkpoint.pt")
    views = str(runs["cohort"] / "cases" / "00001" / "views.npz")
    res = runner.invoke(app, ["heart", "predict", str(old), views, str(tmp_path / "p")])  # the older positional form
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "p" / "report.json").read_text())
    assert rep["input_check"]["available"] is False and "--resume" in rep["input_check"]["reason"]
    assert "input check unavailable" in res.stderr
    # resuming the finished run adds the statistics without training
    res = runner.invoke(app, ["heart", "train", str(runs["cohort"]), str(old), "--resume", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "input_check" in torch.load(old / "checkpoint.pt", weights_only=True)


def test_predict_usage_errors(runs, tmp_path):
    views = str(runs["cohort"] / "cases" / "00000" / "views.npz")
    s2m, out = str(runs["s2m"]), str(tmp_path / "o")
    marker = tmp_path / "unpickled"
    np.savez(tmp_path / "pickled.npz", echo=np.array([_Payload(marker)], dtype=object))
    line = one_line_error(runner.invoke(app, ["heart", "predict", s2m, out, "--views", str(tmp_path / "pickled.npz")]),
                          "pickled", "expected echo images")
    assert not marker.exists() and not (tmp_path / "o").exists()  # refused without unpickling, nothing written
    for args, msg in (([s2m, out], "no views"), ([s2m, views, out, "--views", views], "once"),
                      ([s2m, out, "--views", views, "--a4c", views], "not both"), ([s2m, views], "is a folder"),
                      ([s2m, out, "--views", views, "--pose-run", s2m], "'pose' run is needed"),
                      ([s2m, "a", "b", out], "expected RUN_DIR")):
        one_line_error(runner.invoke(app, ["heart", "predict", *args]), msg)


def test_evaluate_subsets_and_overlay(runs, tmp_path):
    out = tmp_path / "ev"
    res = runner.invoke(app, ["heart", "evaluate", str(runs["s2m"]), str(runs["cohort"]), str(out), "--views",
                              "a4c,a2c", "--pose-run", str(runs["pose"]), "--resolution", "24", "--no-figures"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["views_given"] == ["a4c", "a2c"]
    assert set(rep["overlay"]["per_view"]) == {"a4c", "a2c"} and 0 <= rep["overlay"]["median_dice"] <= 1
    assert rep["pose"]["per_view"]["a4c"]["angle_deg"] < rep["pose"]["per_view"]["a2c"]["angle_deg"] + 5
    one_line_error(runner.invoke(app, ["heart", "evaluate", str(runs["s2m"]), str(runs["cohort"]), str(out),
                                       "--views", "a4c,plax"]), "plax")


@pytest.mark.slow
def test_real_stills_and_loop_in_one_command(runs, tmp_path):
    tte = {v: shared_file(f"echo/tte47/{v}.png") for v in ("a4c", "a2c", "a3c", "sax_basal", "sax_mid", "sax_apical")}
    loop = shared_file("echo/clips/echotracker_a4c.mp4")
    out = tmp_path / "tte"
    args = [a for v, p in tte.items() for a in (f"--{v.replace('_', '-')}", str(p))]
    res = runner.invoke(app, ["heart", "predict", str(runs["s2m"]), str(out), *args, "--pose-run", str(runs["pose"]),
                              "--depth-mm", "a4c=150,a2c=190,a3c=170,sax_basal=140,sax_mid=150,sax_apical=150"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["lv_volume_ml"] > 0 and len(rep["views_given"]) == 6 and (out / "overlay.png").is_file()
    out = tmp_path / "loop"
    res = runner.invoke(app, ["heart", "predict", str(runs["s2m"]), str(out), "--a4c", str(loop),
                              "--pose-run", str(runs["pose"])])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["phases"] == ["ed", "es"] and rep["views_given"] == ["a4c"] and np.isfinite(rep["ef"])
    with np.load(out / "views.npz") as z:
        src = json.loads(str(z["source"][0]))
    ed, es = src["frames_used"]
    assert src["lv_area_mm2"][ed] > src["lv_area_mm2"][es]  # the chosen ED frame's LV is the larger
