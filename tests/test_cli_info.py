"""``sono3d info`` through CliRunner: real files, JSON fields, and bad input (exit 2, one line)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import shared_file
from sono3d.cli import app

runner = CliRunner()


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, ["info", *args, "--json"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1  # one JSON object on one line
    return json.loads(lines[0])


def _fails(args: list[str], name: str) -> str:
    result = runner.invoke(app, ["info", *args])
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert text.startswith("error:") and len(text.splitlines()) == 1 and name in text, text
    return text


def test_info_plus_spine_sweep_has_21_frames_with_poses():
    info = _json([str(shared_file("plus/SpinePhantomFreehand.igs.mha"))])
    assert info["kind"] == "sweep" and info["frames"] == 21 and info["has_poses"] is True
    assert info["shape"] == [616, 820]
    assert info["spacing_mm"] == pytest.approx([0.0790, 0.0854], abs=1e-4)


def test_info_with_explicit_plus_config():
    cfg = shared_file("plus/PlusDeviceSet_SpinePhantomFreehandReconstructionOnly.xml")
    info = _json([str(shared_file("plus/SpinePhantomFreehand.igs.mha")), "--plus-config", str(cfg)])
    assert info["has_poses"] is True and info["plus_config"] == str(cfg)


def test_info_echo_clip_written_as_file(tmp_path):
    examples = pytest.importorskip("pydicom.examples")
    examples.ybr_color.save_as(tmp_path / "echo.dcm")
    info = _json([str(tmp_path / "echo.dcm")])
    assert info["frames"] == 30 and info["kind"] == "sweep" and info["has_poses"] is False
    assert info["spacing_mm"] == pytest.approx([0.5105, 0.5105], abs=1e-4)
    assert info["spacing_source"] == "ultrasound region (cm)"


def test_info_mesh_volume_image_and_table(tmp_path, rng):
    import pyvista as pv

    from sono3d.io import write_mesh, write_sweep, write_volume
    from sono3d.types import Sweep, Volume

    s = pv.Sphere(theta_resolution=8, phi_resolution=6)
    s.cell_data["elemTag"] = (np.arange(s.n_cells) % 3 + 1).astype(np.int32)
    write_mesh(tmp_path / "m.vtp", s)
    info = _json([str(tmp_path / "m.vtp")])
    assert info["kind"] == "mesh" and info["points"] == s.n_points and info["cells"] == s.n_cells
    assert info["labels"] == [1, 2, 3] and info["watertight"] is True

    write_volume(tmp_path / "v.nii.gz", Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.5, 0.5, 2.0, 1.0])))
    info = _json([str(tmp_path / "v.nii.gz")])
    assert info["kind"] == "volume" and info["shape"] == [4, 5, 6] and info["spacing_mm"] == [0.5, 0.5, 2.0]

    write_sweep(tmp_path / "s.seq.nrrd", Sweep(rng.random((3, 6, 5)).astype(np.float32), None, (0.3, 0.2)))
    info = _json([str(tmp_path / "s.seq.nrrd")])
    assert info["frames"] == 3 and info["shape"] == [6, 5] and info["spacing_mm"] == [0.3, 0.2]

    import imageio.v3 as iio

    iio.imwrite(tmp_path / "one.png", np.zeros((7, 9), np.uint8))
    info = _json([str(tmp_path / "one.png"), "--spacing", "0.25"])
    assert info["kind"] == "image" and info["frames"] == 1 and info["spacing_mm"] == [0.25, 0.25]

    table = runner.invoke(app, ["info", str(tmp_path / "m.vtp")])
    assert table.exit_code == 0 and "watertight" in table.stdout and "elemTag" in table.stdout


def test_info_bad_inputs(tmp_path, rng):
    (tmp_path / "junk.igs.mha").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    _fails([str(tmp_path / "junk.igs.mha")], "junk.igs.mha")
    (tmp_path / "a.xyz").write_text("x")
    assert "unknown file type '.xyz'" in _fails([str(tmp_path / "a.xyz")], "a.xyz")
    _fails([str(tmp_path / "missing.nii.gz")], "missing.nii.gz")
    data = shared_file("plus/SpinePhantomFreehand.igs.mha").read_bytes()
    (tmp_path / "cut.igs.mha").write_bytes(data[: len(data) // 3])
    assert "truncated" in _fails([str(tmp_path / "cut.igs.mha")], "cut.igs.mha")
    _fails([str(tmp_path / "a.xyz"), "--spacing", "abc"], "abc")


def test_info_dicom_without_pixel_data(tmp_path):
    examples = pytest.importorskip("pydicom.examples")
    from pydicom import dcmread

    ds = dcmread(examples.get_path("ybr_color"))  # a fresh copy: the example object may be shared
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    assert "no pixel data" in _fails([str(tmp_path / "nopix.dcm")], "nopix.dcm")


def test_info_pose_count_mismatch(tmp_path):
    import imageio.v3 as iio

    (tmp_path / "f").mkdir()
    for i in range(3):
        iio.imwrite(tmp_path / "f" / f"{i}.png", np.zeros((5, 6), np.uint8))
    np.save(tmp_path / "f" / "poses.npy", np.tile(np.eye(4), (2, 1, 1)))
    assert "2 poses but 3 images" in _fails([str(tmp_path / "f")], "poses.npy")


def test_info_plus_config_naming_absent_transforms(tmp_path):
    seq = shared_file("plus/SpinePhantomFreehand.igs.mha")
    cfg = tmp_path / "wrong.xml"
    cfg.write_text('<PlusConfiguration><CoordinateDefinitions><Transform From="Image" To="Transducer" '
                   'Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1"/></CoordinateDefinitions></PlusConfiguration>')
    text = _fails([str(seq), "--plus-config", str(cfg)], "SpinePhantomFreehand.igs.mha")
    assert "cannot chain Image to Reference" in text and "wrong.xml" in text
