"""``sono3d report``: kinds recognised by contents, self-contained pages, compact data, bad input."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.errors import InputError
from sono3d.report import build_report, detect
from sono3d.report.data import gaussian_points, isosurface, mesh_label_parts, volume_data
from sono3d.types import Volume

from conftest import one_line_error
from report_results import (compare_result, ellipsoid_volume, heart_evaluate_result, heart_predict_result,
                            sweep_result)

runner = CliRunner()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    pred, views = heart_predict_result(root / "pred", {"per_view": [0.1] * 6, "score": 0.2, "in_distribution": False,
                                                        "view_order_ok": True})
    return {"sweep reconstruct": sweep_result(root / "recon"), "demo": sweep_result(root / "demo", demo=True),
            "sweep compare": compare_result(root / "compare"), "heart predict": pred, "views": views,
            "heart evaluate": heart_evaluate_result(root / "eval")}


def _payloads(text: str, role: str) -> list[dict]:
    found = re.findall(rf'<script type="application/json" data-role="{role}" data-target="[^"]+">(.*?)</script>',
                       text, flags=re.S)
    return [json.loads(s) for s in found]


@pytest.mark.parametrize("kind", ["sweep reconstruct", "demo", "sweep compare", "heart predict", "heart evaluate"])
def test_each_kind_is_recognised_and_gives_a_self_contained_page(results, kind, tmp_path):
    assert detect(results[kind]).kind == kind
    page = build_report(results[kind], tmp_path / "page.html")
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # Nothing is fetched: no external script, stylesheet, image or frame.
    assert not re.search(r"<(script|img|iframe)[^>]+src=\"(?!data:)", text)
    assert "<link" not in text
    assert "plotly.js v" in text and "window.SONO3D" in text
    assert len(_payloads(text, "figure")) >= 1
    assert kind in text
    assert not list(tmp_path.glob(".page.html.*"))  # the temporary file was renamed away


def test_sweep_page_embeds_the_volume_exactly_and_the_truth_surface(results, tmp_path):
    text = build_report(results["demo"], tmp_path / "p.html").read_text()
    (vol,) = _payloads(text, "volume")
    v = vol["volume"]
    levels = np.frombuffer(base64.b64decode(v["data"]), dtype=np.uint8).reshape(v["shape"])
    ref = volume_data(ellipsoid_volume(40))
    assert np.array_equal(levels, ref.levels)
    assert v["vmin"] == 0.0 and v["vmax"] == pytest.approx(1.0)
    scene = _payloads(text, "figure")[0]
    names = [t.get("name", "") for t in scene["data"]]
    assert names[:3] == ["axial slice", "coronal slice", "sagittal slice"]
    assert any(n.startswith("truth") for n in names) and any(n.startswith("reconstruction") for n in names)
    assert "held-out SSIM, compounding" in text  # the demo's baseline


def test_large_volume_is_downsampled_with_a_note_not_refused(results, tmp_path):
    text = build_report(results["sweep reconstruct"], tmp_path / "p.html", max_voxels=10_000).read_text()
    (vol,) = _payloads(text, "volume")
    assert np.prod(vol["volume"]["shape"]) <= 10_000
    assert "shown resampled to" in text and "the file itself is at full resolution" in text


def test_resampling_keeps_the_volume_in_place():
    aff = np.array([[0.5, 0, 0, 10], [0, 0.7, 0, -3], [0, 0, 0.9, 2], [0, 0, 0, 1.0]])
    arr = np.random.default_rng(0).random((9, 7, 8)).astype(np.float32)
    # Less than twice too large: trilinear, corner voxel centres kept.
    vd = volume_data(Volume(arr, aff), max_voxels=100)
    X, Y, Z = vd.levels.shape
    assert X * Y * Z <= 100 and (X, Y, Z) == (5, 4, 4) and "resampled to 5x4x4 voxels" in vd.note
    assert np.allclose(vd.affine @ [0, 0, 0, 1], aff @ [0, 0, 0, 1])
    assert np.allclose(vd.affine @ [X - 1, Y - 1, Z - 1, 1], aff @ [8, 6, 7, 1])
    q = lambda v: round((v - vd.vmin) / (vd.vmax - vd.vmin) * 255)  # noqa: E731
    assert vd.levels[0, 0, 0] == q(arr[0, 0, 0]) and vd.levels[-1, -1, -1] == q(arr[-1, -1, -1])
    # Four times too large along each axis: 4x4x4 block means, a block's centre at its voxels' mean.
    big = np.random.default_rng(1).random((40, 40, 40)).astype(np.float32)
    vd = volume_data(Volume(big, aff), max_voxels=1000)
    assert vd.levels.shape == (10, 10, 10)
    assert np.allclose(vd.affine @ [0, 0, 0, 1], aff @ [1.5, 1.5, 1.5, 1])
    assert vd.levels[0, 0, 0] == round((big[:4, :4, :4].mean() - vd.vmin) / (vd.vmax - vd.vmin) * 255)
    assert volume_data(Volume(big, aff)).note is None


def test_isosurface_lies_on_the_level_in_world_mm():
    vol = ellipsoid_volume(30, spacing=2.0)
    vol.array[:] = 0
    c = (np.arange(30) - 14.5) * 2.0
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    vol.array[:] = np.sqrt(x ** 2 + y ** 2 + z ** 2)  # distance from the origin, mm
    surf = isosurface(vol, 20.0)
    r = np.linalg.norm(surf.points, axis=1)
    assert np.allclose(r, 20.0, atol=0.3)
    assert isosurface(vol, 1e6) is None


def test_mesh_parts_keep_vertex_correspondence_between_phases(results):
    import pyvista as pv

    ed = mesh_label_parts(pv.read(str(results["heart predict"] / "heart_ed.vtp")))
    es = mesh_label_parts(pv.read(str(results["heart predict"] / "heart_es.vtp")))
    whole = pv.read(str(results["heart predict"] / "heart_ed.vtp"))
    assert sorted(ed) == list(range(1, 18))
    assert sum(len(p.faces) for p in ed.values()) == whole.n_cells
    for tag in ed:
        assert np.array_equal(ed[tag].faces, es[tag].faces)
        assert ed[tag].faces.max() == len(ed[tag].points) - 1
    assert not np.allclose(ed[1].points, es[1].points)  # the LV moves between ED and ES


def test_gaussian_points_subsample_and_peak(results):
    import meshio

    ply = results["sweep reconstruct"] / "gaussians.ply"
    m = meshio.read(str(ply))
    pts, peak, total = gaussian_points(ply)
    assert total == len(pts) == 300
    o, i = m.point_data["opacity"], m.point_data["intensity"]
    assert np.allclose(peak, i / (1 + np.exp(-o)), atol=1e-6)
    pts, peak, total = gaussian_points(ply, max_points=50)
    assert total == 300 and len(pts) == len(peak) == 50
    assert set(map(tuple, pts)).issubset(set(map(tuple, m.points)))


def test_heart_page_shows_a_failed_input_check_prominently_and_the_views(results, tmp_path):
    text = build_report(results["heart predict"], tmp_path / "p.html", views=results["views"]).read_text()
    assert 'class="banner bad"' in text and "do not trust this heart" in text
    assert text.count('<img src="data:image/png') == 12  # six views, ED and ES
    assert "SAX basal" in text
    (ph,) = _payloads(text, "phases")
    assert ph["names"] == ["ED", "ES"] and len(ph["phases"][0]) == len(ph["traces"])
    fig = _payloads(text, "figure")[0]
    legend = [t["name"] for t in fig["data"] if t.get("showlegend", True)]
    assert "LV myocardium" in legend and legend.count("valves") == 1


def test_heart_page_finds_the_views_its_report_names(tmp_path, monkeypatch):
    folder, views = heart_predict_result(tmp_path / "p")
    assert build_report(folder).read_text().count('<img src="data:image/png') == 0
    monkeypatch.chdir(tmp_path)  # `heart predict` records the path as given: here relative to where it ran
    rep = json.loads((folder / "report.json").read_text())
    (folder / "report.json").write_text(json.dumps({**rep, "views": views.name}))
    assert build_report(folder).read_text().count('<img src="data:image/png') == 12


def test_heart_page_without_input_check_says_so(tmp_path):
    folder, _ = heart_predict_result(tmp_path / "p")
    text = build_report(folder).read_text()
    assert "Input check: not available" in text and "--views" in text
    (folder / "report.json").write_text(json.dumps({**json.loads((folder / "report.json").read_text()),
                                                    "input_check": {"in_distribution": True, "view_order_ok": True,
                                                                    "score": 0.1, "per_view": [0.1] * 6},
                                                    "gls_pct": -18.5}))
    text = build_report(folder).read_text()
    assert 'class="banner ok"' in text and "Input check: passed" in text
    assert "global longitudinal strain" in text and "-18.5" in text


def test_evaluate_page_has_bland_altman_box_and_sortable_table(results, tmp_path):
    text = build_report(results["heart evaluate"], tmp_path / "p.html").read_text()
    figs = _payloads(text, "figure")
    types = sorted({t["type"] for f in figs for t in f["data"]})
    assert types == ["box", "scatter"]
    ba = next(f for f in figs if f["data"][0]["type"] == "scatter")
    assert "bias" in ba["data"][0]["name"]
    assert 'class="data sortable"' in text and text.count("<tr>") >= 8


def test_compare_page_pairs_the_methods_per_frame(results, tmp_path):
    text = build_report(results["sweep compare"], tmp_path / "p.html").read_text()
    figs = _payloads(text, "figure")
    per_frame = next(f for f in figs if f["data"][0]["type"] == "scatter")
    names = [t["name"] for t in per_frame["data"]]
    assert "gaussians.ssim" in names and "compounding.ssim" in names
    assert "compare.png" in text


def test_cli_writes_the_page_and_refuses_unknown_folders(results, tmp_path):
    out = tmp_path / "eval.html"
    res = runner.invoke(app, ["report", str(results["heart evaluate"]), str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(out) and out.is_file()
    (tmp_path / "empty").mkdir()
    line = one_line_error(runner.invoke(app, ["report", str(tmp_path / "empty")]), "no known result")
    for kind in ("heart predict", "heart evaluate", "sweep reconstruct", "sweep compare", "demo"):
        assert kind in line
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text('{"something": 1}')
    one_line_error(runner.invoke(app, ["report", str(tmp_path / "other")]), "none of these kinds")
    (tmp_path / "other" / "report.json").write_text("not json")
    one_line_error(runner.invoke(app, ["report", str(tmp_path / "other")]), "not a readable JSON")
    one_line_error(runner.invoke(app, ["report", str(tmp_path / "absent")]), "no such result folder")
    one_line_error(runner.invoke(app, ["report", str(results["heart predict"]), "--views", str(tmp_path / "x.npz")]),
                   "--views")
    assert not (tmp_path / "empty" / "report.html").exists()


def test_unreadable_views_file_is_one_line(results, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read the input views"):
        build_report(results["heart predict"], tmp_path / "p.html", views=bad)
    assert not (tmp_path / "p.html").exists()
