"""Template correspondences by robust optimal transport (sono3d.heart.correspond, issue 7)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sono3d.errors import InputError
from sono3d.heart.correspond import (
    CorrespondOptions,
    correspond_points,
    fit_global,
    grid_reduce,
    ot_match,
    ot_match_local,
    transport_plan,
)
from sono3d.heart.spline import gaussian_smooth, interpolate_field

# Few levels keep the tests fast; the defaults are for 5,000-vertex hearts.
FAST = CorrespondOptions(levels=3, final_iters=1, nonrigid_blur_mm=4.0, blur_mm=1.0)


def _blob(n: int = 500, seed: int = 0) -> np.ndarray:
    """Points on an asymmetric closed surface (an ellipsoid with a bump), mm, about 60 mm across."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = 1.0 + 0.25 * np.exp(-8 * np.sum((d - np.array([0.6, 0.5, 0.6])) ** 2, axis=1))
    return d * r[:, None] * np.array([30.0, 20.0, 14.0])


def _rot(axis, angle_deg):  # noqa: ANN001, ANN202
    from sono3d.geometry.transforms import axis_angle_to_matrix

    return axis_angle_to_matrix(np.asarray(axis, float), np.deg2rad(angle_deg))


def test_rigid_transform_recovered():
    p = _blob()
    R = _rot([1, 2, 0.5], 20.0)
    t = np.array([6.0, -4.0, 9.0])
    q = p @ R.T + t
    res = correspond_points(p, q, options=FAST)
    err = np.linalg.norm(p + res.displacement - q, axis=1)
    assert err.mean() < 0.5, err.mean()
    # The global part alone is (nearly) the rigid map: the fit is affine, so allow a little.
    T = res.global_transform
    assert np.abs(T[:3, :3] - R).max() < 0.03
    assert np.linalg.norm(p @ T[:3, :3].T + T[:3, 3] - q, axis=1).max() < 1.5


def test_affine_transform_recovered():
    p = _blob(seed=1)
    A = np.array([[1.10, 0.06, 0.0], [0.0, 0.92, 0.05], [0.04, 0.0, 1.05]]) @ _rot([0, 0, 1], 10.0)
    t = np.array([-3.0, 5.0, 2.0])
    q = p @ A.T + t
    res = correspond_points(p, q, options=FAST)
    err = np.linalg.norm(p + res.displacement - q, axis=1)
    assert err.mean() < 0.6, err.mean()
    assert np.abs(res.global_transform[:3, :3] - A).max() < 0.03


def test_fit_global_exact_and_kinds():
    rng = np.random.default_rng(3)
    p = rng.normal(size=(50, 3)) * 10
    R = _rot([0.3, -1, 0.2], 35.0)
    for kind, M in (("rigid", R), ("similarity", 1.3 * R), ("affine", np.diag([1.2, 0.8, 1.1]) @ R)):
        T = fit_global(p, p @ M.T + [1, 2, 3], kind=kind)
        np.testing.assert_allclose(T[:3, :3], M, atol=1e-9)
        np.testing.assert_allclose(T[:3, 3], [1, 2, 3], atol=1e-9)


def test_balanced_plan_matches_exact_ot():
    import ot

    rng = np.random.default_rng(4)
    x = rng.uniform(0, 10, size=(8, 3))
    y = rng.uniform(0, 10, size=(8, 3)) + 2.0
    plan = transport_plan(x, y, blur=0.2, reach=None, scaling=0.95, polish_iters=200)
    a = np.full(8, 1 / 8)
    exact = ot.emd(a, a, 0.5 * ((x[:, None] - y[None]) ** 2).sum(-1))
    assert np.abs(plan - exact).max() < 0.01
    np.testing.assert_allclose(plan.sum(axis=1), a, atol=2e-3)


def test_unbalanced_plan_matches_pot_sinkhorn():
    import ot

    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 3)) * 3
    y = rng.normal(size=(25, 3)) * 3 + 1.0
    blur, reach = 1.0, 2.0
    plan = transport_plan(x, y, blur=blur, reach=reach, scaling=0.95, polish_iters=300)
    C = 0.5 * ((x[:, None] - y[None]) ** 2).sum(-1)
    ref = ot.unbalanced.sinkhorn_unbalanced(np.full(20, 1 / 20), np.full(25, 1 / 25), C, blur ** 2, reach ** 2,
                                            method="sinkhorn_stabilized", numItermax=20000, stopThr=1e-12)
    assert np.abs(plan - ref).max() < 2e-4 * 1  # entries are about 1e-3
    assert abs(plan.sum() - ref.sum()) < 1e-3


def test_local_solver_agrees_with_dense():
    p = _blob(300, seed=6)
    q = _blob(300, seed=7) * 1.02 + 0.5
    dense = ot_match(p, q, blur=2.0, reach=10.0, scaling=0.9, polish_iters=100)
    local = ot_match_local(p, q, blur=2.0, reach=10.0, scaling=0.9, anneal_factor=2.0, truncate=4.0,
                           polish_iters=100)
    assert np.abs(dense.target - local.target).max() < 0.05
    assert np.abs(dense.confidence - local.confidence).max() < 0.02


def test_outliers_do_not_pull_with_finite_reach():
    p = _blob(400, seed=8)
    rng = np.random.default_rng(9)
    outliers = rng.normal(size=(60, 3)) * 3 + np.array([90.0, 0.0, 0.0])
    q = np.vstack([p + np.array([2.0, -1.0, 1.0]), outliers])
    truth = np.array([2.0, -1.0, 1.0])
    robust = correspond_points(p, q, options=CorrespondOptions(**{**FAST.to_dict(), "reach_mm": 8.0}))
    balanced = correspond_points(p, q, options=CorrespondOptions(**{**FAST.to_dict(), "reach_mm": None}))
    err_r = np.linalg.norm(robust.displacement - truth, axis=1)
    err_b = np.linalg.norm(balanced.displacement - truth, axis=1)
    assert err_r.mean() < 0.5 and err_r.max() < 3.0
    assert err_b.max() > 10.0  # balanced OT must send mass to the outliers
    assert err_b.mean() > 3 * err_r.mean()


def test_labels_never_cross():
    rng = np.random.default_rng(10)
    # Template label 1 sits where the target's label 2 is and vice versa: the nearest points are
    # always of the other label, yet every match must come from the point's own label.
    a1 = rng.normal(size=(80, 3)) + [0, 0, -10]
    a2 = rng.normal(size=(80, 3)) + [0, 0, 10]
    x = np.vstack([a1, a2])
    lx = np.repeat([1, 2], 80)
    y = np.vstack([a1 + [0, 0, 20], a2 - [0, 0, 20]])
    ly = np.repeat([1, 2], 80)
    plan = transport_plan(x, y, blur=1.0, reach=5.0, labels_x=lx, labels_y=ly, scaling=0.8)
    assert plan[lx[:, None] != ly[None, :]].max() == 0.0
    for m in (ot_match(x, y, blur=1.0, reach=50.0, labels_x=lx, labels_y=ly),
              ot_match_local(x, y, blur=4.0, reach=50.0, labels_x=lx, labels_y=ly, anneal_factor=6.0)):
        assert np.all(m.target[lx == 1, 2] > 5) and np.all(m.target[lx == 2, 2] < -5)
    res = correspond_points(x, y, lx, ly, options=FAST)
    moved = x + res.displacement
    assert np.all(moved[lx == 1, 2] > 5) and np.all(moved[lx == 2, 2] < -5)
    # A label the target lacks: those points are not matched (confidence 0).
    m = ot_match(x, y[ly == 1], labels_x=lx, labels_y=ly[ly == 1], blur=1.0)
    assert np.all(m.confidence[lx == 2] == 0) and np.array_equal(m.target[lx == 2], x[lx == 2])


def test_gaussian_smooth_and_interpolate():
    p = _blob(400, seed=11)
    const = np.tile([1.0, -2.0, 0.5], (len(p), 1))
    np.testing.assert_allclose(gaussian_smooth(p, const, 3.0), const, atol=1e-4)
    lin = p @ np.array([[0.01, 0, 0], [0, 0.02, 0], [0, 0, -0.01]])
    sm = gaussian_smooth(p, lin, 2.0)
    assert np.abs(sm - lin).mean() < 0.05
    # No confident data: the field decays to zero.
    assert np.abs(gaussian_smooth(p, const, 3.0, weights=np.zeros(len(p)))).max() == 0.0
    np.testing.assert_allclose(interpolate_field(p, lin, p), lin, atol=1e-6)
    with pytest.raises(InputError):
        gaussian_smooth(p, const, 0.0)


def test_grid_reduce_conserves_mass_and_centroid():
    p = _blob(300, seed=12)
    lab = (p[:, 0] > 0).astype(int)
    w = np.random.default_rng(0).uniform(0.5, 1.5, len(p))
    c, cl, m, inv = grid_reduce(p, lab, w, 5.0)
    assert abs(m.sum() - w.sum()) < 1e-9 and len(c) < len(p)
    np.testing.assert_allclose(m @ c, w @ p, atol=1e-8)
    assert np.array_equal(cl[inv], lab)


def test_bad_inputs():
    p = _blob(50)
    with pytest.raises(InputError):
        correspond_points(p, p[:, :2])
    with pytest.raises(InputError):
        correspond_points(p, p, np.ones(50), np.full(50, 2))  # no shared label
    with pytest.raises(InputError):
        CorrespondOptions(blur_mm=0)
    with pytest.raises(InputError):
        CorrespondOptions(global_transform="shear")


# ------------------------------------------------------------------------------------------------
# Cohort and CLI on a tiny synthetic cohort (two labelled spheres per case, same vertex order)
# ------------------------------------------------------------------------------------------------

def _two_chambers(scale_lv: float, scale_rv: float, shift):  # noqa: ANN001, ANN202
    import pyvista as pv

    lv = pv.Sphere(radius=20.0 * scale_lv, theta_resolution=16, phi_resolution=12)
    rv = pv.Sphere(radius=1.0, theta_resolution=16, phi_resolution=12)
    rv.points = np.asarray(rv.points) * np.array([12.0, 18.0, 22.0]) * scale_rv + [40.0, 0.0, 0.0]
    heart = lv.merge(rv, merge_points=False)
    heart.points = np.asarray(heart.points) + np.asarray(shift, float)
    heart.clear_data()
    tag = np.r_[np.ones(lv.n_points), np.full(rv.n_points, 2)].astype(np.int32)
    heart.point_data["elemTag"] = tag
    heart.cell_data["elemTag"] = np.r_[np.ones(lv.n_cells), np.full(rv.n_cells, 2)].astype(np.int32)
    cavity = pv.PolyData(np.asarray(heart.points)[: lv.n_points], lv.faces)
    return heart, cavity


def _write_cohort(root: Path, n: int = 2, labels: bool = True) -> Path:
    for k in range(n):
        d = root / "cases" / f"{k:05d}"
        d.mkdir(parents=True)
        for ph, s in (("ed", 1.0), ("es", 0.85)):
            heart, cav = _two_chambers(s * (1 + 0.05 * k), 1 + 0.04 * k, [2.0 * k, -1.0 * k, 0.5])
            if not labels:
                heart.clear_data()
            heart.save(str(d / f"{ph}.vtp"))
            cav.save(str(d / f"lv_cavity_{ph}.vtp"))
    return root


def test_cli_correspond_tiny_cohort(tmp_path):
    from typer.testing import CliRunner

    from sono3d.cli import app

    root = _write_cohort(tmp_path / "cohort")
    result = CliRunner().invoke(app, ["heart", "correspond", str(root), "--no-progress", "--blur", "1.5"])
    assert result.exit_code == 0, result.output
    report = json.loads((root / "correspondence_report.json").read_text())
    for key in ("chamfer_mm", "vertex_error_mm", "lv_volume_error_pct"):
        assert report[key]["mean"] is not None
    assert report["chamfer_mm"]["max"] >= report["chamfer_mm"]["mean"]
    assert report["seconds_per_case"] > 0
    assert report["n_cases"] == 2 and report["n_phases_scored"] == 3  # the template's own ED is left out
    assert report["chamfer_mm"]["mean"] < 1.0
    assert report["vertex_error_mm"]["mean"] < 1.5
    assert report["lv_volume_error_pct"]["mean"] < 3.0
    assert (root / "correspondence_hist.png").stat().st_size > 1000
    with np.load(root / "cases" / "00001" / "deformation.npz") as z:
        assert z["ed"].shape == z["es"].shape == (2 * 162, 3)
        assert str(z["template_id"]) == "00000"
        assert len(str(z["template_sha1"])) == 40
    # Same template and options: nothing is recomputed.
    again = CliRunner().invoke(app, ["heart", "correspond", str(root), "--no-progress", "--blur", "1.5"])
    assert again.exit_code == 0
    assert json.loads((root / "correspondence_report.json").read_text())["reused_cases"] == 2


def test_cli_correspond_bad_input(tmp_path):
    from typer.testing import CliRunner

    from sono3d.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["heart", "correspond", str(tmp_path / "nope"), "--no-progress"])
    assert missing.exit_code == 2
    assert missing.output.strip().startswith("error:") and len(missing.output.strip().splitlines()) == 1
    root = _write_cohort(tmp_path / "unlabelled", n=1, labels=False)
    bad = runner.invoke(app, ["heart", "correspond", str(root), "--no-progress"])
    assert bad.exit_code == 2, bad.output
    assert "elemTag" in bad.output and "Traceback" not in bad.output
    assert not (root / "correspondence_report.json").exists()
    no_template = runner.invoke(app, ["heart", "correspond", str(_write_cohort(tmp_path / "c2", n=1)),
                                      "--template", "99999", "--no-progress"])
    assert no_template.exit_code == 2 and "99999" in no_template.output


def test_synthetic_heart_meets_targets():
    """A parametric heart's ED template onto another heart's ES (same vertex order: truth known)."""
    from sono3d.heart.correspond import correspond_meshes, deformation_quality
    from sono3d.phantoms.heart import heart_mesh, heart_phases, lv_cavity_from_heart, sample_placement, sample_shape

    rng = np.random.default_rng(21)
    a = heart_phases(sample_shape(rng), sample_placement(rng))
    b = heart_phases(sample_shape(rng), sample_placement(rng))
    template, target = heart_mesh(a["ed"].points), heart_mesh(b["es"].points)
    res = correspond_meshes(template, target)
    q = deformation_quality(template, res.displacement, target, lv_cavity_from_heart(target))
    assert q["chamfer_mm"] < 0.5
    assert q["vertex_error_mm"] < 1.5
    assert abs(q["lv_volume_error_pct"]) < 2.0


@pytest.mark.shared
def test_ghdheart_known_smooth_warp():
    from conftest import shared_file

    from sono3d.heart.cohort import read_ghdheart
    from sono3d.heart.correspond import correspond_meshes, deformation_quality

    folder = shared_file("hearts/ghdheart/LV.obj").parent
    heart = read_ghdheart(folder).ed
    p = np.asarray(heart.points, dtype=np.float64)
    c = p.mean(axis=0)
    bump = np.exp(-np.sum((p - (c + [20.0, 0, 10.0])) ** 2, axis=1) / (2 * 25.0 ** 2))
    warped = heart.copy()
    warped.points = (p - c) @ np.array([[1.05, 0.03, 0], [0, 0.97, 0.02], [0.02, 0, 1.02]]).T + c + [4, -2, 3] \
        + 4.0 * bump[:, None] * np.array([0.6, -0.5, 0.6])
    res = correspond_meshes(heart, warped)
    q = deformation_quality(heart, res.displacement, warped)
    assert q["chamfer_mm"] < 0.5
    # The warp's tangential part is invisible to surface matching, so the true vertex error stays
    # well above the Chamfer distance; it must still be a fraction of the warp itself.
    initial = np.linalg.norm(np.asarray(warped.points) - p, axis=1).mean()
    assert q["vertex_error_mm"] < 2.0 and q["vertex_error_mm"] < 0.4 * initial


@pytest.mark.shared
def test_template_onto_ghdheart():
    """The synthetic template's GHDHeart surfaces land on GHDHeart (another frame, another shape)."""
    from conftest import shared_file

    from sono3d.heart.cohort import read_ghdheart
    from sono3d.heart.correspond import correspond_meshes, deformation_quality, ghdheart_template
    from sono3d.phantoms.heart import SHAPE_RANGES, HeartShape, build_heart_phase, heart_mesh

    folder = shared_file("hearts/ghdheart/LV.obj").parent
    ghd = read_ghdheart(folder).ed
    shape = HeartShape(**{k: 0.5 * (lo + hi) for k, (lo, hi) in SHAPE_RANGES.items()})
    template = ghdheart_template(heart_mesh(build_heart_phase(shape).points))
    assert set(np.unique(template.point_data["elemTag"])) == {1, 2, 3, 4}
    res = correspond_meshes(template, ghd)
    q = deformation_quality(template, res.displacement, ghd)
    assert q["chamfer_mm"] < 1.0
