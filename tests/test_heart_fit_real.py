"""``sono3d heart fit-real``: reading real beats, capping, fitting; and the AHA rule on CardioMesh."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.errors import InputError
from sono3d.geometry.mesh import signed_volume_triangles
from sono3d.heart.fit_real import boundary_loops, cap_holes, capped_volume_ml, find_real_beat, fit_real, read_real_beat
from sono3d.heart.segments import aha_segments, wall_landmarks
from sono3d.io import write_mesh
from sono3d.phantoms.heart import HeartShape, Placement, heart_topology
from sono3d.phantoms.heart_motion import BeatParams, physiological_beat

from conftest import SHARED_DATA, one_line_error, open_endocardium, polydata, shared_file, write_lv_beat

runner = CliRunner()
BIVME = SHARED_DATA / "hearts" / "bivme" / "patient1"


def test_capping_an_open_cup_gives_the_cavity_volume() -> None:
    topo = heart_topology()
    pts = physiological_beat(HeartShape(), Placement(angles_deg=(7.0, -5.0, 20.0)), BeatParams()).ed.points
    endo = pts[topo.lv_endo_points]
    open_f, _ = open_endocardium()
    loops = boundary_loops(open_f)
    assert len(loops) == 1 and len(loops[0]) == 40
    p, f = cap_holes(endo, open_f)
    assert len(p) == len(endo) + 1 and not boundary_loops(f)
    expected = signed_volume_triangles(pts, topo.lv_cavity_faces)  # the template's own flat cap
    assert signed_volume_triangles(p, f) == pytest.approx(expected, rel=1e-6)
    assert capped_volume_ml(polydata(endo, open_f)) == pytest.approx(expected / 1000.0, rel=1e-6)


def test_surfaces_that_cannot_be_closed() -> None:
    # two triangles sharing only a vertex: two holes touch there
    bowtie = np.array([[0, 1, 2], [0, 3, 4]])
    with pytest.raises(InputError, match="touch"):
        boundary_loops(bowtie)
    with pytest.raises(InputError, match="non-manifold"):
        boundary_loops(np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]]))
    pts = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(InputError, match="cannot be closed"):
        capped_volume_ml(polydata(pts, bowtie))


def test_fit_real_cli_on_a_synthetic_lv_beat(tmp_path: Path) -> None:
    src = tmp_path / "beat"
    vols = write_lv_beat(src)
    phases, paths = find_real_beat(src)
    assert phases == ["000", "001"] and set(paths) == {"lv_endo"}
    out = tmp_path / "fit"
    r = runner.invoke(app, ["heart", "fit-real", str(src), str(out), "--no-figures"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    rep = json.loads((out / "report.json").read_text())
    assert rep["ef_direct"] == pytest.approx(100 * (1 - vols[1] / vols[0]), rel=1e-6)
    assert abs(rep["ef_fitted"] - rep["ef_direct"]) < 2.0
    assert rep["max_volume_error_pct"] < 3.0 and max(rep["chamfer_mm"]) < 1.5
    assert summary["max_volume_error_pct"] == rep["max_volume_error_pct"]
    assert rep["gls_pct"] == pytest.approx(-18.0, abs=3.0)  # the fitted template's own material lines
    assert {"fitted_000.vtp", "fitted_001.vtp", "volumes.csv", "report.json"} <= {p.name for p in out.iterdir()}
    lines = (out / "volumes.csv").read_text().splitlines()
    assert lines[0].startswith("phase,lv_fitted_ml,lv_real_ml") and len(lines) == 3
    # the fitted meshes are in the template's order: the strain command reads them
    r = runner.invoke(app, ["heart", "strain", str(out / "fitted_000.vtp"), str(out / "fitted_001.vtp"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["gls_pct"] == pytest.approx(rep["gls_pct"], abs=1e-3)


def test_fit_real_bad_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing")
    one_line_error(runner.invoke(app, ["heart", "fit-real", str(empty), str(tmp_path / "o1")]), "no recognised meshes")
    assert not (tmp_path / "o1").exists()
    src = tmp_path / "beat"
    write_lv_beat(src)
    import pyvista as pv

    small = pv.Sphere().extract_cells(range(100)).extract_surface(algorithm="dataset_surface")
    write_mesh(src / "case_LV_ENDOCARDIAL_001.vtk", small)
    one_line_error(runner.invoke(app, ["heart", "fit-real", str(src), str(tmp_path / "o2")]), "vertex counts")
    nan_src = tmp_path / "nan"
    write_lv_beat(nan_src)
    m = pv.read(str(nan_src / "case_LV_ENDOCARDIAL_001.vtk"))
    pts = np.asarray(m.points).copy()
    pts[3] = np.nan
    m.points = pts
    m.save(str(nan_src / "case_LV_ENDOCARDIAL_001.vtk"))
    one_line_error(runner.invoke(app, ["heart", "fit-real", str(nan_src), str(tmp_path / "o3")]), "NaN")
    # an LV whose two holes touch at a vertex cannot be closed
    bow = tmp_path / "bow"
    bow.mkdir()
    p = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], float)
    for k in range(2):
        write_mesh(bow / f"x_LV_ENDOCARDIAL_{k:03d}.vtk", polydata(p * (1 + k), np.array([[0, 1, 2], [0, 3, 4]])))
    one_line_error(runner.invoke(app, ["heart", "fit-real", str(bow), str(tmp_path / "o4")]), "cannot be closed")
    listing = tmp_path / "list.txt"
    listing.write_text("beat/case_LV_ENDOCARDIAL_000.vtk\nbeat/missing.vtk\n")
    one_line_error(runner.invoke(app, ["heart", "fit-real", str(listing), str(tmp_path / "o5")]), "missing.vtk")


@pytest.mark.shared
def test_bivme_reading_capping_and_a_two_phase_fit(tmp_path: Path) -> None:
    shared_file("hearts/bivme/patient1/patient1_LV_ENDOCARDIAL_024.vtk")
    beat = read_real_beat(BIVME)
    assert len(beat.phases) == 25 and set(beat.surfaces) == {"lv_endo", "rv_endo", "epi"}
    lv = beat.surfaces["lv_endo"][24]
    assert len(boundary_loops(np.asarray(lv.faces).reshape(-1, 4)[:, 1:])) == 2  # mitral and aortic openings
    v_ed, v_es = capped_volume_ml(lv), capped_volume_ml(beat.surfaces["lv_endo"][9])
    assert v_ed == pytest.approx(179.0, abs=0.5) and v_es == pytest.approx(72.0, abs=0.5)
    two = tmp_path / "two"
    two.mkdir()
    for ph in ("009", "024"):
        for s in ("LV_ENDOCARDIAL", "RV_ENDOCARDIAL", "EPICARDIAL"):
            shutil.copy(BIVME / f"patient1_{s}_{ph}.vtk", two)
    res = fit_real(two, tmp_path / "out")
    rep = res.report
    assert rep["ed_phase"] == "024" and rep["es_phase"] == "009"
    assert rep["max_volume_error_pct"] < 3.0
    assert abs(rep["ef_fitted"] - rep["ef_direct"]) < 2.0
    assert max(rep["chamfer_mm"]) < 1.5
    assert -30.0 < rep["gls_pct"] < -10.0


@pytest.mark.shared
def test_aha_rule_agrees_with_cardiomesh() -> None:
    import pyvista as pv

    aha_mesh = pv.read(str(shared_file("hearts/cardiomesh/LV_4396_vertices_with_aha_segments.vtk")))
    wall_mesh = pv.read(str(shared_file("hearts/cardiomesh/LV_4396_vertices_with_epi_endo.vtk")))
    truth = np.asarray(aha_mesh.point_data["subpartID"]).astype(int)
    wall = np.asarray(wall_mesh.point_data["subpartID"]).astype(int) > 0  # endo/epi vs the base region
    p = np.asarray(aha_mesh.points, dtype=np.float64)
    faces = np.asarray(aha_mesh.cells).reshape(-1, 4)[:, 1:]
    apex, base, axis = wall_landmarks(p, faces, wall)
    lab = truth > 0
    # the mesh's axes are the patient's (LPS): the septum faces the patient's right (-x), anterior is -y
    got = aha_segments(p[lab], apex, base, np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]), axis=axis)
    assert np.mean(got == truth[lab]) >= 0.85
