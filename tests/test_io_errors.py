"""Bad input at the library level: one-line FileFormatError/InputError naming the file, nothing written."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from sono3d.errors import FileFormatError, InputError
from sono3d.io import read_any, read_mesh, read_sweep, read_volume, write_sweep
from sono3d.types import Sweep

GARBAGE_SUFFIXES = ["igs.mha", "seq.nrrd", "mha", "nrrd", "nii.gz", "nii", "dcm", "mp4", "png",
                    "vtp", "vtk", "stl", "ply", "obj"]


def _one_line(exc: pytest.ExceptionInfo, name: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and name in text


@pytest.mark.parametrize("suffix", GARBAGE_SUFFIXES)
def test_garbage_bytes(tmp_path, rng, suffix):
    path = tmp_path / f"junk.{suffix}"
    path.write_bytes(rng.integers(0, 256, size=4000, dtype=np.uint8).tobytes())
    with pytest.raises(FileFormatError) as exc:
        read_any(path)
    _one_line(exc, "junk." + suffix)


@pytest.mark.parametrize("suffix", ["seq.nrrd", "igs.mha", "nii.gz", "mha", "nrrd", "vtp"])
def test_truncated_files_we_wrote(tmp_path, rng, suffix):
    from sono3d.io import write_mesh, write_volume
    from sono3d.types import Volume

    full = tmp_path / f"full.{suffix}"
    if suffix in ("seq.nrrd", "igs.mha"):
        write_sweep(full, Sweep(rng.random((6, 40, 50)).astype(np.float32), None, (0.5, 0.5)))
    elif suffix == "vtp":
        import pyvista as pv

        write_mesh(full, pv.Sphere(theta_resolution=60, phi_resolution=60))
    else:
        write_volume(full, Volume(rng.random((30, 30, 30)).astype(np.float32), np.eye(4)))
    cut = tmp_path / f"cut.{suffix}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError) as exc:
        read_any(cut)
    _one_line(exc, "cut." + suffix)


def test_truncated_real_plus_and_dicom(tmp_path):
    for rel, name in (("plus/SpinePhantomFreehand.igs.mha", "cut.igs.mha"), ("dicom/OBXXXX1A.dcm", "cut.dcm")):
        data = shared_file(rel).read_bytes()
        for size in (len(data) // 2, 2000):
            (tmp_path / name).write_bytes(data[:size])
            with pytest.raises(FileFormatError) as exc:
                read_sweep(tmp_path / name)
            _one_line(exc, name)


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "a.xyz").write_text("hello")
    with pytest.raises(FileFormatError, match=r"a\.xyz: unknown file type '\.xyz' \(known: .*\.seq\.nrrd"):
        read_any(tmp_path / "a.xyz")
    with pytest.raises(FileFormatError, match=r"unknown sweep file type '\.xyz'"):
        read_sweep(tmp_path / "a.xyz")
    with pytest.raises(FileFormatError, match=r"nothere\.nii\.gz: no such file"):
        read_volume(tmp_path / "nothere.nii.gz")
    with pytest.raises(FileFormatError, match=r"holds a volume, not a mesh|unknown mesh file type"):
        read_mesh(tmp_path / "v.nii.gz")
    with pytest.raises(FileFormatError, match=r"cannot write '\.dcm'"):
        write_sweep(tmp_path / "out.dcm", Sweep(np.zeros((1, 4, 4), np.float32), None, (1.0, 1.0)))


def test_failed_write_leaves_nothing(tmp_path):
    sweep = Sweep(np.zeros((3, 4, 4), np.float32), None, (1.0, 1.0), meta={"frame_times_s": [0.0, 1.0]})
    with pytest.raises(InputError, match="3 frames but 2 frame times"):
        write_sweep(tmp_path / "s.seq.nrrd", sweep)
    assert list(tmp_path.iterdir()) == []


def test_bad_spacing_option(tmp_path):
    with pytest.raises(InputError, match="pixel spacing"):
        read_sweep(tmp_path / "x.mp4", spacing_mm=(-1.0, 1.0))
