"""Uterus phantom: exact volumes of analytic shapes, the paper's label values, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from sono3d.errors import InputError
from sono3d.geometry.mesh import enclosed_volume_mm3, extract_label, is_watertight
from sono3d.geometry.transforms import euler_to_matrix
from sono3d.phantoms import LABELS, UterusParams, build_label_phantom, build_uterus
from sono3d.phantoms.shapes import Ellipsoid, Grid, ellipsoid_structure, evaluate, shell_labels, smooth_union
from sono3d.phantoms.uterus import surface_mesh


@pytest.fixture(scope="module")
def coarse():
    return build_uterus(seed=3, spacing_mm=1.5)


@pytest.mark.parametrize("spacing", [0.5, 1.0])
def test_ellipsoid_label_volume_matches_analytic(spacing):
    e = Ellipsoid((1.3, -2.1, 0.7), (20.0, 14.0, 9.0), euler_to_matrix(0.3, 0.5, -0.2))
    vol, grid, _ = build_label_phantom([ellipsoid_structure("e", 1, e)], spacing)
    measured = np.count_nonzero(vol.array) * spacing ** 3
    assert measured == pytest.approx(4 / 3 * np.pi * 20 * 14 * 9, rel=0.01)
    assert set(np.unique(vol.array).tolist()) == {0.0, 0.5, 1.0}
    assert np.allclose(vol.affine, grid.affine)


def test_ellipsoid_mesh_volume_matches_analytic():
    e = Ellipsoid((0.0, 0.0, 0.0), (18.0, 12.0, 10.0), euler_to_matrix(0.0, 0.4, 0.9))
    grid = Grid.around(*e.bounds(), spacing=0.5)
    s = ellipsoid_structure("e", 1, e)
    mesh = surface_mesh({"e": (evaluate(s, grid), 1)}, grid)
    assert is_watertight(mesh)
    assert enclosed_volume_mm3(mesh) == pytest.approx(e.volume_mm3, rel=0.01)


def test_sphere_border_shell_has_the_given_thickness():
    r, t = 15.0, 2.0
    e = Ellipsoid((0.0, 0.0, 0.0), (r, r, r))
    grid = Grid.around(*e.bounds(), spacing=0.5)
    sl, d = evaluate(ellipsoid_structure("s", 1, e), grid)
    lab = shell_labels(d, t)
    border = np.count_nonzero(lab == 1.0) * 0.5 ** 3
    assert border == pytest.approx(4 / 3 * np.pi * (r ** 3 - (r - t) ** 3), rel=0.03)


def test_smooth_union_is_union_far_from_the_seam():
    a, b = np.array([-3.0, 1.0, 5.0]), np.array([2.0, -4.0, 7.0])
    assert np.allclose(smooth_union(a, b, 0.5), np.minimum(a, b))
    assert smooth_union(np.array([0.0]), np.array([0.0]), 2.0)[0] < 0  # blend bulges outwards


def test_uterus_labels_are_exactly_the_paper_values(coarse):
    assert set(np.unique(coarse.labels.array).tolist()) == {0.0, 0.5, 1.0}
    assert coarse.labels.array.dtype == np.float32
    # Every uterus voxel of the label volume belongs to a uterine structure and vice versa.
    uterine = np.isin(coarse.structures.array, [LABELS[k] for k in ("myometrium", "cervix", "endometrium", "fibroid")])
    assert np.array_equal(coarse.labels.array > 0, uterine)


def test_uterus_structures_and_sizes(coarse):
    present = set(np.unique(coarse.structures.array).tolist())
    for name in ("background", "myometrium", "cervix", "endometrium", "ovary_left", "ovary_right"):
        assert LABELS[name] in present
    # Extent along the long axis: from the external os to the fundus, about the parameter length.
    lm = coarse.landmarks
    assert np.linalg.norm(lm["fundus"] - lm["external_os"]) == pytest.approx(coarse.params.length_mm, abs=4.0)
    ijk = np.argwhere(coarse.labels.array > 0)
    xyz = ijk @ coarse.labels.affine[:3, :3].T + coarse.labels.affine[:3, 3]
    proj = xyz @ lm["uterus_axis"]
    assert np.ptp(proj) == pytest.approx(coarse.params.length_mm, abs=6.0)
    volume_ml = len(ijk) * 1.5 ** 3 / 1000
    assert 35 < volume_ml < 90  # adult uterus, tens of mL
    # Echogenicity follows the structure map; follicles are dark, the endometrium bright.
    echo = coarse.echogenicity.array
    assert echo[coarse.structures.array == LABELS["endometrium"]].min() > echo[coarse.structures.array == LABELS["myometrium"]].max()


def test_uterus_mesh_is_closed_and_matches_the_voxels(coarse):
    uterus = extract_label(coarse.mesh, LABELS["myometrium"], "labels")
    assert is_watertight(uterus)
    voxels = np.count_nonzero(coarse.labels.array) * 1.5 ** 3
    assert enclosed_volume_mm3(uterus) == pytest.approx(voxels, rel=0.06)


def test_same_seed_same_phantom_and_different_seed_differs():
    a = build_uterus(seed=11, spacing_mm=2.0, mesh=False)
    b = build_uterus(seed=11, spacing_mm=2.0, mesh=False)
    c = build_uterus(seed=12, spacing_mm=2.0, mesh=False)
    assert a.params == b.params
    assert np.array_equal(a.labels.array, b.labels.array)
    assert np.array_equal(a.echogenicity.array, b.echogenicity.array)
    assert a.params != c.params


def test_sampled_parameters_stay_in_adult_ranges():
    for seed in range(20):
        p = UterusParams.sample(seed)
        assert 75 <= p.length_mm <= 80 and 45 <= p.width_mm <= 50 and 30 <= p.ap_mm <= 35
        assert UterusParams.from_dict(p.to_dict()) == p
    assert any(UterusParams.sample(s).fibroid for s in range(20))
    assert any(UterusParams.sample(s).fibroid is None for s in range(20))


def test_fibroid_is_labelled():
    p = UterusParams(fibroid=(10.0, 0.5, 90.0, 0.7), ovaries=False)
    ph = build_uterus(p, spacing_mm=1.0, mesh=False)
    n = np.count_nonzero(ph.structures.array == LABELS["fibroid"])
    assert n * 1.0 > 0.5 * 4 / 3 * np.pi * 10 ** 3  # most of the sphere (the rest is endometrium or outside)
    assert LABELS["ovary_left"] not in np.unique(ph.structures.array)


@pytest.mark.parametrize("spacing", [0.0, -1.0, float("nan")])
def test_bad_spacing_is_an_input_error(spacing):
    with pytest.raises(InputError, match="spacing"):
        build_uterus(seed=0, spacing_mm=spacing)


def test_bad_parameters_are_input_errors():
    with pytest.raises(InputError):
        UterusParams(length_mm=-5)
    with pytest.raises(InputError, match="unknown"):
        UterusParams.from_dict({"height": 3})
