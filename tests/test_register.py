"""Sweep-to-sweep registration (sono3d.sweep.register) and the joint reconstruction (sono3d.sweep.joint)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from sono3d.errors import InputError
from sono3d.geometry.transforms import rigid
from sono3d.simulate.slicing import sample_planes
from sono3d.sweep import ReconstructConfig
from sono3d.sweep.joint import JointConfig, SweepOptions, reconstruct_sweeps, registration_mode
from sono3d.sweep.poses import fan_prior_poses
from sono3d.sweep.register import (
    MaskedNCC,
    SearchConfig,
    masked_ncc,
    masked_ncc_reference,
    register_sweeps,
    rotation_grid,
    rotvec_of,
    sweep_centre,
    transform_error,
)
from sono3d.types import Sweep, Volume

SHAPE, SPACING = (40, 40), (0.5, 0.5)
# A tiny search: voxels matched to the ~15 mm object below.
TINY = SearchConfig(coarse_voxel_mm=2.0, medium_voxel_mm=1.0, fine_voxel_mm=0.6, max_shift_mm=8.0, blur_voxels=1.0)


def _object() -> Volume:
    """A label-like asymmetric object below the canonical probe face: a pear (two blobs) and a knob."""
    aff = np.diag([0.4, 0.4, 0.4, 1.0])
    aff[:3, 3] = [-12.0, -12.0, -22.0]
    g = np.arange(61) * 0.4
    x, y, z = np.meshgrid(g - 12.0, g - 12.0, g - 22.0, indexing="ij")
    body = ((x / 5.0) ** 2 + (y / 3.5) ** 2 + ((z + 10.0) / 4.0) ** 2) < 1.0
    head = (((x - 4.0) / 3.0) ** 2 + ((y - 1.0) / 2.5) ** 2 + ((z + 6.0) / 2.5) ** 2) < 1.0
    knob = ((x + 2.0) ** 2 + (y + 3.5) ** 2 + (z + 13.0) ** 2) < 2.0 ** 2
    inside = body | head | knob
    border = inside & ~ndimage.binary_erosion(inside, iterations=2)
    return Volume(np.where(border, 1.0, np.where(inside, 0.5, 0.0)).astype(np.float32), aff)


def _pair(T_true: np.ndarray, n: int = 40) -> tuple[Sweep, Sweep]:
    """Sweep a in the world frame, sweep b in its own frame whose placement in the world is ``T_true``."""
    vol = _object()
    P = fan_prior_poses(n, SHAPE, SPACING, 100.0)
    a = Sweep(sample_planes(vol, P, SHAPE), P, SPACING)
    b = Sweep(sample_planes(vol, T_true[None] @ P, SHAPE), P.copy(), SPACING, meta={"pose_frame": "own"})
    return a, b


def _transform(roll_deg: float, tilt_deg: float, shift_mm: tuple[float, float, float]) -> np.ndarray:
    R = Rotation.from_rotvec(np.deg2rad(tilt_deg) * np.array([1.0, 0.0, 0.0])).as_matrix() @ \
        Rotation.from_rotvec(np.deg2rad(roll_deg) * np.array([0.0, 0.0, 1.0])).as_matrix()
    return rigid(R, shift_mm)


def test_masked_ncc_matches_the_direct_sums():
    rng = np.random.default_rng(3)
    f, m = rng.random((5, 6, 4)), rng.random((4, 3, 5))
    fm, mm = rng.random(f.shape) > 0.3, rng.random(m.shape) > 0.2
    fast, n_fast = masked_ncc(f, fm, m, mm, min_overlap=4)
    ref, n_ref = masked_ncc_reference(f, fm, m, mm, min_overlap=4)
    assert fast.shape == ref.shape == (8, 8, 8)
    np.testing.assert_array_equal(n_fast, n_ref)
    np.testing.assert_allclose(fast, ref, atol=1e-9)
    assert np.abs(ref).max() > 0.5  # something was compared
    at = np.array([[0, 0, 0], [3, 4, 2], [7, 7, 7], [5, 1, 6]])
    part, n_part = MaskedNCC(f, fm, m.shape)(m, mm, 4, at=at)
    np.testing.assert_allclose(part, ref[tuple(at.T)], atol=1e-9)
    np.testing.assert_array_equal(n_part, n_ref[tuple(at.T)])


def test_masked_ncc_finds_a_known_shift():
    rng = np.random.default_rng(0)
    big = rng.random((14, 12, 10))
    moving = big[3:11, 2:9, 1:8]  # the fixed volume's voxels from (3, 2, 1) on: shift d = (3, 2, 1)
    ncc, _ = masked_ncc(big, np.ones(big.shape, bool), moving, np.ones(moving.shape, bool), min_overlap=50)
    k = np.unravel_index(np.argmax(ncc), ncc.shape)
    assert tuple(np.asarray(k) - (np.asarray(moving.shape) - 1)) == (3, 2, 1)
    assert ncc[k] == pytest.approx(1.0)


def test_rotation_grid_covers_every_roll_and_tilt():
    beam_f = np.array([0.0, 0.3, -1.0]) / np.linalg.norm([0.0, 0.3, -1.0])
    beam_m = np.array([0.0, 0.0, -1.0])
    grid = rotation_grid(beam_f, beam_m, roll_step_deg=30.0, max_tilt_deg=45.0, tilt_step_deg=22.5)
    tilt = np.degrees(np.arccos(np.clip((grid @ beam_m) @ beam_f, -1, 1)))
    assert tilt.max() <= 45.0 + 1e-6
    # any rotation whose beam lies within the cone is close to a grid rotation
    rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(40):
        R = Rotation.random(random_state=rng).as_matrix()
        if np.degrees(np.arccos(np.clip((R @ beam_m) @ beam_f, -1, 1))) > 45:
            continue
        d = min(np.degrees(np.linalg.norm(rotvec_of(R @ G.T))) for G in grid)
        worst = max(worst, d)
    assert worst < 25.0


@pytest.mark.parametrize("roll, tilt, shift", [(110.0, 15.0, (2.0, -1.5, 1.0)), (-80.0, -10.0, (-2.5, 1.0, 0.5))])
def test_a_known_rigid_offset_is_recovered(roll, tilt, shift):
    T_true = _transform(roll, tilt, shift)
    a, b = _pair(T_true)
    mask = np.ones(SHAPE, bool)
    reg = register_sweeps((a.frames, a.image_to_world, mask), (b.frames, b.image_to_world, mask), TINY)
    err = transform_error(reg.transform, T_true, sweep_centre(b.image_to_world, mask))
    assert reg.ok, reg.summary()
    assert err["rotation_deg"] < 3.0 and err["translation_mm"] < 0.5, err


def test_unrelated_content_is_reported_as_no_overlap():
    a, _ = _pair(np.eye(4))
    rng = np.random.default_rng(2)
    noise = ndimage.gaussian_filter(rng.random((61, 61, 61)), 1.5)
    blobs = Volume(((noise > np.quantile(noise, 0.97)) * 0.8).astype(np.float32), _object().affine)
    P = a.image_to_world
    b = Sweep(sample_planes(blobs, P, SHAPE), P.copy(), SPACING)
    mask = np.ones(SHAPE, bool)
    reg = register_sweeps((a.frames, P, mask), (b.frames, P, mask), TINY)
    assert not reg.ok and reg.ncc < TINY.min_ncc


def test_registration_modes():
    a, b = _pair(np.eye(4))
    tracked = Sweep(a.frames, a.image_to_world, SPACING)
    assert registration_mode(tracked, tracked, "tracked", "tracked", "auto", False) == "none"
    assert registration_mode(tracked, tracked, "tracked", "tracked", "auto", True) == "refine"
    assert registration_mode(tracked, b, "tracked", "tracked", "auto", False) == "search"  # b: own frame
    assert registration_mode(tracked, tracked, "tracked", "fan", "auto", False) == "search"
    assert registration_mode(tracked, tracked, "fan", "tracked", "auto", False) == "search"
    assert registration_mode(tracked, tracked, "tracked", "tracked", "search", False) == "search"
    with pytest.raises(InputError, match="register"):
        SweepOptions(register="sometimes")


def test_tracked_sweeps_with_register_keep_the_identity():
    """Two tracked sweeps in one frame (a sagittal-like and a transversal-like fan): --register
    learns a transform from the identity, and it must stay there."""
    vol = _object()
    P = fan_prior_poses(30, SHAPE, SPACING, 100.0)
    turn = _transform(90.0, 0.0, (0.0, 0.0, 0.0))
    a = Sweep(sample_planes(vol, P, SHAPE), P, SPACING)
    b = Sweep(sample_planes(vol, turn[None] @ P, SHAPE), turn[None] @ P, SPACING)
    cfg = ReconstructConfig.preset("small", epochs=12, gaussians_per_slice=30, seed=1)
    res = reconstruct_sweeps([a, b], cfg, joint=JointConfig(search=TINY, register_tracked=True),
                             truth_transforms=[np.eye(4), np.eye(4)], progress=False)
    reg = res.report["registration"][1]
    assert reg["mode"] == "refine" and reg["status"] == "registered"
    assert reg["error"]["rotation_deg"] < 0.5 and reg["error"]["translation_mm"] < 0.5, reg["error"]
    # without --register the transform is exactly the identity and nothing is learned
    res = reconstruct_sweeps([a, b], ReconstructConfig.preset("small", epochs=1, gaussians_per_slice=10),
                             joint=JointConfig(search=TINY), progress=False)
    assert res.report["registration"][1]["status"] == "identity"
    np.testing.assert_array_equal(res.sweeps[1].transform, np.eye(4))


def test_joint_reconstruction_learns_the_transform_and_reports_it():
    T_true = _transform(100.0, 12.0, (1.5, -1.0, 0.5))
    a, b = _pair(T_true, n=30)
    cfg = ReconstructConfig.preset("small", epochs=6, gaussians_per_slice=30, seed=0, poses="fan", span_deg=100.0)
    res = reconstruct_sweeps([a, b], cfg, joint=JointConfig(search=TINY), truth_transforms=[np.eye(4), T_true],
                             names=["a", "b"], progress=False)
    rep = res.report
    assert [r["status"] for r in rep["registration"]] == ["reference", "registered"]
    assert rep["registration"][1]["error"]["rotation_deg"] < 3.0
    assert rep["registration"][1]["error"]["translation_mm"] < 0.5
    assert len(rep["sweeps"]) == 2 and all(s["holdout"]["frames"] > 0 for s in rep["sweeps"])
    # seeding "first": the Gaussians start at the full density on a's training slices and on b's
    # only outside a's swept region, so fewer than twice one sweep's count
    assert rep["gaussians_per_slice"] == 30
    assert rep["initial_gaussians"] < 2 * 30 * len(res.sweeps[0].train_index)
    assert res.sweeps[1].poses.shape == (30, 4, 4)
    np.testing.assert_allclose(res.sweeps[1].poses, res.sweeps[1].transform[None] @ b.image_to_world, atol=1e-5)


def test_option_lists_must_match_the_sweeps():
    a, b = _pair(np.eye(4), n=10)
    with pytest.raises(InputError, match="2 sweeps"):
        reconstruct_sweeps([a, b], options=[SweepOptions()], progress=False)
    with pytest.raises(InputError, match="sweep b: .*at least 2 frames"):
        reconstruct_sweeps([a, b.subset([0])], names=["a", "b"], progress=False)


def test_in_swept_region_matches_a_delaunay_point_location():
    """The hull-facet test (joint seeding, swept_region) against scipy's Delaunay tetrahedra."""
    from scipy.spatial import Delaunay

    from sono3d.sweep.evaluate import _hull_points, in_swept_region
    from sono3d.sweep.initialise import frame_mask

    P = fan_prior_poses(12, SHAPE, SPACING, 100.0)
    mask = frame_mask(SHAPE, SPACING, None)
    pts = np.random.default_rng(0).uniform([-15, -15, -22], [15, 15, 2], size=(4000, 3))
    expected = Delaunay(_hull_points(P, mask)).find_simplex(pts) >= 0
    got = in_swept_region(pts, P, mask)
    assert 0.1 < got.mean() < 0.9
    np.testing.assert_array_equal(got, expected)
    assert not in_swept_region(pts, P[:1], mask).any()  # one plane encloses nothing


def test_single_sweep_model_options_are_refused():
    a, b = _pair(np.eye(4), n=10)
    for overrides in ({"blend": True}, {"slice_thickness_mm": 1.0}):
        with pytest.raises(InputError, match="does not support"):
            reconstruct_sweeps([a, b], ReconstructConfig.preset("small", **overrides), progress=False)
