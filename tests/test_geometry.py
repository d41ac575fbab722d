"""Geometry: transforms, quaternions, Euler angles, planes, sectors, sweeps and mesh helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sono3d.errors import InputError
from sono3d.geometry import (
    apply,
    axis_angle_to_matrix,
    euler_to_matrix,
    fan_sweep,
    fan_sweep_in_image,
    image_to_world_matrix,
    invert_rigid,
    is_rotation,
    matrix_to_euler,
    matrix_to_quat,
    pixel_grid_world,
    pixel_to_world,
    plane_normal,
    polar_coordinates,
    quat_multiply,
    quat_normalize,
    quat_to_matrix,
    rigid,
    rot_x,
    rot_y,
    rot_z,
    rotate_about,
    sector_for_probe,
    sector_mask,
    sector_to_cartesian,
    split_scale,
    translation_sweep,
    uniform_angles,
    validate_image_to_world,
    world_to_pixel,
)
from sono3d.types import Sector

EX, EY, EZ = np.eye(3)


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    return quat_to_matrix(q)


def _pose(rng: np.random.Generator, spacing: tuple[float, float] = (0.3, 0.2)) -> np.ndarray:
    return image_to_world_matrix(_random_rotations(rng, 1)[0], rng.normal(scale=20, size=3), spacing)


# ------------------------------------------------------------------ rotations


def test_axis_rotations_analytic() -> None:
    q = math.pi / 2
    np.testing.assert_allclose(rot_z(q) @ EX, EY, atol=1e-15)
    np.testing.assert_allclose(rot_x(q) @ EY, EZ, atol=1e-15)
    np.testing.assert_allclose(rot_y(q) @ EZ, EX, atol=1e-15)
    for axis, R in ((EX, rot_x), (EY, rot_y), (EZ, rot_z)):
        np.testing.assert_allclose(axis_angle_to_matrix(axis, 0.7), R(0.7), atol=1e-15)
    with pytest.raises(InputError):
        axis_angle_to_matrix([0, 0, 0], 1.0)


def test_euler_is_rz_ry_rx_and_round_trips(rng: np.random.Generator) -> None:
    ax, ay, az = 0.3, -0.5, 1.1
    R = euler_to_matrix(ax, ay, az)
    np.testing.assert_allclose(R, rot_z(az) @ rot_y(ay) @ rot_x(ax), atol=1e-15)
    # Extrinsic x then y then z: a point is first turned about x.
    p = np.array([0.2, 0.4, 0.9])
    np.testing.assert_allclose(R @ p, rot_z(az) @ (rot_y(ay) @ (rot_x(ax) @ p)), atol=1e-15)
    for angles in rng.uniform([-math.pi, -1.5, -math.pi], [math.pi, 1.5, math.pi], size=(20, 3)):
        np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(*angles)), angles, atol=1e-9)


@pytest.mark.parametrize("theta_y", [math.pi / 2, -math.pi / 2])
def test_euler_gimbal_lock_reproduces_matrix(theta_y: float) -> None:
    R = euler_to_matrix(0.4, theta_y, -0.9)
    tx, ty, tz = matrix_to_euler(R)
    assert tx == 0.0 and ty == pytest.approx(theta_y)
    np.testing.assert_allclose(euler_to_matrix(tx, ty, tz), R, atol=1e-9)


# ------------------------------------------------------------------ quaternions


def test_quaternion_matches_axis_angle(rng: np.random.Generator) -> None:
    for _ in range(10):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = rng.uniform(0, math.pi)
        q = np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])
        np.testing.assert_allclose(quat_to_matrix(q), axis_angle_to_matrix(axis, angle), atol=1e-12)


def test_quaternion_matrix_round_trips(rng: np.random.Generator) -> None:
    q = quat_normalize(rng.normal(size=(50, 4)))
    assert np.all(q[:, 0] >= 0)
    R = quat_to_matrix(q)
    assert all(is_rotation(r) for r in R)
    q2 = matrix_to_quat(R)
    assert np.all(q2[:, 0] >= 0)
    np.testing.assert_allclose(q2, q, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q2), R, atol=1e-12)


@pytest.mark.parametrize(
    "axis", [EX, EY, EZ, np.array([1.0, 1.0, 0.0]) / 2**0.5, np.array([1.0, -2.0, 3.0]) / 14**0.5]
)
def test_quaternion_180_degrees(axis: np.ndarray) -> None:
    R = axis_angle_to_matrix(axis, math.pi)
    q = matrix_to_quat(R)
    assert q[0] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(np.abs(q[1:]), np.abs(axis), atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q), R, atol=1e-12)


def test_quaternion_sign_normalised() -> None:
    np.testing.assert_allclose(quat_normalize([-2.0, 0, 0, 0]), [1, 0, 0, 0])
    np.testing.assert_allclose(matrix_to_quat(np.eye(3)), [1, 0, 0, 0])
    with pytest.raises(InputError):
        quat_normalize([0.0, 0, 0, 0])


def test_quat_multiply_is_matrix_product(rng: np.random.Generator) -> None:
    a = quat_normalize(rng.normal(size=(8, 4)))
    b = quat_normalize(rng.normal(size=(8, 4)))
    np.testing.assert_allclose(
        quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-12
    )


def test_rigid_inverse_and_apply(rng: np.random.Generator) -> None:
    T = np.stack([rigid(R, rng.normal(size=3)) for R in _random_rotations(rng, 5)])
    Ti = invert_rigid(T)
    np.testing.assert_allclose(T @ Ti, np.broadcast_to(np.eye(4), T.shape), atol=1e-12)
    np.testing.assert_allclose(Ti, np.linalg.inv(T), atol=1e-12)
    p = rng.normal(size=(7, 3))
    np.testing.assert_allclose(apply(Ti[0], apply(T[0], p)), p, atol=1e-12)


def test_split_scale_rejects_shear_and_mirror() -> None:
    R, s = split_scale(rot_z(0.3) @ np.diag([0.2, 0.3, 1.0]))
    np.testing.assert_allclose(s, [0.2, 0.3, 1.0])
    np.testing.assert_allclose(R, rot_z(0.3), atol=1e-12)
    with pytest.raises(InputError, match="sheared or mirrored"):
        split_scale(np.array([[1.0, 0.3, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(InputError, match="sheared or mirrored"):
        split_scale(np.diag([1.0, -1.0, 1.0]))


# ------------------------------------------------------------------ image planes


def test_image_to_world_axes() -> None:
    M = image_to_world_matrix(np.eye(3), [10.0, 20.0, 30.0], (0.5, 0.25))  # (dy, dx)
    np.testing.assert_allclose(pixel_to_world(M, 0, 0), [10, 20, 30])
    np.testing.assert_allclose(pixel_to_world(M, 0, 4), [11, 20, 30])  # 4 columns of 0.25 mm along x
    np.testing.assert_allclose(pixel_to_world(M, 2, 0), [10, 21, 30])  # 2 rows of 0.5 mm along y
    np.testing.assert_allclose(plane_normal(M), [0, 0, 1])
    grid = pixel_grid_world(M, (3, 5))
    assert grid.shape == (3, 5, 3)
    np.testing.assert_allclose(grid[2, 4], pixel_to_world(M, 2, 4))


def test_pixel_world_round_trip_and_distance_sign(rng: np.random.Generator) -> None:
    M = _pose(rng)
    rows = rng.uniform(0, 100, size=40)
    cols = rng.uniform(0, 80, size=40)
    pts = pixel_to_world(M, rows, cols)
    r, c, d = world_to_pixel(M, pts)
    np.testing.assert_allclose(r, rows, atol=1e-9)
    np.testing.assert_allclose(c, cols, atol=1e-9)
    np.testing.assert_allclose(d, 0, atol=1e-9)
    n = plane_normal(M)
    r2, c2, d2 = world_to_pixel(M, pts + 2.5 * n)
    np.testing.assert_allclose(d2, 2.5, atol=1e-9)
    np.testing.assert_allclose(r2, rows, atol=1e-9)
    _, _, d3 = world_to_pixel(M, pts - 1.0 * n)
    np.testing.assert_allclose(d3, -1.0, atol=1e-9)


def test_validate_image_to_world(rng: np.random.Generator) -> None:
    M = _pose(rng, spacing=(0.3, 0.2))
    validate_image_to_world(M, spacing_mm=(0.3, 0.2))
    validate_image_to_world(np.stack([M, M]))
    with pytest.raises(InputError, match="spacing"):
        validate_image_to_world(M, spacing_mm=(0.2, 0.3))
    sheared = M.copy()
    sheared[:3, 1] += 0.1 * sheared[:3, 0]
    with pytest.raises(InputError, match="not rigid"):
        validate_image_to_world(sheared)
    mirrored = M.copy()
    mirrored[:3, 2] *= -1
    with pytest.raises(InputError, match="not rigid"):
        validate_image_to_world(mirrored)
    nan = M.copy()
    nan[0, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        validate_image_to_world(nan)
    scaled_normal = M.copy()
    scaled_normal[:3, 2] *= 2
    with pytest.raises(InputError, match="normal"):
        validate_image_to_world(scaled_normal)
    projective = M.copy()
    projective[3, 0] = 0.1
    with pytest.raises(InputError, match="affine"):
        validate_image_to_world(projective)
    with pytest.raises(InputError, match="shape"):
        validate_image_to_world(np.eye(3))


# ------------------------------------------------------------------ sectors


@pytest.mark.parametrize("probe_radius", [0.0, 20.0])
def test_sector_mask_area(probe_radius: float) -> None:
    shape, spacing = (500, 501), (0.25, 0.3)  # (dy, dx): 125 mm deep, 150 mm wide; odd width puts the apex on a pixel
    s = sector_for_probe(shape, spacing, angle_deg=60.0, depth_mm=80.0, probe_radius_mm=probe_radius)
    mask = sector_mask(s, shape, spacing)
    r0, r1 = s.radius_mm
    analytic = 0.5 * math.radians(60.0) * (r1**2 - r0**2)
    assert mask.sum() * spacing[0] * spacing[1] == pytest.approx(analytic, rel=0.02)
    apex_row = s.apex_px[1]
    if probe_radius == 0:
        assert apex_row == 0.0 and mask[0, int(s.apex_px[0])]  # phased: apex is on the top row, in the fan
    else:
        assert apex_row == pytest.approx(-probe_radius / spacing[0])  # curvilinear: apex above the image
        assert not mask[0, 0] and mask[int(5 / spacing[0]), int(round(s.apex_px[0]))]


def test_sector_polar_and_tilt() -> None:
    shape, spacing = (260, 400), (0.5, 0.5)
    s = Sector(apex_px=(150.0, 0.0), angle_deg=40.0, radius_mm=(0.0, 120.0), tilt_deg=30.0)
    radius, angle = polar_coordinates(s, shape, spacing)
    rows, cols = sector_to_cartesian(s, np.array([50.0]), np.array([0.0]), spacing)
    # The tilted central beam: 30 degrees from +row towards +col.
    assert rows[0] == pytest.approx(50 * math.cos(math.radians(30)) / 0.5)
    assert cols[0] == pytest.approx(150 + 50 * math.sin(math.radians(30)) / 0.5)
    r, c = int(round(rows[0])), int(round(cols[0]))
    assert abs(angle[r, c]) < 0.01 and radius[r, c] == pytest.approx(50, abs=0.5)
    mask = sector_mask(s, shape, spacing)
    assert mask[r, c]
    # The untilted beam direction (straight down) lies 30 deg off the axis: outside a 40 deg fan.
    assert not mask[100, 150]
    analytic = 0.5 * math.radians(40.0) * 120.0**2
    assert mask.sum() * 0.25 == pytest.approx(analytic, rel=0.02)


def test_sector_rejects_bad_geometry() -> None:
    with pytest.raises(InputError):
        Sector(apex_px=(0, 0), angle_deg=0.0, radius_mm=(0, 10))
    with pytest.raises(InputError):
        Sector(apex_px=(0, 0), angle_deg=60.0, radius_mm=(10, 5))
    with pytest.raises(InputError):
        sector_for_probe((10, 10), (1, 1), 60, depth_mm=-1)


# ------------------------------------------------------------------ sweeps


def test_fan_sweep_frames_are_analytic_rotations(rng: np.random.Generator) -> None:
    base = _pose(rng)
    axis = rng.normal(size=3)
    pivot = rng.normal(scale=10, size=3)
    n, span = 7, 30.0
    poses = fan_sweep(base, n, span, axis, pivot)
    assert poses.shape == (n, 4, 4)
    np.testing.assert_allclose(poses[n // 2], base, atol=1e-12)
    for a, P in zip(np.deg2rad(np.linspace(-span / 2, span / 2, n)), poses, strict=True):
        R = axis_angle_to_matrix(axis, a)
        np.testing.assert_allclose(P, rigid(R, pivot - R @ pivot) @ base, atol=1e-12)
        # The pivot is fixed by the world motion taking the base frame to this frame.
        np.testing.assert_allclose(apply(P @ np.linalg.inv(base), pivot), pivot, atol=1e-9)
        validate_image_to_world(P, spacing_mm=(0.3, 0.2))
    np.testing.assert_allclose(uniform_angles(n, span), np.deg2rad(np.linspace(-15, 15, n)))
    np.testing.assert_allclose(rotate_about(base, axis, pivot, 0.0), base, atol=1e-12)


def test_fan_sweep_in_image_lateral_and_axial(rng: np.random.Generator) -> None:
    base = _pose(rng)
    H, W = 64, 81
    n, span = 9, 40.0
    fan = fan_sweep_in_image(base, (H, W), n, span, fan_axis="lateral")
    normals = plane_normal(fan)
    step = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", normals[1:], normals[:-1]), -1, 1)))
    np.testing.assert_allclose(step, span / (n - 1), atol=1e-9)
    # Pivot at the probe face: the top-centre pixel stays put; so does the whole top row (the axis).
    for P in fan:
        np.testing.assert_allclose(pixel_to_world(P, 0, (W - 1) / 2), pixel_to_world(base, 0, (W - 1) / 2), atol=1e-9)
        np.testing.assert_allclose(pixel_to_world(P, 0, 3), pixel_to_world(base, 0, 3), atol=1e-9)
    # With the pivot 10 mm above the face, that point (not the face) is fixed.
    fan2 = fan_sweep_in_image(base, (H, W), n, span, pivot_offset_mm=10.0)
    above = pixel_to_world(base, -10.0 / 0.3, (W - 1) / 2)  # rows are 0.3 mm
    for P in fan2:
        np.testing.assert_allclose(pixel_to_world(P, -10.0 / 0.3, (W - 1) / 2), above, atol=1e-9)
    # Axial spin: the central beam is fixed and the normals turn by the same steps.
    spin = fan_sweep_in_image(base, (H, W), n, span, fan_axis="axial")
    for P in spin:
        np.testing.assert_allclose(pixel_to_world(P, 50, (W - 1) / 2), pixel_to_world(base, 50, (W - 1) / 2), atol=1e-9)
    normals = plane_normal(spin)
    step = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", normals[1:], normals[:-1]), -1, 1)))
    np.testing.assert_allclose(step, span / (n - 1), atol=1e-9)
    with pytest.raises(InputError, match="fan axis"):
        fan_sweep_in_image(base, (H, W), n, span, fan_axis="sideways")  # type: ignore[arg-type]


def test_translation_sweep(rng: np.random.Generator) -> None:
    base = _pose(rng)
    poses = translation_sweep(base, 5, 20.0)
    np.testing.assert_allclose(poses[:, :3, :3], np.broadcast_to(base[:3, :3], (5, 3, 3)))
    steps = np.diff(poses[:, :3, 3], axis=0)
    np.testing.assert_allclose(steps, np.broadcast_to(5.0 * plane_normal(base), (4, 3)), atol=1e-12)
    np.testing.assert_allclose(poses[2], base, atol=1e-12)
    along_x = translation_sweep(base, 3, 4.0, direction=[2.0, 0, 0])
    np.testing.assert_allclose(along_x[:, :3, 3] - base[:3, 3], [[-2, 0, 0], [0, 0, 0], [2, 0, 0]], atol=1e-12)
    with pytest.raises(InputError):
        translation_sweep(base, 0, 10.0)
    with pytest.raises(InputError, match="direction"):
        translation_sweep(base, 3, 10.0, direction=[0.0, 0.0, 0.0])
    with pytest.raises(InputError):
        fan_sweep(base, 3, -5.0, EX, np.zeros(3))


# ------------------------------------------------------------------ meshes


def test_mesh_volume_and_watertightness() -> None:
    pv = pytest.importorskip("pyvista")
    from sono3d.geometry.mesh import enclosed_volume_mm3, is_watertight, require_watertight

    sphere = pv.Sphere(radius=10.0, theta_resolution=120, phi_resolution=120)
    assert is_watertight(sphere)
    assert enclosed_volume_mm3(sphere) == pytest.approx(4 / 3 * math.pi * 1000, rel=0.01)
    ell = pv.ParametricEllipsoid(10.0, 6.0, 4.0)
    assert is_watertight(ell)
    assert enclosed_volume_mm3(ell) == pytest.approx(4 / 3 * math.pi * 240, rel=0.01)
    flipped = sphere.copy()
    flipped.flip_faces(inplace=True)
    assert enclosed_volume_mm3(flipped) == pytest.approx(enclosed_volume_mm3(sphere))
    clipped = sphere.clip("z", invert=False)
    assert not is_watertight(clipped)
    with pytest.raises(InputError, match="watertight"):
        enclosed_volume_mm3(clipped)
    with pytest.raises(InputError, match="lid is not watertight"):
        require_watertight(clipped, "lid")


def test_mesh_labels() -> None:
    pv = pytest.importorskip("pyvista")
    from sono3d.geometry.mesh import extract_label, label_values, triangles

    m = pv.Sphere(theta_resolution=16, phi_resolution=16)
    tags = (m.cell_centers().points[:, 2] > 0).astype(np.int32) + 1
    m.cell_data["elemTag"] = tags
    assert label_values(m) == [1, 2]
    top = extract_label(m, 2)
    assert top.n_cells == int((tags == 2).sum())
    assert triangles(top).shape == (top.n_cells, 3)
    with pytest.raises(InputError, match="label 7"):
        extract_label(m, 7)
    assert label_values(pv.Sphere()) == []
