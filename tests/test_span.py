"""``--span auto``: a fan's angle (and pivot offset) from the decorrelation of neighbouring frames."""

from __future__ import annotations

import numpy as np
import pytest

from sono3d.errors import InputError
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
