"""The verbs write ``report.html`` beside their results unless ``--no-html``."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from sono3d import demo as demo_module
from sono3d.cli import app
from sono3d.commands import heart_s2mnet
from sono3d.io import write_sweep, write_volume
from sono3d.simulate.slicing import sample_planes
from sono3d.sweep.poses import fan_prior_poses
from sono3d.types import Sweep

from report_results import ellipsoid_volume, heart_evaluate_result, heart_predict_result, sweep_result

runner = CliRunner()


def _page_kind(path) -> str:  # noqa: ANN001
    text = path.read_text(encoding="utf-8")
    return text.split('<p class="meta">', 1)[1].split(" &middot;", 1)[0]


def test_sweep_reconstruct_writes_its_page_with_the_truth(tmp_path, monkeypatch):
    vol = ellipsoid_volume(24, spacing=0.5)
    vol.affine[:3, 3] = [-6, -6, -14]
    P = fan_prior_poses(10, (24, 24), (0.5, 0.5), 60.0)
    write_sweep(tmp_path / "sweep.seq.nrrd", Sweep(sample_planes(vol, P, (24, 24)), P, (0.5, 0.5)))
    write_volume(tmp_path / "gt.nii.gz", vol)  # not truth.nii.gz, which a page would find in the folder anyway
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    args = ["sweep", "reconstruct", "sweep.seq.nrrd", "--preset", "small", "--epochs", "1",
            "--gaussians-per-slice", "10", "--truth", "gt.nii.gz", "--quiet"]
    res = runner.invoke(app, [*args[:3], "out", *args[3:]])
    assert res.exit_code == 0, res.output
    page = Path("out", "report.html")
    assert res.output.strip().splitlines()[-1] == f"report: {page}"
    assert _page_kind(page) == "sweep reconstruct"
    assert '"name":"truth' in page.read_text()  # the truth's surface is drawn
    # report.json names the truth, so a later `sono3d report` draws it without --truth
    assert json.loads(Path("out", "report.json").read_text())["truth"] == "gt.nii.gz"
    page.unlink()
    res = runner.invoke(app, ["report", "out"])
    assert res.exit_code == 0, res.output
    assert '"name":"truth' in page.read_text()
    res = runner.invoke(app, [*args[:3], "bare", *args[3:], "--no-html"])
    assert res.exit_code == 0, res.output
    assert Path("bare", "volume.nii.gz").is_file() and not Path("bare", "report.html").exists()
    assert "report:" not in res.output


def test_demo_ends_with_the_path_of_its_page(tmp_path, monkeypatch):
    def fake(out_dir, seed=0, progress=True, **_):  # a demo folder without the minute of training
        sweep_result(out_dir, demo=True)
        rep = json.loads((out_dir / "report.json").read_text())
        return {**rep, "outputs": {"volume": str(out_dir / "volume.nii.gz")}}

    monkeypatch.setattr(demo_module, "demo_comparison", fake)
    res = runner.invoke(app, ["demo", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].startswith(f"report: {tmp_path / 'report.html'}")
    assert _page_kind(tmp_path / "report.html") == "demo"
    (tmp_path / "report.html").unlink()
    res = runner.invoke(app, ["demo", "--out", str(tmp_path), "--quiet", "--no-html"])
    assert res.exit_code == 0 and not (tmp_path / "report.html").exists()


@pytest.fixture
def fake_heart(monkeypatch, tmp_path):
    """``heart predict`` / ``heart evaluate`` whose engines write ready-made result folders."""

    def predict_folder(run_dir, out_dir, views=None, **_):
        heart_predict_result(out_dir)
        rep = json.loads((out_dir / "report.json").read_text())
        return SimpleNamespace(report=rep, prediction=SimpleNamespace(overlay=None), views_file=views, warnings=[])

    def evaluate_split(run_dir, cohort_dir, **_):
        return SimpleNamespace(rows=[], report=None)

    def write_evaluation(evaluation, out_dir):
        heart_evaluate_result(out_dir)
        evaluation.report = json.loads((out_dir / "report.json").read_text())

    monkeypatch.setattr(heart_s2mnet, "predict_folder", predict_folder)
    monkeypatch.setattr(heart_s2mnet, "evaluate_split", evaluate_split)
    monkeypatch.setattr(heart_s2mnet, "write_evaluation", write_evaluation)
    views = tmp_path / "views.npz"
    np.savez(views, echo=np.random.default_rng(0).random((2, 6, 16, 16)).astype(np.float32))
    return views


def test_heart_verbs_name_their_page_in_their_json(fake_heart, tmp_path):
    res = runner.invoke(app, ["heart", "predict", str(tmp_path), str(fake_heart), str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["html"] == str(tmp_path / "p" / "report.html") and _page_kind(tmp_path / "p" / "report.html") == \
        "heart predict"
    assert tmp_path.joinpath("p", "report.html").read_text().count('<img src="data:image/png') == 12  # the views
    res = runner.invoke(app, ["heart", "evaluate", str(tmp_path), str(tmp_path), str(tmp_path / "e"), "--no-figures"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert _page_kind(tmp_path / "e" / "report.html") == "heart evaluate" and out["html"].endswith("report.html")
    res = runner.invoke(app, ["heart", "predict", str(tmp_path), str(fake_heart), str(tmp_path / "q"), "--no-html"])
    assert res.exit_code == 0 and "html" not in json.loads(res.output) and not (tmp_path / "q" / "report.html").exists()


def test_a_page_that_cannot_be_made_is_a_warning_not_a_failure(fake_heart, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    res = runner.invoke(app, ["heart", "predict", str(tmp_path), str(bad), str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "warning: report.html not written" in res.output
    assert json.loads(res.output.strip().splitlines()[-1])["html"] is None
    assert (tmp_path / "p" / "heart_ed.vtp").is_file() and not (tmp_path / "p" / "report.html").exists()
