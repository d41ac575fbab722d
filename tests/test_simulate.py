"""Image formation: plane sampling, B-mode (speckle statistics), pseudo-echo, and sweeps with exact poses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sono3d.errors import InputError
from sono3d.geometry.planes import image_to_world_matrix, pixel_grid_world
from sono3d.geometry.sector import sector_mask
from sono3d.geometry.transforms import euler_to_matrix
from sono3d.phantoms import build_uterus
from sono3d.simulate import (
    BModeParams,
    SweepConfig,
    bmode,
    frame_geometry,
    probe_base_pose,
    probe_placement,
    pseudo_echo,
    sample_plane,
    sample_planes,
    simulate_sweep,
    sweep_poses,
)
from sono3d.types import Volume


@pytest.fixture(scope="module")
def phantom():
    return build_uterus(seed=5, spacing_mm=1.5)


def _volume(rng, spacing=(0.5, 0.75, 1.25)):
    a = rng.random((30, 40, 50)).astype(np.float32)
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = [-7.0, 3.5, 12.25]
    return Volume(a, aff)


def test_axis_aligned_planes_equal_array_slices(rng):
    vol = _volume(rng)
    sx, sy, sz = vol.spacing_mm
    o = vol.affine[:3, 3]
    # Columns along j, rows along k, at i = 17: the image is a[17].T.
    M = image_to_world_matrix(np.column_stack([[0, 1, 0], [0, 0, 1], [1, 0, 0]]), o + [17 * sx, 0, 0], (sz, sy))
    assert np.array_equal(sample_plane(vol, M, (50, 40)), vol.array[17].T)
    # Columns along i, rows along j, at k = 9 (normal -z).
    M = image_to_world_matrix(np.column_stack([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), o + [0, 0, 9 * sz], (sy, sx))
    assert np.array_equal(sample_plane(vol, M, (40, 30)), vol.array[:, :, 9].T)
    # Columns along k, rows along i, at j = 21.
    M = image_to_world_matrix(np.column_stack([[0, 0, 1], [1, 0, 0], [0, 1, 0]]), o + [0, 21 * sy, 0], (sx, sz))
    assert np.array_equal(sample_plane(vol, M, (30, 50)), vol.array[:, 21, :])
    # Nearest and cubic interpolation reproduce voxel values at voxel centres too.
    for order in (0, 3):
        assert np.allclose(sample_plane(vol, M, (30, 50), order=order), vol.array[:, 21, :], atol=1e-5)


def test_trilinear_sampling_is_exact_for_a_linear_field():
    i, j, k = np.meshgrid(np.arange(20), np.arange(22), np.arange(24), indexing="ij")
    aff = np.diag([0.7, 0.9, 1.1, 1.0])
    aff[:3, :3] = euler_to_matrix(0.2, -0.1, 0.4) @ aff[:3, :3]
    aff[:3, 3] = [5.0, -3.0, 2.0]
    world = np.stack([i, j, k, np.ones_like(i)], -1) @ aff.T
    g = np.array([0.3, -0.2, 0.5])
    vol = Volume((world[..., :3] @ g).astype(np.float64), aff)
    centre = aff[:3, :3] @ np.array([9.5, 10.5, 11.5]) + aff[:3, 3]
    R = euler_to_matrix(0.7, 0.3, -0.5)
    M = image_to_world_matrix(R, centre - R[:, 0] * 4 - R[:, 1] * 4, (0.33, 0.41))
    img = sample_plane(vol, M, (20, 20))
    expected = pixel_grid_world(M, (20, 20)) @ g
    assert np.allclose(img, expected, atol=1e-4)


def test_batched_sampling_equals_single_planes_and_respects_mask(rng):
    vol = _volume(rng)
    centre = vol.affine[:3, :3] @ (np.array(vol.shape) / 2) + vol.affine[:3, 3]
    poses = []
    for n in range(5):
        R = Rotation.from_rotvec(rng.normal(size=3) * 0.5).as_matrix()
        poses.append(image_to_world_matrix(R, centre - R[:, 0] * 6 - R[:, 1] * 6, (0.5, 0.5)))
    poses = np.stack(poses)
    mask = np.zeros((24, 24), bool)
    mask[4:20, 2:15] = True
    batch = sample_planes(vol, poses, (24, 24), mask=mask, fill=-1.0)
    for n in range(5):
        single = sample_plane(vol, poses[n], (24, 24))
        assert np.allclose(batch[n][mask], single[mask])
        assert np.all(batch[n][~mask] == -1.0)
    # Outside the volume: the fill value.
    far = poses[0].copy()
    far[:3, 3] += 1000.0
    assert np.all(sample_plane(vol, far, (8, 8), fill=7.0) == 7.0)


def test_sampling_rejects_bad_poses(rng):
    vol = _volume(rng)
    with pytest.raises(InputError):
        sample_planes(vol, np.full((2, 4, 4), np.nan), (8, 8))
    with pytest.raises(InputError):
        sample_plane(vol, np.eye(3), (8, 8))


def test_fan_poses_equal_their_analytic_rotations(phantom):
    cfg = SweepConfig(frames=7, span_deg=120.0, size_px=64)
    shape, spacing, _ = frame_geometry(cfg.size_px, cfg.sector_angle_deg, cfg.depth_mm)
    base = probe_base_pose(probe_placement(phantom), "sagittal", shape, spacing)
    poses, info = sweep_poses(base, shape, cfg)
    tip = base[:3, 3] + (shape[1] - 1) / 2 * base[:3, 0]
    hinge = base[:3, 0] / np.linalg.norm(base[:3, 0])
    assert np.allclose(info["angles_deg"], np.linspace(-60, 60, 7))
    for P, a in zip(poses, np.deg2rad(np.linspace(-60, 60, 7))):
        R = Rotation.from_rotvec(hinge * a).as_matrix()
        assert np.allclose(P[:3, :3], R @ base[:3, :3], atol=1e-12)
        # The tip (top-centre pixel) is the pivot and stays put.
        assert np.allclose(P[:3, 3] + (shape[1] - 1) / 2 * P[:3, 0], tip, atol=1e-9)
    assert np.allclose(poses[3], base)
    # Sagittal vs transversal: the middle planes share the beam and are perpendicular.
    base_t = probe_base_pose(probe_placement(phantom), "transversal", shape, spacing)
    assert np.allclose(base_t[:3, 1], base[:3, 1])
    assert abs(np.dot(base_t[:3, 2], base[:3, 2])) < 1e-9


def test_perturbed_fan_records_true_angles(phantom):
    cfg = SweepConfig(frames=200, size_px=32, jitter_deg=1.0, speed_variation=0.5, seed=3)
    shape, spacing, _ = frame_geometry(cfg.size_px, cfg.sector_angle_deg, cfg.depth_mm)
    base = probe_base_pose(probe_placement(phantom), "sagittal", shape, spacing)
    poses, info = sweep_poses(base, shape, cfg, np.random.default_rng(3))
    true, nominal = np.array(info["angles_deg"]), np.array(info["nominal_angles_deg"])
    hinge = base[:3, 0] / np.linalg.norm(base[:3, 0])
    for P, a in zip(poses[::37], np.deg2rad(true[::37])):
        assert np.allclose(P[:3, :3], Rotation.from_rotvec(hinge * a).as_matrix() @ base[:3, :3], atol=1e-12)
    assert 2.0 < np.abs(true - nominal).max() < 20.0
    assert np.allclose(nominal, np.linspace(-60, 60, 200))
    # Jitter alone: residuals have about the requested spread.
    cfg_j = SweepConfig(frames=400, size_px=32, jitter_deg=1.0)
    _, info_j = sweep_poses(base, shape, cfg_j, np.random.default_rng(0))
    assert np.std(np.array(info_j["angles_deg"]) - np.array(info_j["nominal_angles_deg"])) == pytest.approx(1.0, rel=0.15)


def test_tremor_moves_the_probe_a_little(phantom):
    cfg = SweepConfig(frames=50, size_px=32, tremor_deg=0.5, tremor_mm=0.5)
    shape, spacing, _ = frame_geometry(cfg.size_px, cfg.sector_angle_deg, cfg.depth_mm)
    base = probe_base_pose(probe_placement(phantom), "sagittal", shape, spacing)
    clean, _ = sweep_poses(base, shape, SweepConfig(frames=50, size_px=32))
    shaky, info = sweep_poses(base, shape, cfg, np.random.default_rng(1))
    shift = np.linalg.norm(shaky[:, :3, 3] - clean[:, :3, 3], axis=1)
    assert 0.05 < np.sqrt((shift ** 2).mean()) < 3.0
    assert np.sqrt((np.array(info["tremor_mm"]) ** 2).sum(1).mean()) == pytest.approx(0.5, rel=1e-6)


def test_fully_developed_speckle_has_rayleigh_snr():
    params = BModeParams(attenuation_db_cm_mhz=0.0, noise_db=-np.inf)
    env = bmode(np.ones((6, 192, 192), np.float32), (0.5, 0.5), params, rng=7, return_envelope=True)
    e = env[:, 16:-16, 16:-16].astype(np.float64)
    assert e.mean() / e.std() == pytest.approx(np.sqrt(np.pi / (4 - np.pi)), rel=0.05)  # 1.913
    assert np.sqrt((e ** 2).mean()) == pytest.approx(1.0, rel=0.05)


def test_bmode_range_sector_attenuation_and_seed():
    shape, spacing, sector = frame_geometry(96, 90.0, 80.0)
    echo = np.full((3, *shape), 0.5, np.float32)
    a = bmode(echo, spacing, BModeParams(), sector, rng=2)
    b = bmode(echo, spacing, BModeParams(), sector, rng=2)
    assert np.array_equal(a, b)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    mask = sector_mask(sector, shape, spacing)
    assert np.all(a[:, ~mask] == 0)
    # Without time-gain compensation deep echoes fade; with it they do not.
    no_tgc = bmode(echo, spacing, BModeParams(tgc=0.0, noise_db=-np.inf), sector, rng=2)
    tgc = bmode(echo, spacing, BModeParams(tgc=1.0, noise_db=-np.inf), sector, rng=2)
    dy = spacing[0]
    shallow, deep = slice(int(10 / dy), int(25 / dy)), slice(int(60 / dy), int(75 / dy))
    col = slice(42, 54)
    assert no_tgc[:, deep, col].mean() < no_tgc[:, shallow, col].mean() - 0.2
    assert abs(tgc[:, deep, col].mean() - tgc[:, shallow, col].mean()) < 0.05
    # Brighter tissue gives brighter pixels.
    bright = bmode(np.full((1, *shape), 0.9, np.float32), spacing, BModeParams(), sector, rng=2)
    assert bright[0][mask].mean() > a[0][mask].mean() + 0.05


def test_pseudo_echo_is_a_blurred_noisy_sector_crop():
    labels = np.zeros((64, 64), np.int32)
    labels[20:40, 20:44] = 3
    mask = np.zeros((64, 64), bool)
    mask[5:, 10:54] = True
    clean = pseudo_echo(labels, mask, blur_sigma_px=0.0, noise_std=0.0)
    assert np.array_equal(clean, ((labels > 0) & mask).astype(np.float32))
    noisy = pseudo_echo(labels, mask, blur_sigma_px=2.0, noise_std=0.1, rng=4)
    assert np.array_equal(noisy, pseudo_echo(labels, mask, 2.0, 0.1, rng=4))
    assert np.all(noisy[~mask] == 0) and noisy.min() >= 0 and noisy.max() <= 1
    assert 0.0 < noisy[mask].std() and noisy[30, 30] > 0.6 and noisy[50, 30] < 0.4
    batch = pseudo_echo(np.stack([labels, labels]), mask, 2.0, 0.0)
    assert np.allclose(batch[0], pseudo_echo(labels, mask, 2.0, 0.0))


def test_simulated_label_sweep_samples_the_truth(phantom):
    cfg = SweepConfig(frames=9, size_px=64)
    sweep, truth = simulate_sweep(phantom, cfg)
    assert sweep.frames.shape == (9, 64, 64)
    assert sweep.sector is not None and sweep.has_poses
    assert truth is not None and np.array_equal(truth.array, phantom.labels.array)
    mask = sector_mask(sweep.sector, sweep.shape, sweep.spacing_mm)
    again = sample_planes(truth, sweep.image_to_world, sweep.shape, mask=mask)
    assert np.allclose(sweep.frames, again)
    assert sweep.frames[4].max() == pytest.approx(1.0, abs=0.01)  # the middle frame cuts the uterus border
    assert np.all(sweep.frames[:, ~mask] == 0)
    assert sweep.meta["sweep"]["angles_deg"][0] == pytest.approx(-60.0)
    assert len(sweep.meta["frame_times_s"]) == 9


def test_simulated_sweeps_are_reproducible(phantom):
    cfg = SweepConfig(frames=4, size_px=48, appearance="bmode", jitter_deg=1.0, tremor_deg=0.3, seed=9)
    a, ta = simulate_sweep(phantom, cfg)
    b, _ = simulate_sweep(phantom, cfg)
    c, _ = simulate_sweep(phantom, SweepConfig(frames=4, size_px=48, appearance="bmode", jitter_deg=1.0,
                                                tremor_deg=0.3, seed=10))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.image_to_world, b.image_to_world)
    assert not np.array_equal(a.frames, c.frames)
    assert ta.meta["kind"] == "echogenicity"


def test_translation_and_transversal_sweeps(phantom):
    sweep, _ = simulate_sweep(phantom, SweepConfig(kind="translation", direction="transversal", frames=5,
                                                   size_px=48, length_mm=20.0))
    steps = np.diff(sweep.image_to_world[:, :3, 3], axis=0)
    assert np.allclose(np.linalg.norm(steps, axis=1), 5.0)
    assert np.allclose(sweep.image_to_world[:, :3, :3], sweep.image_to_world[:1, :3, :3])


def test_bad_sweep_configs_are_input_errors(phantom):
    for kwargs in ({"frames": 1}, {"frames": 0}, {"span_deg": 0.0}, {"span_deg": -10.0},
                   {"direction": "coronal"}, {"appearance": "ct"}, {"size_px": 2}, {"depth_mm": 0.0}):
        with pytest.raises(InputError):
            SweepConfig(**kwargs)
    # A volume the probe never sees.
    far = Volume(np.ones((4, 4, 4), np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    far.affine[:3, 3] = 5000.0
    from sono3d.simulate import ProbePlacement

    with pytest.raises(InputError, match="misses"):
        simulate_sweep(far, SweepConfig(frames=3, size_px=16), ProbePlacement(np.zeros(3), np.array([0, 0, 1.0])))


def test_plain_volume_sweep_aims_at_its_centre(rng):
    vol = Volume(np.ones((40, 40, 40), np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    sweep, truth = simulate_sweep(vol, SweepConfig(frames=3, size_px=32, depth_mm=60.0))
    assert sweep.frames.max() == 1.0 and truth is not None


@pytest.mark.parametrize("fwhm", [(0.5, 1.2), (2.0, 3.0)])
def test_fast_bmode_envelope_equals_time_domain_reference(fwhm):
    from sono3d.simulate.bmode import envelope, rf_frames

    shape, spacing, sector = frame_geometry(40, 90.0, 30.0)
    echo = np.random.default_rng(1).random((2, *shape)).astype(np.float32)
    # Empty top and bottom rows: the reference's circular Hilbert transform then sees an RF that
    # starts and ends at zero, like the fast path's zero-padded one.
    echo[:, :8] = 0
    echo[:, -8:] = 0
    params = BModeParams(axial_fwhm_mm=fwhm[0], lateral_fwhm_mm=fwhm[1], tgc=0.0, noise_db=-np.inf)
    fast = bmode(echo, spacing, params, None, rng=3, return_envelope=True)
    rf, U = rf_frames(echo, spacing, params, None, rng=3)
    ref = envelope(rf, axis=1, step=U, offset=(U - 1) // 2)
    scale = np.median(ref[:, 12:-12] / fast[:, 12:-12])
    assert np.allclose(ref, scale * fast, atol=2e-3 * ref.max())  # same envelope up to the normalisation


def test_envelope_matches_scipy_hilbert():
    from scipy.signal import hilbert

    from sono3d.simulate.bmode import envelope

    x = np.random.default_rng(0).standard_normal((3, 64, 5)).astype(np.float32)
    full = np.abs(hilbert(x, axis=1))
    assert np.allclose(envelope(x, axis=1), full, atol=1e-5)
    assert np.allclose(envelope(x, axis=1, step=4, offset=1), full[:, 1::4], atol=1e-5)
