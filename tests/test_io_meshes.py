"""Meshes: round trips keep vertex order and labels where the format allows; GHDHeart OBJ files."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from sono3d.errors import FileFormatError
from sono3d.geometry.mesh import enclosed_volume_mm3, is_watertight, label_values
from sono3d.io import read_mesh, write_mesh

pv = pytest.importorskip("pyvista")


@pytest.fixture
def labelled_sphere():
    s = pv.Sphere(radius=10.0, theta_resolution=8, phi_resolution=6)
    s.point_data.clear()
    s.cell_data["elemTag"] = (np.arange(s.n_cells) // 7 + 1).astype(np.int32)
    s.point_data["depth"] = np.asarray(s.points)[:, 2].copy()
    return s


@pytest.mark.parametrize("ext", ["vtp", "vtk", "ply", "obj"])
def test_mesh_round_trip_keeps_vertex_order(tmp_path, labelled_sphere, ext):
    back = read_mesh(write_mesh(tmp_path / f"m.{ext}", labelled_sphere))
    assert np.array_equal(np.asarray(back.points, dtype=np.float64), np.asarray(labelled_sphere.points, dtype=np.float64))
    assert np.array_equal(back.faces, labelled_sphere.faces)
    assert [p.name for p in tmp_path.iterdir()] == [f"m.{ext}"]


@pytest.mark.parametrize("ext", ["vtp", "vtk", "obj", "ply"])
def test_mesh_round_trip_keeps_cell_labels(tmp_path, labelled_sphere, ext):
    back = read_mesh(write_mesh(tmp_path / f"m.{ext}", labelled_sphere))
    assert np.array_equal(back.cell_data["elemTag"], labelled_sphere.cell_data["elemTag"])
    assert label_values(back) == label_values(labelled_sphere)


@pytest.mark.parametrize("ext", ["vtp", "vtk", "ply"])
def test_mesh_round_trip_keeps_point_arrays(tmp_path, labelled_sphere, ext):
    back = read_mesh(write_mesh(tmp_path / f"m.{ext}", labelled_sphere))
    np.testing.assert_allclose(back.point_data["depth"], labelled_sphere.point_data["depth"])


def test_stl_round_trip_keeps_the_surface(tmp_path, labelled_sphere):
    back = read_mesh(write_mesh(tmp_path / "m.stl", labelled_sphere))
    assert back.n_cells == labelled_sphere.n_cells and is_watertight(back)
    # STL stores triangles, not shared vertices: compare the set of triangles.
    def tris(m):
        f = np.asarray(m.faces).reshape(-1, 4)[:, 1:]
        return sorted(tuple(sorted(map(tuple, np.round(np.asarray(m.points)[t], 4)))) for t in f)
    assert tris(back) == tris(labelled_sphere)
    assert enclosed_volume_mm3(back) == pytest.approx(enclosed_volume_mm3(labelled_sphere), rel=1e-5)


def test_ghdheart_obj_vertex_order_and_scale():
    path = shared_file("hearts/ghdheart/LV.obj")
    first_v = next(line for line in path.read_text().splitlines() if line.startswith("v "))
    n_v = sum(1 for line in path.read_text().splitlines() if line.startswith("v "))
    mesh = read_mesh(path)
    assert mesh.n_points == n_v
    assert np.array_equal(mesh.points[0], [float(v) for v in first_v.split()[1:]])
    mm = read_mesh(path, scale=100.0)
    np.testing.assert_allclose(mm.points, np.asarray(mesh.points) * 100.0)
    assert is_watertight(mm)
    assert 100.0 < enclosed_volume_mm3(mm) / 1000.0 < 130.0  # LV cavity about 115 mL


def test_obj_groups_become_labels_and_bad_obj_fails(tmp_path):
    (tmp_path / "g.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\ng elemTag_2\nf 1 2 3\ng elemTag_5\nf 1 2 4\nf 2 3 4\n")
    m = read_mesh(tmp_path / "g.obj")
    assert list(m.cell_data["elemTag"]) == [2, 5, 5]
    (tmp_path / "bad.obj").write_text("v 0 0 0\nf 1 2 3\n")
    with pytest.raises(FileFormatError, match=r"bad\.obj: OBJ face refers to a vertex that does not exist"):
        read_mesh(tmp_path / "bad.obj")


@pytest.mark.parametrize("ext", ["vtp", "vtk"])
def test_vtk_formats_keep_field_arrays(tmp_path, labelled_sphere, ext):
    labelled_sphere.field_data["part_names"] = np.array(["lv", "rv"])
    labelled_sphere.field_data["cavity"] = np.array([3, 4, 5])
    back = read_mesh(write_mesh(tmp_path / f"m.{ext}", labelled_sphere))
    assert list(back.field_data["part_names"]) == ["lv", "rv"]
    assert list(back.field_data["cavity"]) == [3, 4, 5]
    # Reading notes the source; writing that mesh again must not store the note.
    again = read_mesh(write_mesh(tmp_path / f"again.{ext}", back))
    assert list(again.field_data["source"]) == [str(tmp_path / f"again.{ext}")]
