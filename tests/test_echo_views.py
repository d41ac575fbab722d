"""The six echo views: slicing and filling, what each view shows, poses, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sono3d.errors import InputError
from sono3d.geometry.planes import image_to_world_matrix, pixel_to_world, validate_image_to_world, world_to_pixel
from sono3d.phantoms.heart import VIEW_LABELS, heart_mesh, heart_phases, sample_placement, sample_shape
from sono3d.simulate.echo_views import (
    VIEW_NAMES,
    ViewLayers,
    ViewOptions,
    fill_even_odd,
    mesh_layers,
    render_labels,
    simulate_views,
    slice_segments,
)

LV = {VIEW_LABELS["lv_myocardium"], VIEW_LABELS["lv_blood"]}
RV = {VIEW_LABELS["rv_myocardium"], VIEW_LABELS["rv_blood"]}
LA = {VIEW_LABELS["la"], VIEW_LABELS["la_blood"]}
RA = {VIEW_LABELS["ra"], VIEW_LABELS["ra_blood"]}


def _sphere(radius: float, centre=(0.0, 0.0, 0.0), res=(40, 80)):
    from sono3d.phantoms.heart import _sphere_faces, _sphere_points

    return _sphere_points(*res) * radius + np.asarray(centre), _sphere_faces(*res)


def test_fill_square_exact():
    """Even-odd fill of a square outline marks exactly the pixel centres inside it."""
    sq = np.array([[2.5, 3.5], [10.5, 3.5], [10.5, 8.5], [2.5, 8.5]])
    segs = np.stack([sq, np.roll(sq, -1, axis=0)], 1)
    got = fill_even_odd(segs, np.zeros(4, dtype=int), 1, (12, 14))[0]
    want = np.zeros((12, 14), dtype=bool)
    want[4:9, 3:11] = True
    np.testing.assert_array_equal(got, want)
    # two nested squares (a ring) fill the band only
    inner = np.array([[4.5, 5.5], [8.5, 5.5], [8.5, 6.5], [4.5, 6.5]])
    segs2 = np.concatenate([segs, np.stack([inner, np.roll(inner, -1, axis=0)], 1)])
    ring = fill_even_odd(segs2, np.zeros(8, dtype=int), 1, (12, 14))[0]
    want[6, 5:9] = False
    np.testing.assert_array_equal(ring, want)


def test_sphere_section_is_a_disc():
    """A plane at height h through a sphere of radius R cuts a disc of radius sqrt(R² - h²)."""
    R, h = 30.0, 12.0
    pts, faces = _sphere(R)
    size, px = 96, 1.0
    M = image_to_world_matrix(np.eye(3), np.array([-47.5, -47.5, h]), (px, px))
    layers = ViewLayers.build(faces, [(5, np.arange(len(faces)))])
    img = render_labels(pts, layers, M, (size, size))
    xyz = pixel_to_world(M, *np.meshgrid(np.arange(size), np.arange(size), indexing="ij"))
    disc = np.hypot(xyz[..., 0], xyz[..., 1]) < np.sqrt(R * R - h * h)
    inter = np.sum((img == 5) & disc)
    assert inter / np.sum((img == 5) | disc) > 0.96
    seg, fid = slice_segments(pts, faces, M)
    assert len(seg) > 20 and np.all(fid < len(faces))
    # every cut point lies on the sphere's section circle
    world = pixel_to_world(M, seg[..., 1], seg[..., 0])
    assert np.allclose(world[..., 2], h)
    assert np.all(np.abs(np.hypot(world[..., 0], world[..., 1]) - np.sqrt(R * R - h * h)) < 0.2)


def _case(seed: int, size: int = 96):
    rng = np.random.default_rng(seed)
    shape = sample_shape(rng)
    ph = heart_phases(shape, sample_placement(rng))
    out = simulate_views([ph["ed"].points, ph["es"].points], [ph["ed"].landmarks, ph["es"].landmarks], rng,
                         ViewOptions(size=size))
    return ph, out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_each_view_shows_its_structures(seed):
    ph, out = _case(seed)
    labels = out["labels"]
    assert labels.shape == (2, 6, 96, 96) and labels.dtype == np.uint8
    assert list(out["view_names"]) == list(VIEW_NAMES)
    for p in range(2):
        present = [set(np.unique(labels[p, j]).tolist()) for j in range(6)]
        a4c, a2c, a3c = present[:3]
        for chamber in (LV, RV, LA, RA):
            assert a4c & chamber, f"A4C misses {chamber}"
        assert a2c & LV and a2c & LA and not (a2c & RV), "A2C must show LV and LA without the RV"
        assert a3c & LV and a3c & {VIEW_LABELS["aorta"], VIEW_LABELS["aorta_blood"], VIEW_LABELS["aortic_valve"]}
        for j in range(3, 6):
            lab = labels[p, j]
            myo = lab == VIEW_LABELS["lv_myocardium"]
            blood = lab == VIEW_LABELS["lv_blood"]
            assert blood.sum() > 20 and myo.sum() > 20, VIEW_NAMES[j]
            # an LV ring: the myocardium surrounds the cavity completely
            assert np.all(ndimage.binary_fill_holes(myo)[blood]), VIEW_NAMES[j]
    # the heart contracts: less LV blood at ES in the mid short-axis view
    mid = VIEW_NAMES.index("sax_mid")
    assert (labels[1, mid] == 25).sum() < (labels[0, mid] == 25).sum()


def test_poses_follow_the_landmarks():
    ph, out = _case(5)
    lm = ph["ed"].landmarks
    poses, spacing = out["poses"], out["spacing_mm"]
    # the views follow the heart: the apical probe hardly moves, the basal plane descends with the base
    assert np.linalg.norm(out["probe_mm"][0, 0] - out["probe_mm"][1, 0]) < 8.0
    basal = VIEW_NAMES.index("sax_basal")
    descent = (poses[0, basal, :3, 3] - poses[1, basal, :3, 3]) @ lm["lv_axis"]
    assert descent > 2.0
    u = lm["lv_axis"]
    for j, name in enumerate(VIEW_NAMES):
        M = poses[0, j]
        validate_image_to_world(M, (spacing[j], spacing[j]))
        apex_px = pixel_to_world(M, 0.0, (96 - 1) / 2)
        np.testing.assert_allclose(apex_px, out["probe_mm"][0, j], atol=1e-9)
        normal = M[:3, 2]
        if name.startswith("sax"):
            assert abs(normal @ u) > np.cos(np.deg2rad(5))  # perpendicular to the long axis
        else:
            assert abs(normal @ u) < np.sin(np.deg2rad(5))  # contains the long axis
            for mark in ("apex", "mitral"):
                assert abs(world_to_pixel(M, lm[mark])[2]) < 8.0
    tv = world_to_pixel(poses[0, 0], lm["tricuspid"])[2]
    av = world_to_pixel(poses[0, 2], lm["aortic"])[2]
    assert abs(tv) < 8.0 and abs(av) < 8.0
    assert np.all((out["opening_deg"] >= 70) & (out["opening_deg"] <= 84))
    from sono3d.geometry.planes import plane_rigid
    from sono3d.geometry.transforms import euler_to_matrix

    for p in range(2):
        for j in range(6):
            R = euler_to_matrix(*np.deg2rad(out["euler_deg"][p, j]))
            np.testing.assert_allclose(R, plane_rigid(poses[p, j])[:3, :3], atol=1e-9)


def test_echo_is_sector_cropped_and_tissue_bright():
    _, out = _case(6, size=64)
    echo, labels = out["echo"], out["labels"]
    assert echo.dtype == np.float32 and echo.min() >= 0 and echo.max() <= 1
    from sono3d.geometry.sector import sector_for_probe, sector_mask

    for j in range(6):
        s = sector_for_probe((64, 64), (out["spacing_mm"][j],) * 2, out["opening_deg"][j], out["depth_mm"][j])
        m = sector_mask(s, (64, 64), (out["spacing_mm"][j],) * 2)
        assert np.all(echo[:, j][:, ~m] == 0) and np.all(labels[:, j][:, ~m] == 0)
        tissue = (labels[0, j] > 0) & (labels[0, j] < 25)
        blood = labels[0, j] >= 25
        assert echo[0, j][ndimage.binary_erosion(tissue)].mean() > echo[0, j][ndimage.binary_erosion(blood)].mean()


def test_same_rng_same_views():
    a = _case(11, size=48)[1]
    b = _case(11, size=48)[1]
    for k in ("labels", "echo", "poses"):
        np.testing.assert_array_equal(a[k], b[k])
    c = _case(12, size=48)[1]
    assert not np.array_equal(a["labels"], c["labels"])


def test_mesh_layers_slice_a_labelled_mesh():
    """The generic path (any mesh with elemTag) paints the same LV myocardium as the phantom layers."""
    ph, out = _case(8, size=64)
    mesh = heart_mesh(ph["ed"].points)
    layers = mesh_layers(mesh)
    M = out["poses"][0, VIEW_NAMES.index("sax_mid")]
    generic = render_labels(np.asarray(mesh.points), layers, M, (64, 64))
    phantom = out["labels"][0, VIEW_NAMES.index("sax_mid")]
    inside = phantom > 0
    assert np.array_equal(generic[inside] == 1, phantom[inside] == 1)
    mesh.cell_data.remove("elemTag")
    with pytest.raises(InputError, match="elemTag"):
        mesh_layers(mesh)


def test_bad_options():
    with pytest.raises(InputError):
        ViewOptions(size=4)
    with pytest.raises(InputError):
        ViewOptions(opening_deg=(90.0, 60.0))
    with pytest.raises(InputError, match="landmarks"):
        from sono3d.simulate.echo_views import plan_views

        plan_views({"apex": np.zeros(3)}, np.random.default_rng(0))
