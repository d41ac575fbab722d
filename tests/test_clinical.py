"""Clinical statistics of the heart path: LV volumes, EF, agreement, and ``sono3d heart correlate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.errors import InputError
from sono3d.heart.clinical import (
    agreement,
    correlate,
    delaunay_volume_mm3,
    ejection_fraction,
    lv_volume_ml,
    read_table_columns,
)

from conftest import shared_file

pv = pytest.importorskip("pyvista")

runner = CliRunner()

# The S2MNet paper's Table 3: clinicians' GLPS and the predicted EF of 14 patients.
PAPER_GLPS = [-12.1, -12.4, -14.9, -15.3, -14.0, -15.8, -12.6, -14.7, -16.7, -14.2, -15.4, -16.8, -18.2, -20.1]
PAPER_EF = [0.2641, 0.2859, 0.2970, 0.3028, 0.3035, 0.3127, 0.3151, 0.3166, 0.3206, 0.3297, 0.3352, 0.3723,
            0.3742, 0.3861]


def _ellipsoid_ml(a: float, b: float, c: float) -> float:
    return 4.0 / 3.0 * math.pi * a * b * c / 1000.0


# ------------------------------------------------------------------ volumes and EF


def test_ef_of_analytic_ellipsoids() -> None:
    ed_axes, es_axes = (25.0, 25.0, 45.0), (18.0, 19.0, 38.0)  # mm: about 118 mL and 54 mL
    ed = pv.ParametricEllipsoid(*ed_axes, u_res=60, v_res=60)
    es = pv.ParametricEllipsoid(*es_axes, u_res=60, v_res=60)
    edv, esv = lv_volume_ml(ed), lv_volume_ml(es)
    assert edv == pytest.approx(_ellipsoid_ml(*ed_axes), rel=0.01)
    assert esv == pytest.approx(_ellipsoid_ml(*es_axes), rel=0.01)
    truth = (1 - (18 * 19 * 38) / (25 * 25 * 45)) * 100
    assert ejection_fraction(edv, esv) == pytest.approx(truth, abs=0.3)
    # Convex cavities: the paper's Delaunay route agrees.
    ef_delaunay = ejection_fraction(lv_volume_ml(ed, "delaunay"), lv_volume_ml(es, "delaunay"))
    assert ef_delaunay == pytest.approx(truth, abs=0.3)


def test_ejection_fraction_values_and_errors() -> None:
    assert ejection_fraction(120.0, 50.0) == pytest.approx(70 / 120 * 100)
    np.testing.assert_allclose(ejection_fraction([100.0, 200.0], [40.0, 150.0]), [60.0, 25.0])
    assert ejection_fraction(100.0, 110.0) == pytest.approx(-10.0)
    with pytest.raises(InputError, match="positive"):
        ejection_fraction(0.0, 0.0)
    with pytest.raises(InputError, match="non-negative"):
        ejection_fraction(10.0, -1.0)
    with pytest.raises(InputError, match="NaN"):
        ejection_fraction(float("nan"), 1.0)


def test_delaunay_volume_convex_and_nonconvex() -> None:
    from scipy.spatial import ConvexHull

    ell = pv.ParametricEllipsoid(30.0, 20.0, 15.0, u_res=60, v_res=60)
    pts = np.asarray(ell.points)
    vol = delaunay_volume_mm3(pts)
    assert vol == pytest.approx(4 / 3 * math.pi * 30 * 20 * 15, rel=0.01)
    assert vol == pytest.approx(ConvexHull(pts).volume, rel=1e-9)
    # The paper's 10% subsample: a slightly smaller hull, still within a few percent here.
    sub = delaunay_volume_mm3(pts, subsample=0.1, seed=3)
    assert 0.95 * vol < sub <= vol
    assert sub == delaunay_volume_mm3(pts, subsample=0.1, seed=3)
    # Non-convex (a torus): the hull overestimates, the divergence theorem does not.
    torus = pv.ParametricTorus(ringradius=20.0, crosssectionradius=5.0, u_res=60, v_res=60).clean()
    exact = 2 * math.pi**2 * 20.0 * 5.0**2 / 1000.0
    assert lv_volume_ml(torus) == pytest.approx(exact, rel=0.01)
    assert lv_volume_ml(torus, "delaunay") > 1.5 * exact  # hull: about 1.8x


def test_volume_errors() -> None:
    with pytest.raises(InputError, match="degenerate"):
        delaunay_volume_mm3(np.c_[np.random.default_rng(0).random((20, 2)), np.zeros(20)])
    with pytest.raises(InputError, match="at least 4"):
        delaunay_volume_mm3(np.eye(3))
    with pytest.raises(InputError, match="watertight"):
        lv_volume_ml(pv.Sphere().clip("z"))
    with pytest.raises(InputError, match="closed surface"):
        lv_volume_ml(np.eye(3))
    with pytest.raises(InputError, match="method"):
        lv_volume_ml(pv.Sphere(), method="simpson")


def test_real_lv_divergence_vs_delaunay() -> None:
    lv = pv.read(shared_file("hearts/ghdheart/LV.obj")).scale(100.0)  # file units x100 = mm (data README)
    enclosed = lv_volume_ml(lv)
    assert 100.0 < enclosed < 130.0  # the data's README: about 115 mL
    assert lv_volume_ml(lv, "delaunay") > enclosed  # the LV is not convex


def test_agreement_matches_components() -> None:
    rng = np.random.default_rng(7)
    truth = rng.uniform(35, 70, size=30)
    pred = truth + rng.normal(1.0, 3.0, size=30)
    a = agreement(pred, truth)
    assert a.n == 30
    assert a.mae == pytest.approx(np.abs(pred - truth).mean())
    assert a.pearson is not None and a.pearson.r == pytest.approx(stats.pearsonr(pred, truth).statistic)
    assert a.bland_altman.bias == pytest.approx((pred - truth).mean())
    d = a.to_dict()
    assert set(d) == {"n", "mae", "pearson", "bias", "loa"} and len(d["pearson"]["ci95"]) == 2
    json.dumps(d)
    assert agreement([50.0, 60.0], [52.0, 57.0]).pearson is None  # too few pairs for r, MAE still defined


# ------------------------------------------------------------------ correlate: API and CLI


def _write(tmp_path: Path, text: str, name: str = "table.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _paper_table(tmp_path: Path) -> Path:
    rows = "\n".join(f"P{i},{g},{e}" for i, (g, e) in enumerate(zip(PAPER_GLPS, PAPER_EF, strict=True)))
    return _write(tmp_path, "patient,GLPS,EF\n" + rows + "\n")


def test_correlate_cli_json_matches_scipy(tmp_path: Path) -> None:
    res = runner.invoke(app, ["heart", "correlate", str(_paper_table(tmp_path)), "--x", "EF", "--y", "GLPS", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out) == {"pearson", "spearman", "n"} and out["n"] == 14
    ref = stats.pearsonr(PAPER_EF, PAPER_GLPS)
    assert out["pearson"]["r"] == pytest.approx(ref.statistic, abs=1e-12)
    assert out["pearson"]["r"] == pytest.approx(-0.856, abs=1e-3)  # the paper reports PCC -0.82
    assert out["pearson"]["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert out["pearson"]["ci95"] == pytest.approx([ci.low, ci.high], abs=1e-12)
    sref = stats.spearmanr(PAPER_EF, PAPER_GLPS)
    assert out["spearman"]["rho"] == pytest.approx(sref.statistic, abs=1e-12)
    assert out["spearman"]["p"] == pytest.approx(sref.pvalue, rel=1e-9)


def test_correlate_cli_text(tmp_path: Path) -> None:
    res = runner.invoke(app, ["heart", "correlate", str(_paper_table(tmp_path)), "--x", "EF", "--y", "GLPS"])
    assert res.exit_code == 0, res.output
    assert "n = 14" in res.output and "Pearson r = -0.8557" in res.output and "Spearman rho" in res.output


def test_read_table_skips_missing_and_sniffs_delimiter(tmp_path: Path) -> None:
    path = _write(tmp_path, "a;b;c\n1;2;x\n2;NA;y\n3;5;z\n;;\n4;4.5;w\n5;7;v\n")
    x, y = read_table_columns(path, "a", "b")
    np.testing.assert_allclose(x, [1, 3, 4, 5])
    np.testing.assert_allclose(y, [2, 5, 4.5, 7])
    tab = _write(tmp_path, "a\tb\n1\t2\n2\t3\n3\t5\n", "t.tsv")
    assert correlate(*read_table_columns(tab, "a", "b"))["n"] == 3


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        (None, ["--x", "a", "--y", "b"], "No such file"),
        ("a,b\n1,2\n2,3\n3,5\n", ["--x", "a", "--y", "EF"], "no column 'EF'"),
        ("a,b\n1,2\n2,3\n", ["--x", "a", "--y", "b"], "at least 3 numeric rows"),
        ("a,b\n1,2\n2,NA\n3,4\n", ["--x", "a", "--y", "b"], "at least 3 numeric rows"),
        ("a,b\n1,2\n2,three\n3,5\n", ["--x", "a", "--y", "b"], "row 3, column 'b': 'three' is not a number"),
        ("a,b\n1,2\n1,3\n1,5\n", ["--x", "a", "--y", "b"], "constant"),
        ("", ["--x", "a", "--y", "b"], "empty table"),
    ],
)
def test_correlate_cli_bad_input(tmp_path: Path, text: str | None, args: list[str], message: str) -> None:
    path = tmp_path / "missing.csv" if text is None else _write(tmp_path, text)
    res = runner.invoke(app, ["heart", "correlate", str(path), *args, "--json"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert message in lines[0]
    assert "Traceback" not in res.output
