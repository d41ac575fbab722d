"""``sono3d heart train | predict | evaluate`` on a tiny cohort, and their bad-input errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.heart.cohort import generate_cohort, read_manifest

from conftest import one_line_error

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("s2m")
    cohort = root / "cohort"
    generate_cohort(cohort, 4, seed=5, size=64)
    out = {"cohort": cohort, "root": root}
    for kind in ("s2mnet", "voxel"):
        run = root / f"run_{kind}"
        res = runner.invoke(app, ["heart", "train", str(cohort), str(run), "--model", kind, "--config", "tiny",
                                  "--epochs", "1", "--seed", "2", "--no-progress"])
        assert res.exit_code == 0, res.output
        info = json.loads(res.output.strip().splitlines()[-1])
        assert info["epochs_done"] == 1 and info["kind"] == kind
        out[kind] = run
    return out


def test_predict_writes_meshes_and_volumes(runs, tmp_path):
    views = runs["cohort"] / "cases" / "00001" / "views.npz"
    res = runner.invoke(app, ["heart", "predict", str(runs["s2mnet"]), str(views), str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "p" / "report.json").read_text())
    assert rep["frame"] == "world" and rep["views"] == str(views)  # recorded for a later `sono3d report`
    assert rep["lv_edv_ml"] > 0 and rep["lv_esv_ml"] > 0
    assert rep["ef"] == pytest.approx((rep["lv_edv_ml"] - rep["lv_esv_ml"]) / rep["lv_edv_ml"] * 100)
    from sono3d.heart.strain import global_strains_pct, read_template_points

    gls, gcs = global_strains_pct(*(read_template_points(tmp_path / "p" / f"heart_{ph}.vtp") for ph in ("ed", "es")))
    assert rep["gls_pct"] == pytest.approx(gls, abs=1e-3) and rep["gcs_pct"] == pytest.approx(gcs, abs=1e-3)
    import pyvista as pv

    truth = pv.read(str(runs["cohort"] / "cases" / "00001" / "ed.vtp"))
    mesh = pv.read(str(tmp_path / "p" / "heart_ed.vtp"))
    assert (tmp_path / "p" / "heart_es.vtp").is_file()
    assert mesh.n_points == truth.n_points
    assert np.array_equal(mesh.cell_data["elemTag"], truth.cell_data["elemTag"])
    # one phase only: an ED mesh and its volume, no EF
    with np.load(views) as z:
        np.savez(tmp_path / "one.npz", echo=z["echo"][0])
    res = runner.invoke(app, ["heart", "predict", str(runs["s2mnet"]), str(tmp_path / "one.npz"), str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "q" / "report.json").read_text())
    assert rep["frame"] == "echo" and "ef" not in rep and not (tmp_path / "q" / "heart_es.vtp").exists()


def test_predict_bad_input(runs, tmp_path):
    with np.load(runs["cohort"] / "cases" / "00000" / "views.npz") as z:
        echo = z["echo"]
    np.savez(tmp_path / "five.npz", echo=echo[:, :5])
    nan = echo.copy()
    nan[0, 2, 5, 5] = np.nan
    np.savez(tmp_path / "nan.npz", echo=nan)
    blank = echo.copy()
    blank[1, 4] = 0
    np.savez(tmp_path / "blank.npz", echo=blank)
    missing = echo.copy()
    missing[:, 4] = 0
    np.savez(tmp_path / "missing.npz", echo=missing)
    run = str(runs["s2mnet"])
    cases = [
        ([run, str(tmp_path / "five.npz")], "shape"),
        ([run, str(tmp_path / "nan.npz")], "NaN"),
        ([run, str(tmp_path / "blank.npz")], "blank in phase es but not in the other"),
        ([run, str(tmp_path / "missing.npz")], "trained with all six views"),
        ([run, str(tmp_path / "absent.npz")], "no such views file"),
        ([str(tmp_path), str(tmp_path / "five.npz")], "no checkpoint.pt"),
        ([str(runs["voxel"]), str(runs["cohort"] / "cases" / "00000" / "views.npz")], "'voxel' model"),
    ]
    for args, msg in cases:
        out = tmp_path / "out"
        line = one_line_error(runner.invoke(app, ["heart", "predict", *args, str(out)]))
        assert msg in line, line
        assert not out.exists()  # nothing half-written


def test_evaluate_against_the_voxel_baseline(runs, tmp_path):
    out = tmp_path / "ev"
    res = runner.invoke(app, ["heart", "evaluate", str(runs["s2mnet"]), str(runs["cohort"]), str(out), "--split", "train",
                              "--baseline", str(runs["voxel"]), "--resolution", "32"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    for key in ("iou128", "vertex_mse", "chamfer_mm", "ef_mae", "ef_pearson", "baseline"):
        assert key in rep, key
    assert 0 <= rep["iou128"]["median"] <= 1 and rep["vertex_mse"] > 0
    assert 0 <= rep["baseline"]["iou128"]["median"] <= 1 and rep["baseline"]["ef_mae"] is not None
    assert (out / "ef_bland_altman.png").is_file() and (out / "iou_box.png").is_file()
    st = rep["strain"]
    assert st["gls_mae"] >= 0 and st["gcs_mae"] >= 0 and "ef_gls_pearson_pred" in st
    rows = list(csv.DictReader(open(out / "cases.csv", newline="")))
    truth = {r["id"]: r for r in read_manifest(runs["cohort"])}
    assert all(float(r["gls_true"]) == pytest.approx(truth[r["id"]]["gls_pct"], abs=1e-4) for r in rows)
    assert st["gls_mae"] == pytest.approx(np.mean([abs(float(r["gls_s2mnet"]) - float(r["gls_true"])) for r in rows]),
                                          rel=1e-3)
    # the baseline must be a voxel run, and the main run an s2mnet one
    line = one_line_error(runner.invoke(app, ["heart", "evaluate", str(runs["s2mnet"]), str(runs["cohort"]),
                                               str(tmp_path / "e2"), "--baseline", str(runs["s2mnet"])]))
    assert "'voxel' run is needed" in line
    line = one_line_error(runner.invoke(app, ["heart", "evaluate", str(runs["voxel"]), str(runs["cohort"]),
                                               str(tmp_path / "e3")]))
    assert "'s2mnet' run is needed" in line


def test_checkpoint_of_another_architecture_is_refused(runs, tmp_path):
    import shutil

    import torch

    views = str(runs["cohort"] / "cases" / "00000" / "views.npz")
    for change, msg in (({"global_code": 0}, "weights do not fit"), ({"hidden_size": 3}, "cannot build")):
        run = tmp_path / f"run_{next(iter(change))}"
        shutil.copytree(runs["s2mnet"], run)
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        state["net"].update(change)
        torch.save(state, run / "checkpoint.pt")
        out = tmp_path / "out"
        line = one_line_error(runner.invoke(app, ["heart", "predict", str(run), views, str(out)]))
        assert msg in line, line
        assert not out.exists()
