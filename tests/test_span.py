"""``--span auto``: a fan's angle (and pivot offset) from the decorrelation of neighbouring frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sono3d.cli import app
from sono3d.errors import InputError
from sono3d.io import write_sweep
from sono3d.simulate.slicing import sample_planes
from sono3d.simulate.speckle import speckle_volume
from sono3d.sweep.poses import fan_prior_poses
from sono3d.sweep.span import estimate_span
from sono3d.types import Sweep

SHAPE, SPACING = (80, 48), (0.25, 0.25)


@pytest.fixture(scope="module")
def speckle():
    """3D speckle under the canonical probe face (an isotropic PSF: the beam turns with the probe)."""
    return speckle_volume((-7, -22, -22), (7, 22, 2), 0.2, (0.4, 0.4, 0.4), seed=1)


@pytest.mark.parametrize("span,pivot", [(30.0, 0.0), (60.0, 3.0), (120.0, 0.0)])
def test_lateral_fan_span_within_ten_percent(speckle, span, pivot):
    P = fan_prior_poses(40, SHAPE, SPACING, span, "lateral", pivot)
    est = estimate_span(Sweep(sample_planes(speckle, P, SHAPE), None, SPACING), "lateral")
    assert est["span_deg"] == pytest.approx(span, rel=0.10)
    assert est["pivot_offset_mm"] == pytest.approx(pivot, abs=0.8)


def test_axial_fan_span(speckle):
    P = fan_prior_poses(40, SHAPE, SPACING, 40.0, "axial")
    est = estimate_span(Sweep(sample_planes(speckle, P, SHAPE), None, SPACING), "axial")
    assert est["span_deg"] == pytest.approx(40.0, rel=0.10)
    assert est["pivot_offset_mm"] == 0.0


def test_independent_speckle_is_refused():
    rng = np.random.default_rng(0)
    frames = rng.random((12,) + SHAPE).astype(np.float32)
    with pytest.raises(InputError, match="give --span"):
        estimate_span(Sweep(frames, None, SPACING))
    with pytest.raises(InputError, match="at least 3 frames"):
        estimate_span(Sweep(frames[:2], None, SPACING))


def test_reconstruct_span_auto_from_the_cli(speckle, tmp_path):
    """``sweep reconstruct --span auto`` on an untracked fan: the estimate is used and recorded."""
    P = fan_prior_poses(24, SHAPE, SPACING, 60.0, "lateral", 0.0)
    path = write_sweep(tmp_path / "fan.seq.nrrd", Sweep(sample_planes(speckle, P, SHAPE), None, SPACING))
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["sweep", "reconstruct", str(path), str(out), "--span", "auto", "--preset", "small",
                                   "--epochs", "1", "--quiet", "--no-html"])
    assert res.exit_code == 0, res.output
    assert "span estimated" in res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["span_estimate"]["span_deg"] == pytest.approx(60.0, rel=0.10)
    assert rep["config"]["poses"] == "fan" and rep["config"]["span_deg"] == rep["span_estimate"]["span_deg"]
