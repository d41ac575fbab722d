"""Poses: the sensorless fan prior, tracked-pose checks, and the learned smooth correction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_file
from sono3d.errors import InputError
from sono3d.geometry import plane_normal, validate_image_to_world
from sono3d.io import read_sweep
from sono3d.sweep.poses import PoseRefinement, canonical_pose, dct_basis, fan_prior_poses, resolve_poses
from sono3d.sweep.raster import render_slices
from sono3d.types import Sweep

SHAPE = (20, 31)
SPACING = (0.4, 0.5)


def test_canonical_pose_is_rigid_with_probe_face_at_origin():
    M = canonical_pose(SHAPE, SPACING)
    validate_image_to_world(M, SPACING)
    top_centre = M @ np.array([(SHAPE[1] - 1) / 2, 0, 0, 1.0])
    assert np.allclose(top_centre[:3], 0)
    bottom = M @ np.array([(SHAPE[1] - 1) / 2, SHAPE[0] - 1, 0, 1.0])
    assert np.allclose(bottom[:3], [0, 0, -(SHAPE[0] - 1) * SPACING[0]])  # the beam points down


def test_lateral_fan_prior_tilts_about_the_probe_face():
    n, span = 9, 80.0
    P = fan_prior_poses(n, SHAPE, SPACING, span, "lateral")
    validate_image_to_world(P, SPACING)
    assert np.allclose(P[n // 2], canonical_pose(SHAPE, SPACING))
    # every plane contains the top row (the tilt axis through the probe face)
    for c in (0, 15, 30):
        pts = P @ np.array([c, 0, 0, 1.0])
        assert np.allclose(pts, pts[0])
    normals = plane_normal(P)
    angle = np.degrees(np.arccos(np.clip(normals[0] @ normals[-1], -1, 1)))
    assert angle == pytest.approx(span, abs=1e-6)
    steps = np.degrees(np.arccos(np.clip(np.sum(normals[1:] * normals[:-1], axis=1), -1, 1)))
    assert np.allclose(steps, span / (n - 1))  # uniform angular spacing


def test_axial_fan_prior_spins_about_the_central_beam():
    P = fan_prior_poses(7, SHAPE, SPACING, 90.0, "axial")
    for r in (0, 10, 19):
        pts = P @ np.array([15, r, 0, 1.0])
        assert np.allclose(pts, pts[0])


def test_pivot_offset_moves_the_pivot_above_the_face():
    P = fan_prior_poses(5, SHAPE, SPACING, 40.0, "lateral", pivot_offset_mm=10.0)
    face = P @ np.array([15, 0, 0, 1.0])
    assert not np.allclose(face, face[0])
    assert np.allclose(np.linalg.norm(face[:, :3] - [0, 0, 10.0], axis=1), 10.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"span_deg": 0.0}, "span"),
    ({"span_deg": -10.0}, "span"),
    ({"fan_axis": "sideways"}, "fan axis"),
    ({"pivot_offset_mm": -1.0}, "pivot"),
])
def test_bad_fan_options(kwargs, match):
    sweep = Sweep(np.ones((4,) + SHAPE, np.float32), None, SPACING)
    args = {"span_deg": 60.0, "fan_axis": "lateral", "pivot_offset_mm": 0.0, **kwargs}
    with pytest.raises(InputError, match=match):
        resolve_poses(sweep, "fan", **args)


def test_tracked_poses_are_checked():
    frames = np.ones((3,) + SHAPE, np.float32)
    with pytest.raises(InputError, match="no poses"):
        resolve_poses(Sweep(frames, None, SPACING), "tracked")
    P = fan_prior_poses(3, SHAPE, SPACING, 30.0)
    assert np.allclose(resolve_poses(Sweep(frames, P, SPACING), "tracked"), P)
    sheared = P.copy()
    sheared[1, 0, 1] += 0.3  # 31 degrees of shear
    with pytest.raises(InputError, match="not rigid"):
        resolve_poses(Sweep(frames, sheared, SPACING), "tracked")
    nan = P.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        Sweep(frames, nan, SPACING)
    with pytest.raises(InputError, match="pose mode"):
        resolve_poses(Sweep(frames, P, SPACING), "magic")


def test_dct_basis_is_smooth_and_orthogonal():
    B = dct_basis(50, 4)
    assert B.shape == (50, 4)
    gram = B.T @ B
    assert np.allclose(gram, np.diag(np.diag(gram)), atol=1e-9)
    assert np.allclose(B.sum(axis=0), 0, atol=1e-9)  # no constant component


def test_pose_refinement_starts_at_identity_and_stays_rigid():
    P = torch.as_tensor(fan_prior_poses(6, SHAPE, SPACING, 50.0), dtype=torch.float64)
    ref = PoseRefinement(6, 3, np.array([1.0, 2.0, -5.0]), dtype=torch.float64)
    idx = torch.arange(6)
    assert torch.allclose(ref(idx, P), P)
    with torch.no_grad():
        ref.rot[0] = torch.tensor([0.05, -0.02, 0.01], dtype=torch.float64)
        ref.trans[1] = torch.tensor([0.5, 0.0, -0.3], dtype=torch.float64)
    out = ref(idx, P).detach().numpy()
    validate_image_to_world(out, SPACING)
    assert not np.allclose(out, P.numpy())
    assert ref.summary()["max_rotation_deg"] > 0 and ref.summary()["max_translation_mm"] > 0


def test_pose_refinement_receives_gradients_through_the_rasterizer():
    P = torch.as_tensor(fan_prior_poses(4, (12, 12), (1.0, 1.0), 30.0), dtype=torch.float64)
    ref = PoseRefinement(4, 2, np.zeros(3), dtype=torch.float64)
    means = torch.tensor([[0.5, 0.3, -5.0], [-2.0, 0.1, -7.0]], dtype=torch.float64)
    img = render_slices(means, torch.zeros(2, 3, dtype=torch.float64), torch.tensor([[1.0, 0, 0, 0]] * 2,
                        dtype=torch.float64), torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                        ref(torch.arange(4), P), (12, 12), backend="reference")
    (img * torch.linspace(0, 1, 12, dtype=torch.float64)).sum().backward()
    assert ref.rot.grad is not None and ref.rot.grad.abs().sum() > 0
    assert ref.trans.grad.abs().sum() > 0


def test_tracked_poses_tolerate_calibration_shear_but_not_wrong_scale():
    frames = np.ones((3,) + SHAPE, np.float32)
    P = fan_prior_poses(3, SHAPE, SPACING, 30.0)
    slight = P.copy()
    slight[:, :3, 1] += 0.02 * slight[:, :3, 0] / SPACING[1] * SPACING[0]  # ~1 degree, as PLUS calibrations have
    assert np.allclose(resolve_poses(Sweep(frames, slight, SPACING), "tracked"), slight)
    scaled = P.copy()
    scaled[2, :3, 0] *= 1.5
    with pytest.raises(InputError, match="frame 2 is not rigid"):
        resolve_poses(Sweep(frames, scaled, SPACING), "tracked")


def test_real_plus_sweep_poses_are_accepted():
    sweep = read_sweep(shared_file("plus/SpinePhantomFreehand.igs.mha"),
                       plus_config=shared_file("plus/PlusDeviceSet_SpinePhantomFreehandReconstructionOnly.xml"))
    assert resolve_poses(sweep, "tracked").shape == (sweep.n_frames, 4, 4)
