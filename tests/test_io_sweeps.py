"""Sweeps in sequence files: the project's own format, PLUS files, configs, orientation, chaining."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from sono3d.errors import FileFormatError, InputError
from sono3d.geometry import euler_to_matrix, image_to_world_matrix, rigid
from sono3d.io import read_plus_config, read_sweep, read_volume, write_sweep
from sono3d.io.metaimage import format_numbers, write_metaimage
from sono3d.io.volumes import LPS_TO_RAS
from sono3d.types import Sector, Sweep

I2P = np.array([[0.0, 0.2, 0.0, 5.0], [-0.3, 0.0, 0.0, 40.0], [0.0, 0.0, 0.25, -2.0], [0, 0, 0, 1]])


def _sweep(rng, n=4, h=12, w=9, poses=True, sector=True, times=True) -> Sweep:
    M = np.stack([image_to_world_matrix(euler_to_matrix(0.1 * i, -0.2, 0.05 * i), [1.0 / 3, -2.5, 0.7 * i], (0.3, 0.2))
                  for i in range(n)])
    meta = {"probe": "test", "note": {"a": [1, 2]}}
    if times:
        meta["frame_times_s"] = [0.1 * i + 1e-9 for i in range(n)]
    return Sweep(frames=rng.random((n, h, w)).astype(np.float32), image_to_world=M if poses else None,
                 spacing_mm=(0.3, 0.2), sector=Sector((4.5, -2.0), 75.0, (1.0, 7.25), 0.125) if sector else None,
                 meta=meta)


def _assert_same(a: Sweep, b: Sweep) -> None:
    assert np.array_equal(a.frames, b.frames) and a.frames.dtype == b.frames.dtype == np.float32
    if a.image_to_world is None:
        assert b.image_to_world is None
    else:
        assert np.array_equal(a.image_to_world, b.image_to_world)
    assert a.spacing_mm == b.spacing_mm
    assert a.sector == b.sector
    assert a.meta.get("frame_times_s") == b.meta.get("frame_times_s")
    for key in ("probe", "note"):
        assert a.meta.get(key) == b.meta.get(key)


@pytest.mark.parametrize("ext", ["seq.nrrd", "igs.mha", "seq.mha", "igs.nrrd"])
@pytest.mark.parametrize("full", [True, False])
def test_own_sweep_round_trip_is_identical(tmp_path, rng, ext, full):
    sweep = _sweep(rng, poses=full, sector=full, times=full)
    back = read_sweep(write_sweep(tmp_path / f"s.{ext}", sweep))
    _assert_same(sweep, back)
    assert back.meta["source"].endswith(ext)
    assert [p.name for p in tmp_path.iterdir()] == [f"s.{ext}"]


def test_seq_nrrd_has_the_fields_slicer_and_plus_read(tmp_path, rng):
    nrrd = pytest.importorskip("nrrd")
    sweep = _sweep(rng)
    path = write_sweep(tmp_path / "s.seq.nrrd", sweep)
    data, header = nrrd.read(str(path))
    assert data.shape == (9, 12, 1, 4)  # W, H, 1, N in file order
    assert list(header["kinds"]) == ["domain", "domain", "domain", "list"]
    assert header["DataNodeClassName"] == "vtkMRMLScalarVolumeNode"
    assert header["ultrasound image orientation"] == "MF"
    written = np.array([float(v) for v in header["Seq_Frame0002_ImageToReferenceTransform"].split()]).reshape(4, 4)
    assert np.array_equal(written, LPS_TO_RAS @ sweep.image_to_world[2])  # Reference frame is LPS
    assert header["Seq_Frame0002_ImageToReferenceTransformStatus"] == "OK"
    index = [float(v) for v in header["axis 3 index values"].split()]
    assert index == sweep.meta["frame_times_s"]


def test_igs_mha_opens_in_simpleitk(tmp_path, rng):
    sitk = pytest.importorskip("SimpleITK")
    sweep = _sweep(rng)
    img = sitk.ReadImage(str(write_sweep(tmp_path / "s.igs.mha", sweep)))
    assert img.GetSize() == (9, 12, 4)
    assert np.array_equal(sitk.GetArrayFromImage(img), sweep.frames)


# --- synthetic PLUS files -----------------------------------------------------------------------

def _plus_file(path, frames, fields_per_frame, orientation="MF"):
    fields = {"Kinds": "domain domain list", "ElementSpacing": "1 1 1", "UltrasoundImageOrientation": orientation + "A"}
    for i, d in enumerate(fields_per_frame):
        for k, v in d.items():
            fields[f"Seq_Frame{i:04d}_{k}"] = v
    return write_metaimage(path, frames, fields, compress=True)


def _config(path, extra_transform=""):
    path.write_text(f"""<PlusConfiguration version="2.1">
  <CoordinateDefinitions>
    <Transform From="Image" To="Probe" Matrix="{format_numbers(I2P)}" />
    {extra_transform}
  </CoordinateDefinitions>
  <VolumeReconstruction OutputSpacing="0.5 0.5 0.5" OutputOrigin="-10 -20 -30" OutputExtent="0 9 0 19 0 4"
    ClipRectangleOrigin="2 3" ClipRectangleSize="5 6" FanAnglesDeg="-30 30" FanOriginPixel="4 -10"
    FanRadiusStartPixel="10" FanRadiusStopPixel="200" />
</PlusConfiguration>""")
    return path


def _tracked(rng, n=3):
    p2t = [rigid(euler_to_matrix(*rng.normal(0, 0.3, 3)), rng.normal(0, 50, 3)) for _ in range(n)]
    r2t = [rigid(euler_to_matrix(*rng.normal(0, 0.3, 3)), rng.normal(0, 50, 3)) for _ in range(n)]
    per = [{"ProbeToTrackerTransform": format_numbers(p), "ProbeToTrackerTransformStatus": "OK",
            "ReferenceToTrackerTransform": format_numbers(r), "ReferenceToTrackerTransformStatus": "OK",
            "Timestamp": f"{10 + 0.05 * i}", "ImageStatus": "OK"} for i, (p, r) in enumerate(zip(p2t, r2t))]
    return p2t, r2t, per


def test_plus_chain_and_calibration_spacing(tmp_path, rng):
    frames = rng.integers(0, 256, size=(3, 8, 6), dtype=np.uint8)
    p2t, r2t, per = _tracked(rng)
    seq = _plus_file(tmp_path / "a.igs.mha", frames, per)
    (tmp_path / "other").mkdir()
    cfg = _config(tmp_path / "other" / "cfg.xml")
    sweep = read_sweep(seq, plus_config=cfg)
    assert np.array_equal(sweep.frames, frames.astype(np.float32) / 255)
    assert sweep.spacing_mm == pytest.approx((0.2, 0.3))  # column norms of ImageToProbe: (dy, dx)
    for i in range(3):
        expected = LPS_TO_RAS @ np.linalg.inv(r2t[i]) @ p2t[i] @ I2P
        np.testing.assert_allclose(sweep.image_to_world[i][:, [0, 1, 3]], expected[:, [0, 1, 3]], atol=1e-9)
        n = np.cross(expected[:3, 0], expected[:3, 1])
        np.testing.assert_allclose(sweep.image_to_world[i][:3, 2], n / np.linalg.norm(n), atol=1e-12)
    assert sweep.meta["frame_times_s"] == pytest.approx([10.0, 10.05, 10.1])
    assert sweep.meta["pose_chain"] == ["ImageToProbe", "ProbeToTracker", "inv(ReferenceToTracker)"]


def test_plus_without_calibration_has_no_poses_then_finds_config_beside(tmp_path, rng):
    frames = rng.integers(0, 256, size=(3, 8, 6), dtype=np.uint8)
    _, _, per = _tracked(rng)
    seq = _plus_file(tmp_path / "Liver.igs.mha", frames, per)
    bare = read_sweep(seq)
    assert not bare.has_poses and bare.meta["spacing_source"] == "assumed"
    assert read_sweep(seq, spacing_mm=(0.4, 0.4)).spacing_mm == (0.4, 0.4)
    # Another recording's calibration in the same folder is never applied silently.
    _config(tmp_path / "PlusDeviceSet_Kidney.xml")
    assert not read_sweep(seq).has_poses
    _config(tmp_path / "PlusDeviceSet_LiverReconstruction.xml")
    found = read_sweep(seq)
    assert found.has_poses and found.meta["plus_config"].endswith("PlusDeviceSet_LiverReconstruction.xml")


def test_plus_invalid_frames_are_dropped(tmp_path, rng):
    frames = rng.integers(0, 256, size=(3, 8, 6), dtype=np.uint8)
    _, _, per = _tracked(rng)
    per[1]["ProbeToTrackerTransformStatus"] = "INVALID"
    seq = _plus_file(tmp_path / "a.igs.mha", frames, per)
    sweep = read_sweep(seq, plus_config=_config(tmp_path / "c.xml"))
    assert sweep.n_frames == 2 and sweep.meta["dropped_frames"] == [1]
    assert np.array_equal(sweep.frames[1], frames[2].astype(np.float32) / 255)
    assert len(sweep.meta["frame_times_s"]) == 2


def test_plus_config_with_transforms_absent_from_sequence(tmp_path, rng):
    frames = rng.integers(0, 256, size=(3, 8, 6), dtype=np.uint8)
    per = [{"StylusToTrackerTransform": format_numbers(np.eye(4))} for _ in range(3)]
    seq = _plus_file(tmp_path / "a.igs.mha", frames, per)
    with pytest.raises(InputError, match=r"a\.igs\.mha: cannot chain Image to Reference with PLUS config .*StylusToTracker"):
        read_sweep(seq, plus_config=_config(tmp_path / "c.xml"))


@pytest.mark.parametrize("orientation, flip_rows, flip_cols",
                         [("MF", False, False), ("MN", True, False), ("UF", False, True), ("UN", True, True)])
def test_image_orientation_is_converted_to_mf(tmp_path, rng, orientation, flip_rows, flip_cols):
    frames = rng.integers(0, 256, size=(2, 5, 4), dtype=np.uint8)
    M = [image_to_world_matrix(np.eye(3), [0, 0, i], (1.0, 1.0)) for i in range(2)]
    per = [{"ImageToReferenceTransform": format_numbers(LPS_TO_RAS @ m)} for m in M]
    sweep = read_sweep(_plus_file(tmp_path / "o.igs.mha", frames, per, orientation))
    expected = frames[:, ::-1] if flip_rows else frames
    expected = expected[:, :, ::-1] if flip_cols else expected
    assert np.array_equal(sweep.frames, expected.astype(np.float32) / 255)
    assert np.array_equal(sweep.image_to_world, np.stack(M))  # transforms refer to the MF image


def test_read_plus_config_fields(tmp_path):
    cfg = read_plus_config(_config(tmp_path / "c.xml"))
    assert np.array_equal(cfg.image_to_probe, I2P)
    assert cfg.pixel_spacing_mm == pytest.approx((0.2, 0.3))
    assert cfg.output_spacing_mm == (0.5, 0.5, 0.5)
    assert cfg.clip_origin_px == (2, 3) and cfg.clip_size_px == (5, 6)
    assert cfg.fan_angles_deg == (-30.0, 30.0) and cfg.fan_origin_px == (4.0, -10.0)
    assert cfg.fan_radius_px == (10.0, 200.0)
    assert cfg.output_shape() == (10, 20, 5)
    A = cfg.output_affine_ras()
    np.testing.assert_allclose(A[:3, 3], [10.0, 20.0, -30.0])
    (tmp_path / "bad.xml").write_text("<PlusConfiguration><Transform From='Image' To='Probe' Matrix='1 2 3'/></PlusConfiguration>")
    with pytest.raises(FileFormatError, match="bad.xml: .*needs 16 numbers"):
        read_plus_config(tmp_path / "bad.xml")
    (tmp_path / "notxml.xml").write_text("<<<")
    with pytest.raises(FileFormatError, match="notxml.xml: not a valid PLUS configuration"):
        read_plus_config(tmp_path / "notxml.xml")


# --- the real PLUS spine sweep --------------------------------------------------------------------

def test_real_plus_spine_sweep_lines_up_with_plus_reconstruction():
    path = shared_file("plus/SpinePhantomFreehand.igs.mha")
    cfg = shared_file("plus/PlusDeviceSet_SpinePhantomFreehandReconstructionOnly.xml")
    sweep = read_sweep(path, plus_config=cfg)
    assert sweep.n_frames == 21 and sweep.shape == (616, 820) and sweep.has_poses
    assert sweep.spacing_mm == pytest.approx((0.0790, 0.0854), abs=1e-4)
    assert 0.0 <= sweep.frames.min() and sweep.frames.max() <= 1.0
    auto = read_sweep(path)  # the config beside the file is found
    assert np.array_equal(auto.image_to_world, sweep.image_to_world)
    # Every frame's corners lie inside the box PLUS reconstructed from this sweep (PLUS sizes it to fit).
    vol = read_volume(shared_file("plus/SpinePhantomFreehandReconstructed.mha"))
    h, w = sweep.shape
    corners = np.array([[0, 0, 0, 1], [w - 1, 0, 0, 1], [0, h - 1, 0, 1], [w - 1, h - 1, 0, 1]], float).T
    pts = np.einsum("nij,jk->nki", sweep.image_to_world, corners)[..., :3].reshape(-1, 3)
    ijk = (pts - vol.affine[:3, 3]) @ np.linalg.inv(vol.affine[:3, :3]).T
    assert np.all(ijk > -2.0) and np.all(ijk < np.array(vol.shape) + 1.0)
    assert ijk.min(axis=0) == pytest.approx([0, 0, 0], abs=2.0)


def test_plus_style_rgb_nrrd_sequence(tmp_path, rng):
    nrrd = pytest.importorskip("nrrd")
    from sono3d.io.sequences import _luma

    rgb = rng.integers(0, 256, size=(3, 5, 4, 6), dtype=np.uint8)  # file order: C, W, H, N
    header = {"type": "uint8", "kinds": ["vector", "domain", "domain", "list"], "encoding": "gzip",
              "ultrasound image orientation": "MF"}
    nrrd.write(str(tmp_path / "p.igs.nrrd"), rgb, header)
    sweep = read_sweep(tmp_path / "p.igs.nrrd")
    assert sweep.frames.shape == (6, 4, 5) and not sweep.has_poses
    np.testing.assert_allclose(sweep.frames, _luma(rgb.transpose(3, 2, 1, 0)) / 255.0, atol=1e-6)
