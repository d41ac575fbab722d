"""DICOM ultrasound, video files, single images and image folders with poses."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from sono3d.errors import FileFormatError, InputError
from sono3d.geometry import euler_to_matrix, rigid
from sono3d.io import read_any, read_sweep


@pytest.fixture
def ybr_path(tmp_path):
    examples = pytest.importorskip("pydicom.examples")
    path = tmp_path / "echo.dcm"
    examples.ybr_color.save_as(path)
    return path


def test_ybr_echo_clip_frames_spacing_and_times(ybr_path):
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    sweep = read_sweep(ybr_path)
    assert sweep.n_frames == 30 and sweep.shape == (240, 320) and not sweep.has_poses
    # PhysicalDeltaX = 0.05105 cm per pixel with units code 3 (cm) -> 0.5105 mm.
    assert sweep.spacing_mm == pytest.approx((0.5104970559477806, 0.5104970559477806))
    assert sweep.meta["frame_times_s"][1] == pytest.approx(0.033333)
    # Grey = luma: the Y channel of the stored YBR data.
    y = pixel_array(dcmread(ybr_path), raw=True)[..., 0].astype(np.float32) / 255
    assert np.array_equal(sweep.frames, y)


def test_rgb_dicom_is_grey_and_spacing_assumed_or_given():
    path = shared_file("dicom/US1_UNCR.dcm")
    from pydicom import dcmread

    rgb = dcmread(path).pixel_array.astype(np.float64)
    sweep = read_sweep(path)
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255
    assert sweep.n_frames == 1
    assert np.abs(sweep.frames[0] - luma).max() <= 1.0 / 255
    assert sweep.meta["spacing_source"] == "assumed" and sweep.spacing_mm == (1.0, 1.0)
    assert read_sweep(path, spacing_mm=(0.2, 0.25)).spacing_mm == (0.2, 0.25)
    assert read_any(path).meta["kind"] == "image"


def test_palette_dicom_spacing_from_ultrasound_region():
    sweep = read_sweep(shared_file("dicom/OBXXXX1A.dcm"))
    assert sweep.meta["photometric"] == "PALETTE COLOR"
    assert sweep.spacing_mm == pytest.approx((0.2622878766196998, 0.2622878766196998))
    assert 0.0 <= sweep.frames.min() and sweep.frames.max() <= 1.0 and sweep.frames.std() > 0.01


def test_dicom_without_pixel_data(tmp_path, ybr_path):
    from pydicom import dcmread

    ds = dcmread(ybr_path)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(FileFormatError, match=r"nopix\.dcm: DICOM file has no pixel data"):
        read_sweep(tmp_path / "nopix.dcm")


@pytest.mark.parametrize("ext", ["mp4", "avi"])
def test_video_reads_grey_frames(tmp_path, ext):
    iio = pytest.importorskip("imageio.v2")
    frames = np.zeros((6, 32, 48, 3), dtype=np.uint8)
    for i in range(6):
        frames[i, :, : 8 * (i + 1)] = 200
    iio.mimwrite(tmp_path / f"v.{ext}", frames, fps=10, macro_block_size=16)
    sweep = read_sweep(tmp_path / f"v.{ext}")
    assert sweep.n_frames == 6 and sweep.shape == (32, 48) and sweep.frames.dtype == np.float32
    # Lossy codec: compare the bright fraction of each frame.
    bright = (sweep.frames > 0.5).mean(axis=(1, 2))
    np.testing.assert_allclose(bright, [(i + 1) / 6 for i in range(6)], atol=0.08)
    assert sweep.meta["spacing_source"] == "assumed"
    assert read_sweep(tmp_path / f"v.{ext}", spacing_mm=(0.3, 0.3)).spacing_mm == (0.3, 0.3)


def _write_pngs(folder, n, rng):
    iio = pytest.importorskip("imageio.v3")
    folder.mkdir()
    imgs = rng.integers(0, 256, size=(n, 10, 7), dtype=np.uint8)
    for i in range(n):
        iio.imwrite(folder / f"frame{i}.png", imgs[i])  # frame10 sorts after frame9
    return imgs


def test_image_folder_natural_order_and_poses(tmp_path, rng):
    imgs = _write_pngs(tmp_path / "f", 12, rng)
    sweep = read_sweep(tmp_path / "f")
    assert np.array_equal(sweep.frames, imgs.astype(np.float32) / 255)
    assert not sweep.has_poses
    # poses.npy as image_to_world: spacing from its column norms.
    R = euler_to_matrix(0.1, 0.2, 0.3)
    i2w = np.stack([rigid(R, [0, 0, i]) @ np.diag([0.4, 0.25, 1, 1]) for i in range(12)])
    np.save(tmp_path / "f" / "poses.npy", i2w)
    sweep = read_sweep(tmp_path / "f")
    assert np.array_equal(sweep.image_to_world, i2w) and sweep.spacing_mm == pytest.approx((0.25, 0.4))
    # Rigid probe poses plus spacing.
    probe = np.stack([rigid(R, [0, 0, i]) for i in range(12)])
    np.save(tmp_path / "f" / "poses.npy", probe)
    sweep = read_sweep(tmp_path / "f", spacing_mm=(0.25, 0.4))
    np.testing.assert_allclose(sweep.image_to_world, i2w, atol=1e-12)


def test_image_folder_pose_count_mismatch(tmp_path, rng):
    _write_pngs(tmp_path / "f", 3, rng)
    np.save(tmp_path / "f" / "poses.npy", np.tile(np.eye(4), (4, 1, 1)))
    with pytest.raises(InputError, match=r"poses\.npy: 4 poses but 3 images"):
        read_sweep(tmp_path / "f")


def test_single_png_is_an_image(tmp_path, rng):
    iio = pytest.importorskip("imageio.v3")
    img = rng.integers(0, 65535, size=(9, 11), dtype=np.uint16)
    iio.imwrite(tmp_path / "one.png", img)
    obj = read_any(tmp_path / "one.png")
    assert obj.meta["kind"] == "image" and obj.n_frames == 1
    np.testing.assert_allclose(obj.frames[0], img / 65535.0, atol=1e-6)
