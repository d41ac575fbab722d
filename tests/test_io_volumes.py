"""Volumes: bit-exact round trips, LPS <-> RAS against SimpleITK, and PLUS's reconstructed volume."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from sono3d.errors import FileFormatError, InputError
from sono3d.geometry import euler_to_matrix
from sono3d.io import read_volume, write_volume
from sono3d.io.volumes import LPS_TO_RAS
from sono3d.types import Volume


def _affine() -> np.ndarray:
    A = np.eye(4)
    A[:3, :3] = euler_to_matrix(0.3, -0.2, 0.7) @ np.diag([0.31, 0.47, 1.3])
    A[:3, 3] = [12.345678901, -7.1, 3.0 / 7.0]
    return A


@pytest.mark.parametrize("ext", ["nii", "nii.gz", "mha", "nrrd"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_volume_round_trip_is_exact(tmp_path, rng, ext, dtype):
    array = (rng.random((5, 6, 7)) * 100).astype(dtype)
    vol = Volume(array=array, affine=_affine())
    out = write_volume(tmp_path / f"v.{ext}", vol)
    back = read_volume(out)
    assert back.array.dtype == array.dtype
    assert np.array_equal(back.array, array)
    assert np.array_equal(back.affine, vol.affine)
    assert [p.name for p in tmp_path.iterdir()] == [f"v.{ext}"]  # no temporary files left


@pytest.mark.parametrize("ext", ["mha", "nrrd"])
def test_itk_formats_store_lps_as_simpleitk_reads_them(tmp_path, rng, ext):
    sitk = pytest.importorskip("SimpleITK")
    vol = Volume(array=rng.random((4, 5, 6)).astype(np.float32), affine=_affine())
    img = sitk.ReadImage(str(write_volume(tmp_path / f"v.{ext}", vol)))
    lps = LPS_TO_RAS @ vol.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    np.testing.assert_allclose(img.GetOrigin(), lps[:3, 3], atol=1e-9)
    np.testing.assert_allclose(img.GetSpacing(), spacing, rtol=1e-9)
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), lps[:3, :3] / spacing, atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img).transpose(2, 1, 0), vol.array)


@pytest.mark.parametrize("ext", ["mha", "nrrd", "nhdr", "nii.gz"])  # nhdr: NRRD with a detached header
def test_reads_files_written_by_simpleitk(tmp_path, rng, ext):
    sitk = pytest.importorskip("SimpleITK")
    arr = rng.random((6, 5, 4)).astype(np.float32)  # (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.75, 2.0))
    img.SetOrigin((10.0, -20.0, 5.0))
    R = euler_to_matrix(0.1, 0.2, -0.3)
    img.SetDirection(tuple(R.ravel()))
    sitk.WriteImage(img, str(tmp_path / f"s.{ext}"))
    vol = read_volume(tmp_path / f"s.{ext}")
    expected = np.eye(4)
    expected[:3, :3] = R @ np.diag([0.5, 0.75, 2.0])
    expected[:3, 3] = [10.0, -20.0, 5.0]
    np.testing.assert_allclose(vol.affine, LPS_TO_RAS @ expected, atol=1e-5)
    np.testing.assert_array_equal(vol.array, arr.transpose(2, 1, 0))


def test_nifti_written_by_nibabel_keeps_its_affine(tmp_path, rng):
    nib = pytest.importorskip("nibabel")
    aff = np.array([[-0.5, 0, 0, 10.0], [0, 0.25, 0, -4.0], [0, 0, 2.0, 1.5], [0, 0, 0, 1]])
    arr = rng.integers(0, 5, size=(3, 4, 5)).astype(np.uint8)
    nib.save(nib.Nifti1Image(arr, aff), str(tmp_path / "n.nii.gz"))
    vol = read_volume(tmp_path / "n.nii.gz")
    assert np.array_equal(vol.affine, aff)
    assert np.array_equal(vol.array, arr)


def test_bool_volume_is_stored_as_uint8(tmp_path):
    arr = np.zeros((3, 3, 3), dtype=bool)
    arr[1, 1, 1] = True
    back = read_volume(write_volume(tmp_path / "m.nii.gz", Volume(arr, np.eye(4))))
    assert back.array.dtype == np.uint8 and back.array.sum() == 1


def test_plus_reconstructed_volume_reads_in_ras():
    vol = read_volume(shared_file("plus/SpinePhantomFreehandReconstructed.mha"))
    assert vol.shape == (147, 106, 104)
    assert vol.spacing_mm == (0.5, 0.5, 0.5)
    # Offset (-74.5217, 165.573, 29.072) LPS -> RAS flips x and y.
    np.testing.assert_allclose(vol.affine[:3, 3], [74.5217, -165.573, 29.072])
    np.testing.assert_allclose(np.diag(vol.affine)[:3], [-0.5, -0.5, 0.5])


def test_volume_errors(tmp_path):
    with pytest.raises(FileFormatError, match="holds a sweep, not a volume"):
        read_volume(tmp_path / "x.seq.nrrd")
    with pytest.raises(FileFormatError, match=r"unknown volume file type '\.vtp'|holds a mesh"):
        read_volume(tmp_path / "x.vtp")
    with pytest.raises(InputError, match="needs a Volume"):
        write_volume(tmp_path / "x.nii.gz", np.zeros((2, 2, 2)))  # type: ignore[arg-type]
    assert not (tmp_path / "x.nii.gz").exists()
