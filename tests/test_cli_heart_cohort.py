"""``sono3d heart cohort`` / ``show-case``, the on-disk cohort, resumption and the real-cohort readers."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.errors import InputError
from sono3d.geometry.mesh import enclosed_volume_mm3, is_watertight
from sono3d.heart.cohort import (
    case_ids,
    generate_cohort,
    load_case,
    read_cohort,
    read_ghdheart,
    read_labelled_mesh,
    read_manifest,
    read_vtk_cohort,
)

from conftest import one_line_error, shared_file

runner = CliRunner()
FILES = ("ed.vtp", "es.vtp", "lv_cavity_ed.vtp", "lv_cavity_es.vtp", "views.npz", "params.json")


def _run(*args: str):
    return runner.invoke(app, ["heart", *args])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "c"
    r = _run("cohort", str(out), "--n", "3", "--seed", "5", "--size", "32", "--no-progress")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output.strip().splitlines()[-1])
    assert info["generated"] == 3 and info["n_cases"] == 3
    return out


def test_cohort_layout_and_manifest(cohort: Path):
    assert case_ids(cohort) == ["00000", "00001", "00002"]
    for cid in case_ids(cohort):
        for f in FILES:
            assert (cohort / "cases" / cid / f).is_file()
    meta = json.loads((cohort / "cohort.json").read_text())
    assert meta["seed"] == 5 and meta["size"] == 32
    with open(cohort / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["00000", "00001", "00002"]
    assert list(rows[0])[0] == "id" and list(rows[0])[-5:] == ["edv_ml", "esv_ml", "ef", "gls_pct", "gcs_pct"]
    assert "lv_sphericity" in rows[0] and "theta_z_deg" in rows[0]
    with np.load(cohort / "cases" / "00001" / "views.npz") as z:
        assert z["labels"].shape == (2, 6, 32, 32) and z["labels"].dtype == np.uint8
        assert z["echo"].shape == (2, 6, 32, 32) and z["echo"].dtype == np.float32
        assert z["poses"].shape == (2, 6, 4, 4)
        assert list(z["view_names"]) == ["a4c", "a2c", "a3c", "sax_basal", "sax_mid", "sax_apical"]


def test_recorded_volumes_equal_the_cavity_meshes(cohort: Path):
    for row in read_manifest(cohort):
        case = load_case(cohort, row["id"])
        assert is_watertight(case.lv_cavity_ed) and is_watertight(case.lv_cavity_es)
        edv = enclosed_volume_mm3(case.lv_cavity_ed) / 1000
        esv = enclosed_volume_mm3(case.lv_cavity_es) / 1000
        assert edv == pytest.approx(row["edv_ml"], rel=1e-12)
        assert esv == pytest.approx(row["esv_ml"], rel=1e-12)
        assert (edv - esv) / edv == pytest.approx(row["ef"], abs=1e-12)
        assert 0.2 - 1e-6 <= row["ef"] <= 0.75 + 1e-6
        assert case.ed.n_points == case.es.n_points
        assert is_watertight(case.ed) and is_watertight(case.es)
        assert np.array_equal(case.ed.cell_data["elemTag"], case.es.cell_data["elemTag"])


def test_same_seed_identical_files_any_workers(cohort: Path, tmp_path: Path):
    """Two workers (spawned) write exactly what one process wrote."""
    other = tmp_path / "again"
    res = generate_cohort(other, 3, seed=5, size=32, workers=2)
    assert res.generated == 3
    for cid in case_ids(cohort):
        a, b = cohort / "cases" / cid, other / "cases" / cid
        for f in ("ed.vtp", "es.vtp", "lv_cavity_ed.vtp", "lv_cavity_es.vtp", "params.json"):
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
        with np.load(a / "views.npz") as za, np.load(b / "views.npz") as zb:
            assert za.files == zb.files
            for k in za.files:
                assert za[k].tobytes() == zb[k].tobytes(), k
    assert (cohort / "manifest.csv").read_bytes() == (other / "manifest.csv").read_bytes()


def test_resume_after_deleting_a_case(tmp_path: Path):
    out = tmp_path / "c"
    generate_cohort(out, 2, seed=9, size=24)
    before = (out / "cases" / "00001" / "views.npz").read_bytes()
    kept = (out / "cases" / "00000" / "ed.vtp").stat().st_mtime_ns
    shutil.rmtree(out / "cases" / "00001")
    (out / "cases" / ".tmp-00001-999").mkdir()  # a half-written case from a killed run
    (out / "cases" / ".tmp-00001-999" / "ed.vtp").write_text("partial")
    r = _run("cohort", str(out), "--n", "2", "--seed", "9", "--size", "24", "--no-progress")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output.strip().splitlines()[-1])
    assert info["generated"] == 1 and info["skipped"] == 1
    assert (out / "cases" / "00000" / "ed.vtp").stat().st_mtime_ns == kept
    assert not list((out / "cases").glob(".tmp-*"))
    with np.load(out / "cases" / "00001" / "views.npz") as z:
        import io

        with np.load(io.BytesIO(before)) as zb:
            for k in zb.files:
                assert np.array_equal(z[k], zb[k]), k
    assert len(read_manifest(out)) == 2


def test_bad_input_one_line_errors(cohort: Path, tmp_path: Path):
    one_line_error(_run("cohort", str(tmp_path / "x"), "--n", "0", "--no-progress"), "--n")
    assert not (tmp_path / "x").exists()
    one_line_error(_run("cohort", str(cohort), "--n", "3", "--seed", "6", "--size", "32", "--no-progress"),
                    "different cohort")
    one_line_error(_run("cohort", str(cohort), "--n", "3", "--seed", "5", "--size", "64", "--no-progress"),
                    "different cohort")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    one_line_error(_run("cohort", str(busy), "--n", "1", "--no-progress"), "not empty")
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    one_line_error(_run("show-case", str(cohort), "99999", str(tmp_path / "f.png")), "99999")
    with pytest.raises(InputError, match="positive"):
        generate_cohort(tmp_path / "y", -2)


def test_non_watertight_cavity_refused(cohort: Path, tmp_path: Path):
    import pyvista as pv

    broken = tmp_path / "broken"
    shutil.copytree(cohort, broken)
    path = broken / "cases" / "00000" / "lv_cavity_ed.vtp"
    cav = pv.read(str(path))
    holed = cav.extract_cells(np.arange(1, cav.n_cells)).extract_surface(algorithm="dataset_surface")
    holed.save(str(path))
    with pytest.raises(InputError, match="watertight"):
        load_case(broken, "00000")
    one_line_error(_run("show-case", str(broken), "00000", str(tmp_path / "f.png")), "watertight")
    assert not (tmp_path / "f.png").exists()


def test_show_case_writes_png(cohort: Path, tmp_path: Path):
    out = tmp_path / "case.png"
    r = _run("show-case", str(cohort), "00000", str(out), "--no-3d")
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_3d_fallback_draws(cohort: Path):
    from sono3d.viz.heart import render_case_3d

    case = load_case(cohort, "00000")
    img = render_case_3d([case.ed], case.views["poses"][0], size=(160, 160),
                         sectors=list(zip(case.views["opening_deg"], case.views["depth_mm"])), backend="matplotlib")
    assert img.shape == (160, 160, 3) and img.dtype == np.uint8 and img.std() > 0


def test_read_labelled_vtk_meshes(tmp_path: Path):
    """A volumetric mesh with elemTag becomes each label region's closed surface; no labels is refused."""
    import pyvista as pv

    grid = pv.ImageData(dimensions=(5, 4, 4)).cast_to_unstructured_grid().triangulate()
    centres = grid.cell_centers().points
    grid.cell_data["elemTag"] = np.where(centres[:, 0] < 2, 1, 2).astype(np.int32)
    folder = tmp_path / "real"
    folder.mkdir()
    grid.save(str(folder / "h01.vtu"))
    cases = read_vtk_cohort(folder)
    assert [c.id for c in cases] == ["h01"] and cases[0].views is None and cases[0].es is None
    surf = cases[0].ed
    assert set(np.unique(surf.cell_data["elemTag"]).tolist()) == {1, 2}
    for tag, vol in ((1, 2 * 3 * 3), (2, 2 * 3 * 3)):
        part = surf.extract_cells(np.flatnonzero(surf.cell_data["elemTag"] == tag))
        part = part.extract_surface(algorithm="dataset_surface")
        assert is_watertight(part)
        assert enclosed_volume_mm3(part) == pytest.approx(vol)
    unlabelled = tmp_path / "plain"
    unlabelled.mkdir()
    pv.Sphere().save(str(unlabelled / "h02.vtk"))
    with pytest.raises(InputError, match="elemTag"):
        read_vtk_cohort(unlabelled)
    with pytest.raises(InputError, match="elemTag"):
        read_labelled_mesh(unlabelled / "h02.vtk")
    assert len(read_cohort(folder)) == 1


def test_read_ghdheart():
    lv = shared_file("hearts/ghdheart/LV.obj")
    case = read_ghdheart(lv.parent)
    assert set(np.unique(case.ed.cell_data["elemTag"]).tolist()) == {1, 2, 3, 4}
    # LV.obj is the closed LV myocardium (a cup around the cavity), about 115 mL of wall.
    assert case.lv_cavity_ed is None
    assert case.params["lv_myocardium_ml"] == pytest.approx(115.0, rel=0.05)
    lo, hi = np.asarray(case.ed.bounds).reshape(3, 2).T
    assert 60 < (hi - lo).max() < 250  # millimetres, not the file's units
    assert read_cohort(lv.parent)[0].id == "ghdheart"


def test_physiological_cohort_phases_strain_and_versions(tmp_path: Path):
    out = tmp_path / "phys"
    r = _run("cohort", str(out), "--n", "2", "--seed", "3", "--size", "24", "--phases", "6", "--no-progress")
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "cohort.json").read_text())
    assert meta["generator"] == "parametric-heart-2" and meta["motion"] == "physiological" and meta["phases"] == 6
    row = read_manifest(out)[0]
    case = load_case(out, row["id"])
    assert case.beat is not None and case.beat["points"].shape == (6, case.ed.n_points, 3)
    es_i = int(case.beat["es_index"])
    assert np.array_equal(case.beat["points"][0], np.asarray(case.ed.points))
    assert np.array_equal(case.beat["points"][es_i], np.asarray(case.es.points))
    assert case.beat["lv_volume_ml"][es_i] == pytest.approx(row["esv_ml"], rel=1e-12)
    r = _run("strain", str(out / "cases" / row["id"] / "ed.vtp"), str(out / "cases" / row["id"] / "es.vtp"), "--json")
    st = json.loads(r.output)
    assert st["gls_pct"] == pytest.approx(row["gls_pct"], abs=1e-9)
    assert st["gcs_pct"] == pytest.approx(row["gcs_pct"], abs=1e-9)
    assert row["gls_pct"] == pytest.approx(row["beat_gls_target_pct"], abs=0.01)
    # the same seed with the affine beat: same shapes and views, other ES
    aff = tmp_path / "aff"
    generate_cohort(aff, 1, seed=3, size=24, motion="affine")
    other = load_case(aff, "00000")
    assert np.array_equal(np.asarray(other.ed.points), np.asarray(load_case(out, "00000").ed.points))
    assert "beat_twist_deg" not in read_manifest(aff)[0] and "gls_pct" in read_manifest(aff)[0]
    # mixing motions, phase counts or generators in one folder is refused
    one_line_error(_run("cohort", str(out), "--n", "3", "--seed", "3", "--size", "24", "--motion", "affine",
                        "--no-progress"), "different cohort")
    one_line_error(_run("cohort", str(out), "--n", "3", "--seed", "3", "--size", "24", "--no-progress"),
                   "different cohort")
    one_line_error(_run("cohort", str(tmp_path / "x"), "--n", "1", "--motion", "affine", "--phases", "4",
                        "--no-progress"), "physiological")
    one_line_error(_run("cohort", str(tmp_path / "y"), "--n", "1", "--motion", "wobbly", "--no-progress"), "motion")


def test_version_1_cohort_stays_readable(tmp_path: Path):
    """A cohort of the first generator (affine beat, no strain columns) loads but is not extended."""
    old = tmp_path / "v1"
    generate_cohort(old, 2, seed=1, size=24, motion="affine")
    meta = json.loads((old / "cohort.json").read_text())
    meta["generator"] = "parametric-heart-1"
    for k in ("motion", "phases"):
        meta.pop(k)
    (old / "cohort.json").write_text(json.dumps(meta))
    for cid in case_ids(old):
        p = old / "cases" / cid / "params.json"
        row = json.loads(p.read_text())
        for k in ("gls_pct", "gcs_pct"):
            row.pop(k)
        p.write_text(json.dumps(row))
    from sono3d.heart.cohort import write_manifest

    write_manifest(old)
    rows = read_manifest(old)
    assert list(rows[0])[-3:] == ["edv_ml", "esv_ml", "ef"]
    assert load_case(old, "00001").es is not None
    one_line_error(_run("cohort", str(old), "--n", "3", "--seed", "1", "--size", "24", "--motion", "affine",
                        "--no-progress"), "parametric-heart-1")
