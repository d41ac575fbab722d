"""Strain, AHA segments and the physiological beat: GLS/GCS definitions, segment areas and volumes,
myocardial volume under the thickening model, and the ``heart strain`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.errors import InputError
from sono3d.heart.segments import (
    AHA_NAMES,
    LEVELS,
    aha_segments,
    segment_volumes_mm3,
    template_endocardial_segments,
    template_segments,
)
from sono3d.heart.strain import (
    cavity_volume_ml,
    global_circumferential_strain_pct,
    global_strains_pct,
    lv_strain,
    strain_agreement,
)
from sono3d.phantoms.heart import (
    HeartShape,
    Placement,
    _cup_points,
    canonical_rotation,
    heart_mesh,
    heart_phases,
    heart_topology,
)
from sono3d.phantoms.heart_motion import (
    BeatParams,
    activation,
    beat_times,
    myocardial_volume_mm3,
    physiological_beat,
    sample_beat,
)
from sono3d.phantoms.lv_grid import APICAL_VIEW_LONGITUDES, N_LON, global_longitudinal_strain_pct

from conftest import one_line_error

runner = CliRunner()


def _arc(r: float, c: float, theta_b: float) -> float:
    """Length of the ellipse arc (x, z) = (r sin t, -c cos t) for t in [0, theta_b]."""
    return quad(lambda t: np.hypot(r * np.cos(t), c * np.sin(t)), 0.0, theta_b)[0]


@pytest.mark.parametrize("k_l, k_r", [(0.85, 0.8), (0.92, 0.95), (0.78, 0.6)])
def test_gls_of_an_analytically_shortened_ellipsoid(k_l: float, k_r: float) -> None:
    a, b, c, zc, zb = 24.0, 26.0, 70.0, -14.0, 0.0
    ed = _cup_points(a, b, c, zc, zb)
    apex_z = zc - c
    es = ed.copy()
    es[:, :2] *= k_r
    es[:, 2] = apex_z + k_l * (ed[:, 2] - apex_z)  # shortening towards a fixed apex
    theta_b = np.arccos((zc - zb) / c)
    strains = []
    for j1, j2 in APICAL_VIEW_LONGITUDES.values():
        lengths = []
        for kr, kc in ((1.0, 1.0), (k_r, k_l)):
            tot = 0.0
            for j in (j1, j2):
                phi = 2 * np.pi * j / N_LON
                r = np.hypot(a * np.cos(phi), b * np.sin(phi))  # the meridian is an ellipse in its plane
                tot += _arc(kr * r, kc * c, theta_b)
            lengths.append(tot)
        strains.append(lengths[1] / lengths[0] - 1.0)
    expected = 100.0 * np.mean(strains)
    assert global_longitudinal_strain_pct(ed, es) == pytest.approx(expected, abs=0.2)
    # pure radial scaling changes every ring by exactly k_r: GCS = (k_r - 1) in percent
    radial = ed.copy()
    radial[:, :2] *= k_r
    assert global_circumferential_strain_pct(ed, radial) == pytest.approx(100.0 * (k_r - 1.0), abs=1e-9)
    # a similarity scales every length: GLS = GCS = (s - 1)
    assert global_longitudinal_strain_pct(ed, 0.9 * ed) == pytest.approx(-10.0, abs=1e-9)


def _fine_cup(a: float, c: float, zc: float, zb: float, n_t: int = 240, n_p: int = 360):
    """A finely sampled truncated spheroid cup (apex down, open at z = zb): points and triangles."""
    th_b = np.arccos((zc - zb) / c)
    th = th_b * np.arange(1, n_t + 1) / n_t
    ph = 2 * np.pi * np.arange(n_p) / n_p
    T, P = np.meshgrid(th, ph, indexing="ij")
    pts = np.concatenate([[[0.0, 0.0, zc - c]],
                          np.stack([a * np.sin(T) * np.cos(P), a * np.sin(T) * np.sin(P), zc - c * np.cos(T)],
                                   -1).reshape(-1, 3)])
    rings = 1 + np.arange(n_t * n_p).reshape(n_t, n_p)
    j = np.arange(n_p)
    f = [np.stack([np.zeros(n_p, dtype=int), rings[0, j], rings[0, (j + 1) % n_p]], 1)]
    for k in range(n_t - 1):
        f.append(np.stack([rings[k, j], rings[k + 1, j], rings[k + 1, (j + 1) % n_p]], 1))
        f.append(np.stack([rings[k, j], rings[k + 1, (j + 1) % n_p], rings[k, (j + 1) % n_p]], 1))
    return pts, np.concatenate(f)


def test_aha_segment_areas_on_a_generated_lv() -> None:
    a, c, zc, zb = 25.0, 65.0, -12.0, 0.0
    pts, faces = _fine_cup(a, c, zc, zb)
    apex = np.array([0.0, 0.0, zc - c])
    base = np.array([0.0, 0.0, zb])
    tri = pts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    seg = aha_segments(tri.mean(axis=1), apex, base, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    got = np.array([area[seg == s].sum() for s in range(1, 18)])

    def zone(z0: float, z1: float) -> float:  # analytic area of the spheroid between two heights
        def integrand(z: float) -> float:
            u = (z - zc) / c
            r = a * np.sqrt(max(1 - u * u, 0.0))
            dr = -a * u / (c * np.sqrt(max(1 - u * u, 1e-300)))
            return 2 * np.pi * r * np.hypot(1.0, dr)
        return quad(integrand, z0, z1, limit=200)[0]

    h = zb - (zc - c)
    bounds = [zc - c + f * h for f in (0.0, 1 / 7, 3 / 7, 5 / 7, 1.0)]
    level_area = {"apex": zone(*bounds[0:2]), "apical": zone(*bounds[1:3]), "mid": zone(*bounds[2:4]),
                  "basal": zone(*bounds[3:5])}
    expected = np.array([level_area[lvl] / len(segs) for s in range(1, 18)
                         for lvl, segs in LEVELS.items() if s in segs])
    assert np.allclose(got, expected, rtol=0.01), np.c_[got, expected]
    # sector orientation: the septum (+x) is between 2 and 3, the anterior wall (+y) is 1, lateral 6/5
    probe = np.array([[20, 2, -5], [20, -2, -5], [0, 20, -5], [-20, 2, -5], [0, -20, -5], [20, 0, -50]], float)
    assert list(aha_segments(probe, apex, base, [1, 0, 0], [0, 1, 0])) == [2, 3, 1, 6, 4, 14]
    with pytest.raises(InputError):
        aha_segments(probe, apex, apex, [1, 0, 0], [0, 1, 0])


def test_template_segments_and_volumes() -> None:
    topo = heart_topology()
    seg = template_segments()
    a, b = topo.point_ranges[0]
    assert set(np.unique(seg[a:b])) == set(range(1, 18)) and not seg[b:].any()
    endo_seg = template_endocardial_segments()
    assert set(np.unique(endo_seg)) == set(range(1, 18))
    pts = heart_phases(HeartShape(lv_eccentricity=1.0))["ed"].points
    vols = segment_volumes_mm3(pts[topo.lv_endo_points])
    assert sum(vols.values()) / 1000.0 == pytest.approx(cavity_volume_ml(pts), rel=1e-9)
    assert min(vols.values()) > 0
    # basal segments of a round LV hold about the same volume (40 longitudes, 6 sectors)
    basal = np.array([vols[s] for s in LEVELS["basal"]])
    assert basal.max() / basal.min() < 1.2


@pytest.mark.parametrize("index", [0, 1, 2])
def test_physiological_beat_keeps_the_myocardium_and_meets_ef_and_gls(index: int) -> None:
    from sono3d.phantoms.heart import sample_placement, sample_shape

    rng = np.random.default_rng([3, index])
    shape, place = sample_shape(rng), sample_placement(rng)
    params = sample_beat(np.random.default_rng([3, index, 1]), shape)
    beat = physiological_beat(shape, place, params, n_phases=8)
    v0, v1 = myocardial_volume_mm3(beat.ed.points), myocardial_volume_mm3(beat.es.points)
    assert abs(v1 / v0 - 1) < 0.02
    ef = 1 - beat.es.lv_volume_mm3 / beat.ed.lv_volume_mm3
    assert ef == pytest.approx(shape.ef, abs=1e-4)
    assert global_longitudinal_strain_pct(beat.ed.points, beat.es.points) == pytest.approx(params.gls_pct, abs=0.01)
    # ED is the affine beat's ED; the apex barely moves while the base descends
    affine = heart_phases(shape, place)
    assert np.array_equal(affine["ed"].points, beat.ed.points)
    lm0, lm1 = beat.ed.landmarks, beat.es.landmarks
    assert np.linalg.norm(lm1["apex_epi"] - lm0["apex_epi"]) <= params.apex_shift_mm * place.scale + 1e-6
    assert np.linalg.norm(lm1["lv_base"] - lm0["lv_base"]) > 5.0
    vols = [p.lv_volume_mm3 for p in beat.phases]
    assert vols[0] == beat.ed.lv_volume_mm3 and vols[beat.es_index] == beat.es.lv_volume_mm3
    assert int(np.argmin(vols)) == beat.es_index
    assert np.all(np.diff(vols[: beat.es_index + 1]) < 0)  # ejection is monotone


def test_twist_turns_apex_and_base_oppositely() -> None:
    shape = HeartShape()
    still = physiological_beat(shape, None, BeatParams(twist_deg=0.0))
    twisted = physiological_beat(shape, None, BeatParams(twist_deg=20.0, apex_rotation_share=0.7))
    topo = heart_topology()
    endo = topo.lv_endo_points
    ring1, base = endo[1:1 + N_LON], endo[-N_LON:]

    def mean_angle(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.degrees(np.angle(np.mean(np.exp(1j * (np.arctan2(b[:, 1], b[:, 0])
                                                                - np.arctan2(a[:, 1], a[:, 0])))))))

    R0 = canonical_rotation()  # default placement: world = R0 @ heart frame
    s_pts, t_pts = still.es.points @ R0, twisted.es.points @ R0
    d_apex = mean_angle(s_pts[ring1], t_pts[ring1])
    d_base = mean_angle(s_pts[base], t_pts[base])
    assert d_apex < -5.0 and d_base > 4.0 and d_base - d_apex == pytest.approx(20.0, abs=4.0)


def test_cycle_times_and_activation() -> None:
    t, es = beat_times(10, 0.35)
    assert t[0] == 0.0 and t[es] == pytest.approx(0.35) and len(t) == 10 and np.all(np.diff(t) > 0)
    a = activation(t, 0.35)
    assert a[0] == pytest.approx(0.0) and a[es] == pytest.approx(1.0) and a.max() <= 1.0 + 1e-12
    assert activation(0.999999, 0.35) < 1e-3
    with pytest.raises(InputError):
        beat_times(1, 0.35)
    with pytest.raises(InputError):
        BeatParams(gls_pct=5.0)


def test_strain_agreement_and_global_strains() -> None:
    res = strain_agreement([-10, -15, -20, -12], [-11, -15, -19, -13], [30, 45, 60, 40], [32, 44, 61, 38])
    assert res["gls_mae"] == pytest.approx(0.75)
    assert res["gls_pearson"]["r"] > 0.9 and res["ef_gls_pearson_pred"]["r"] < -0.9
    assert global_strains_pct(np.zeros((10, 3)), np.zeros((10, 3))) is None


def _write_pair(tmp: Path, ed: np.ndarray, es: np.ndarray) -> tuple[Path, Path]:
    from sono3d.io import write_mesh

    a, b = tmp / "ed.vtp", tmp / "es.vtp"
    write_mesh(a, heart_mesh(ed))
    write_mesh(b, heart_mesh(es))
    return a, b


def test_strain_cli_json_text_and_bullseye(tmp_path: Path) -> None:
    beat = physiological_beat(HeartShape(), Placement((3.0, -2.0, 1.0), (5.0, -4.0, 8.0), 1.02),
                              BeatParams(gls_pct=-17.0))
    a, b = _write_pair(tmp_path, beat.ed.points, beat.es.points)
    r = runner.invoke(app, ["heart", "strain", str(a), str(b), "--json", "--bullseye", str(tmp_path / "be.png")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert set(out) == {"edv_ml", "esv_ml", "ef", "gls_pct", "gcs_pct", "segments"}
    assert out["gls_pct"] == pytest.approx(-17.0, abs=0.01)  # float32 files, rotation and shift: same strain
    assert out["ef"] == pytest.approx(60.0, abs=0.01)
    assert [s["segment"] for s in out["segments"]] == list(range(1, 18))
    assert out["segments"][16]["name"] == AHA_NAMES[17]
    assert sum(s["edv_ml"] for s in out["segments"]) == pytest.approx(out["edv_ml"], rel=1e-6)
    assert (tmp_path / "be.png").stat().st_size > 5000
    full = lv_strain(beat.ed.points, beat.es.points)
    assert full.gcs_pct == pytest.approx(out["gcs_pct"], abs=1e-3)
    r = runner.invoke(app, ["heart", "strain", str(a), str(b)])
    assert r.exit_code == 0 and "GLS -17.00 %" in r.output and "basal anterior" in r.output


def test_strain_cli_bad_input(tmp_path: Path) -> None:
    import pyvista as pv

    from sono3d.io import write_mesh

    beat = physiological_beat(HeartShape(), None, BeatParams())
    a, b = _write_pair(tmp_path, beat.ed.points, beat.es.points)
    other = tmp_path / "other.vtp"
    write_mesh(other, pv.Sphere())
    one_line_error(runner.invoke(app, ["heart", "strain", str(a), str(other)]), "template's vertex order")
    one_line_error(runner.invoke(app, ["heart", "strain", str(a), str(tmp_path / "missing.vtp")]), "missing.vtp")
    nan = beat.es.points.copy()
    nan[7] = np.nan
    bad = tmp_path / "nan.vtp"
    write_mesh(bad, heart_mesh(nan))
    one_line_error(runner.invoke(app, ["heart", "strain", str(a), str(bad)]), "NaN")
    one_line_error(runner.invoke(app, ["heart", "strain", str(a), str(b), "--bullseye", str(tmp_path / "x.jpg")]),
                   ".png")
