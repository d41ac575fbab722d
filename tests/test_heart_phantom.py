"""The parametric four-chamber heart: volumes, EF, closed oriented surfaces, shared vertex order."""

from __future__ import annotations

import numpy as np
import pytest

from sono3d.errors import InputError
from sono3d.geometry.mesh import enclosed_volume_mm3, is_watertight, signed_volume_triangles, triangles
from sono3d.phantoms.heart import (
    ELEM_TAGS,
    PARTS,
    HeartShape,
    Placement,
    build_heart_phase,
    canonical_rotation,
    heart_mesh,
    heart_phases,
    heart_topology,
    lv_cavity_from_heart,
    lv_cavity_mesh,
    sample_placement,
    sample_shape,
    truncated_ellipsoid_volume,
)


def _directed_edges_unique(faces: np.ndarray) -> bool:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, counts = np.unique(e, axis=0, return_counts=True)
    return bool(np.all(counts == 1))


def test_truncated_ellipsoid_volume_closed_forms():
    a, b, c = 20.0, 25.0, 60.0
    assert truncated_ellipsoid_volume(a, b, c, c) == pytest.approx(4 / 3 * np.pi * a * b * c)
    assert truncated_ellipsoid_volume(a, b, c, 0.0) == pytest.approx(2 / 3 * np.pi * a * b * c)
    assert truncated_ellipsoid_volume(a, b, c, -c) == pytest.approx(0.0)


@pytest.mark.parametrize("base_fraction,ecc", [(0.0, 1.0), (0.25, 0.9), (0.4, 1.08)])
def test_lv_cavity_volume_matches_ellipsoid(base_fraction, ecc):
    """The cavity mesh's divergence-theorem volume is the truncated ellipsoid's, within 1%, at ED and ES."""
    from sono3d.phantoms.heart import lv_ed_geometry, lv_es_geometry

    shape = HeartShape(lv_base_fraction=base_fraction, lv_eccentricity=ecc, ef=0.55, long_shortening=0.12)
    ed_lv = lv_ed_geometry(shape)
    es_lv = lv_es_geometry(shape, ed_lv)[0]
    phases = heart_phases(shape)
    for lv, ph in ((ed_lv, phases["ed"]), (es_lv, phases["es"])):
        assert ph.lv_volume_mm3 == pytest.approx(lv.endo_volume(), rel=0.01)
        # the analytic value is an upper bound: the mesh is inscribed in the ellipsoid
        assert ph.lv_volume_mm3 < lv.endo_volume()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recorded_ef_equals_mesh_ef(seed):
    rng = np.random.default_rng(seed)
    shape = sample_shape(rng)
    ph = heart_phases(shape, sample_placement(rng))
    ef_mesh = 1 - ph["es"].lv_volume_mm3 / ph["ed"].lv_volume_mm3
    assert ef_mesh == pytest.approx(shape.ef, abs=1e-6)
    # and from the written meshes: the cavity files and the cavity rebuilt from the heart surface
    v_ed = enclosed_volume_mm3(lv_cavity_mesh(ph["ed"].points))
    v_es = enclosed_volume_mm3(lv_cavity_from_heart(heart_mesh(ph["es"].points)))
    assert v_ed == pytest.approx(ph["ed"].lv_volume_mm3, rel=1e-12)
    assert 1 - v_es / v_ed == pytest.approx(shape.ef, abs=1e-6)
    assert 20.0 < v_ed / 1000 < 400.0


def test_ef_range_extremes():
    for ef in (0.2, 0.75):
        s = HeartShape(ef=ef, long_shortening=0.06 + 0.14 * (ef - 0.2) / 0.55)
        ph = heart_phases(s)
        assert 1 - ph["es"].lv_volume_mm3 / ph["ed"].lv_volume_mm3 == pytest.approx(ef, abs=1e-6)


def test_every_part_closed_and_outward():
    topo = heart_topology()
    rng = np.random.default_rng(7)
    shape, placement = sample_shape(rng), sample_placement(rng)
    for phase in ("ed", "es"):
        pts = build_heart_phase(shape, placement, phase).points
        for i, spec in enumerate(PARTS):
            f = topo.faces[topo.part_of_face == i]
            assert _directed_edges_unique(f), spec.name
            vol = signed_volume_triangles(pts, f)
            # shells' inner surfaces face into their cavity; the shell as a whole encloses the wall
            assert (vol < 0) if spec.inward else (vol > 0), spec.name
        mesh = heart_mesh(pts)
        assert is_watertight(mesh)
        assert signed_volume_triangles(np.asarray(mesh.points), triangles(mesh)) > 0
        cav = lv_cavity_mesh(pts)
        assert is_watertight(cav) and _directed_edges_unique(triangles(cav))
        assert signed_volume_triangles(np.asarray(cav.points), triangles(cav)) > 0
    # walls are thick: every shell's outer volume exceeds its inner one
    for prefix in ("rv", "la", "ra", "aorta", "pa"):
        o = signed_volume_triangles(pts, topo.faces_of(f"{prefix}_outer"))
        inner = -signed_volume_triangles(pts, topo.faces_of(f"{prefix}_inner"))
        assert o > inner > 0, prefix


def test_shared_vertex_order_and_labels():
    """Every case has the template's connectivity and labels: the correspondence is the identity."""
    topo = heart_topology()
    meshes = [heart_mesh(heart_phases(sample_shape(np.random.default_rng(s)))["ed"].points) for s in (3, 4)]
    for m in meshes:
        assert m.n_points == topo.n_points and 4000 <= m.n_points <= 6000
        np.testing.assert_array_equal(triangles(m), topo.faces)
        np.testing.assert_array_equal(m.point_data["elemTag"], topo.elem_tag_of_point)
    assert not np.allclose(meshes[0].points, meshes[1].points)
    tags = set(np.unique(meshes[0].cell_data["elemTag"]).tolist())
    assert tags == set(range(1, 18)) == set(ELEM_TAGS.values())


def test_myocardium_kept_and_wall_thickens():
    from sono3d.phantoms.heart import lv_ed_geometry, lv_es_geometry

    s = HeartShape(ef=0.65, long_shortening=0.17)
    topo = heart_topology()
    ph = heart_phases(s)
    f = topo.faces_of("lv_myocardium")
    v_ed, v_es = (signed_volume_triangles(ph[p].points, f) for p in ("ed", "es"))
    assert v_es == pytest.approx(v_ed, rel=0.02)
    ed, es = lv_ed_geometry(s), lv_es_geometry(s, lv_ed_geometry(s))[0]
    assert es.A - es.a > 1.3 * (ed.A - ed.a)  # radial wall thickening
    assert es.zb < ed.zb  # the base descends towards the apex


def test_placement_follows_paper_controls():
    from sono3d.geometry.transforms import euler_to_matrix

    s = HeartShape()
    base = build_heart_phase(s, Placement(), "ed", dtype=np.float64)
    pl = Placement(shift_mm=(5.0, -3.0, 2.0), angles_deg=(10.0, -5.0, 20.0), scale=1.1)
    moved = build_heart_phase(s, pl, "ed", dtype=np.float64)
    R = euler_to_matrix(*np.deg2rad([10.0, -5.0, 20.0]))
    np.testing.assert_allclose(moved.points, 1.1 * base.points @ R.T + [5.0, -3.0, 2.0], atol=1e-9)
    assert moved.lv_volume_mm3 == pytest.approx(1.1 ** 3 * base.lv_volume_mm3, rel=1e-9)
    # anatomical orientation: the apex points left (-x), anterior (+y) and inferior (-z)
    apex_dir = -canonical_rotation()[:, 2]
    assert apex_dir[0] < 0 and apex_dir[1] > 0 and apex_dir[2] < 0
    lm = base.landmarks
    assert np.linalg.norm(lm["lv_base"] - lm["apex"]) == pytest.approx(s.lv_length_mm, rel=1e-6)


def test_bad_shapes_rejected():
    with pytest.raises(InputError, match="ejection fraction"):
        HeartShape(ef=1.2)
    with pytest.raises(InputError, match="positive"):
        HeartShape(lv_wall_mm=-1.0)
    with pytest.raises(InputError, match="scale"):
        Placement(scale=0.0)
    with pytest.raises(InputError, match="phase"):
        build_heart_phase(HeartShape(), None, "mid")
