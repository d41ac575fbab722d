"""Classic compounding (sono3d.sweep.compound) and ``sono3d sweep compound``."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import shared_file
from sono3d.cli import app
from sono3d.errors import FileFormatError, InputError
from sono3d.geometry import euler_to_matrix, image_to_world_matrix, sector_for_probe
from sono3d.io import read_plus_config, read_sweep, read_volume, write_sweep
from sono3d.metrics import ncc
from sono3d.sweep.compound import (
    CompoundConfig,
    FanClip,
    HoleKernel,
    clip_mask,
    compare_volumes,
    compound_sweep,
    evaluate_holdout,
    fill_holes,
    holdout_split,
    output_grid,
    read_plus_reconstruction,
    splat_frames,
)
from sono3d.types import Sweep, Volume

# Frames in the x-z plane: columns along +x, rows along -z (down), normal col x row = +y.
_R = np.column_stack([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])


def smooth(p: np.ndarray) -> np.ndarray:
    """A smooth test volume in [0.05, 0.95], as a function of world mm ``(..., 3)``."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    return 0.5 + 0.3 * np.sin(x / 4.0) * np.cos(y / 5.0) + 0.15 * np.cos(z / 3.0)


def translation_sweep(n: int = 17, step_mm: float = 1.25, shape=(40, 48), px_mm: float = 0.5) -> Sweep:
    """Frames of ``smooth`` at y = 0, step, 2 step, ... (pixel centres sampled exactly)."""
    H, W = shape
    M = np.stack([image_to_world_matrix(_R, [0.0, i * step_mm, 0.0], (px_mm, px_mm)) for i in range(n)])
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    pix = np.stack([cols, rows, np.zeros_like(rows), np.ones_like(rows)], axis=-1).astype(np.float64)
    world = np.einsum("nij,hwj->nhwi", M, pix)[..., :3]
    return Sweep(smooth(world).astype(np.float32), M, (px_mm, px_mm))


def voxel_world(volume: Volume) -> np.ndarray:
    ijk = np.indices(volume.shape, dtype=np.float64)
    return np.einsum("ij,j...->...i", volume.affine[:3, :3], ijk) + volume.affine[:3, 3]


# --- recovery of a known volume ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["nearest", "linear"])
def test_dense_sweep_recovers_smooth_volume_without_holes(method):
    sweep = translation_sweep()
    result = compound_sweep(sweep, CompoundConfig(spacing_mm=0.5, method=method))
    vol = result.volume
    # The grid is the sweep's bounding box: 48 x 17 frames... 0.5 mm voxels, RAS axes.
    assert vol.shape == (48, 41, 40)
    np.testing.assert_allclose(vol.affine[:3, :3], 0.5 * np.eye(3))
    np.testing.assert_allclose(vol.affine[:3, 3], [0.0, 0.0, -19.5])
    # Frames 2.5 voxels apart leave holes, and hole filling closes every one of them.
    assert result.stats["recorded_fraction"] < 0.8
    assert result.filled.all()
    truth = smooth(voxel_world(vol))
    assert ncc(vol.array, truth) > 0.95
    assert np.abs(vol.array - truth).mean() < 0.03


def test_no_hole_filling_leaves_holes_and_zeros():
    sweep = translation_sweep(n=5, step_mm=2.0)
    result = compound_sweep(sweep, CompoundConfig.preset("none", spacing_mm=0.5))
    assert not result.filled.all()
    assert np.all(result.volume.array[~result.filled] == 0)
    np.testing.assert_array_equal(result.filled, result.accumulation > 0)


# --- compounding semantics on hand-built cases ---------------------------------------------------

def _two_frames(values_a: float, values_b: float, shift_b_px: float = 0.0) -> Sweep:
    """Two 2x3 frames in the z = 0 plane at 1 mm pixels, the second shifted along +x."""
    R = np.eye(3)  # columns along +x, rows along +y
    Ma = image_to_world_matrix(R, [0.0, 0.0, 0.0], (1.0, 1.0))
    Mb = image_to_world_matrix(R, [shift_b_px, 0.0, 0.0], (1.0, 1.0))
    frames = np.stack([np.full((2, 3), values_a), np.full((2, 3), values_b)]).astype(np.float32)
    return Sweep(frames, np.stack([Ma, Mb]), (1.0, 1.0))


def _grid(n_x: int = 4) -> tuple[np.ndarray, tuple[int, int, int]]:
    return np.eye(4), (n_x, 2, 1)  # 1 mm voxels on the pixel centres


@pytest.mark.parametrize("method", ["nearest", "linear"])
def test_mean_max_latest_on_overlapping_frames(method):
    sweep = _two_frames(0.2, 0.6, shift_b_px=1.0)  # A covers x = 0..2, B covers x = 1..3
    got = {}
    for mode in ("mean", "max", "latest"):
        cfg = CompoundConfig(spacing_mm=1.0, method=method, compounding=mode, fill_holes=False)
        res = compound_sweep(sweep, cfg, grid=_grid())
        got[mode] = res.volume.array[:, 0, 0]
        assert res.filled.all()
    np.testing.assert_allclose(got["mean"], [0.2, 0.4, 0.4, 0.6], atol=1e-6)
    np.testing.assert_allclose(got["max"], [0.2, 0.6, 0.6, 0.6], atol=1e-6)
    np.testing.assert_allclose(got["latest"], [0.2, 0.6, 0.6, 0.6], atol=1e-6)
    # Reversed acquisition order: the latest frame is now the darker one; max does not care.
    rev = sweep.subset([1, 0])
    latest = compound_sweep(rev, CompoundConfig(spacing_mm=1.0, method=method, compounding="latest",
                                                fill_holes=False), grid=_grid()).volume.array[:, 0, 0]
    np.testing.assert_allclose(latest, [0.2, 0.2, 0.2, 0.6], atol=1e-6)
    top = compound_sweep(rev, CompoundConfig(spacing_mm=1.0, method=method, compounding="max",
                                             fill_holes=False), grid=_grid()).volume.array[:, 0, 0]
    np.testing.assert_allclose(top, got["max"], atol=1e-6)


def test_linear_splatting_weights():
    # B sits a quarter voxel to the right of A: its pixels give 3/4 to their left voxel, 1/4 right.
    sweep = _two_frames(1.0, 0.0, shift_b_px=0.25)
    res = compound_sweep(sweep, CompoundConfig(spacing_mm=1.0, method="linear", fill_holes=False), grid=_grid())
    v = res.volume.array[:, 0, 0]
    acc = res.accumulation[:, 0, 0]
    np.testing.assert_allclose(acc, [1.75, 2.0, 2.0, 0.25], atol=1e-6)
    np.testing.assert_allclose(v, [1 / 1.75, 1 / 2.0, 1 / 2.0, 0.0], atol=1e-6)
    # Max / latest touch only neighbours with weight >= 1/8: a 0.9-voxel shift skips the left one.
    sweep = _two_frames(0.3, 0.8, shift_b_px=0.9)
    res = compound_sweep(sweep, CompoundConfig(spacing_mm=1.0, compounding="latest", fill_holes=False),
                         grid=_grid())
    np.testing.assert_allclose(res.volume.array[:, 0, 0], [0.3, 0.8, 0.8, 0.8], atol=1e-6)


def test_splatting_matches_a_numpy_reference():
    """The compiled pasting loop against np.add.at on random oblique poses (linear, mean)."""
    rng = np.random.default_rng(3)
    frames = rng.random((3, 9, 11)).astype(np.float32)
    A = np.stack([np.eye(4) for _ in range(3)])
    for n in range(3):
        A[n, :3, :3] = euler_to_matrix(*rng.uniform(-0.6, 0.6, 3)) * 0.7
        A[n, :3, 3] = [2.3, 1.7, 3.1 + n]
    mask = np.ones((9, 11), dtype=bool)
    shape = (14, 14, 12)
    values, acc, counts = splat_frames(frames, A, mask, shape, "linear", "mean")
    vsum = np.zeros(shape)
    wsum = np.zeros(shape)
    rows, cols = np.nonzero(mask)
    pasted = 0
    for n in range(3):
        p = (A[n, :3, 0, None] * cols + A[n, :3, 1, None] * rows + A[n, :3, 3, None]).T  # (P, 3)
        i0 = np.floor(p).astype(int)
        t = p - i0
        inside = np.all(i0 >= 0, axis=1) & np.all(i0 + 1 < np.array(shape), axis=1)
        pasted += int(inside.sum())
        for corner in np.ndindex(2, 2, 2):
            w = np.prod(np.where(corner, t, 1 - t), axis=1)[inside]
            idx = tuple((i0[inside] + corner).T)
            np.add.at(wsum, idx, w)
            np.add.at(vsum, idx, w * frames[n][mask][inside])
    assert counts["pixels"] == pasted
    recorded = wsum >= 0.5 / 256  # PLUS's 8.8 fixed-point accumulation rounds lighter voxels to 0
    assert (wsum[~recorded] > 0).any()
    np.testing.assert_allclose(acc, np.where(recorded, wsum, 0.0), atol=1e-5)
    ref = np.divide(vsum, wsum, out=np.zeros(shape), where=recorded)
    np.testing.assert_allclose(values, ref, atol=1e-5)


# --- hole filling --------------------------------------------------------------------------------

def _slab_gap(lo: float = 1.0, hi: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """11^3 voxels recorded everywhere but the slab x = 4, 5, 6 (value lo below, hi above)."""
    vals = np.full((11, 11, 11), lo)
    vals[7:] = hi
    known = np.ones((11, 11, 11), dtype=bool)
    known[4:7] = False
    return vals, known


def test_gaussian_fills_a_hole_of_known_size_and_respects_max_hole():
    vals, known = _slab_gap()
    kernels = (HoleKernel("gaussian", size=5, stdev=1.3333, min_ratio=0.1),)
    out, filled = fill_holes(vals, known, kernels, spacing_mm=1.0)
    assert filled.all()
    np.testing.assert_allclose(out, 1.0, atol=1e-6)
    # The slab centre is 2 mm from recorded data: a 2 mm maximum hole leaves it empty.
    out, filled = fill_holes(vals, known, kernels, spacing_mm=1.0, max_hole_mm=2.0)
    assert filled[4].all() and filled[6].all() and not filled[5].any()
    assert np.all(out[5] == 0)
    out, filled = fill_holes(vals, known, kernels, spacing_mm=1.0, max_hole_mm=4.0)
    assert filled.all()
    # A 3-voxel kernel cannot reach the centre either: kernels are tried in order, none succeeds.
    _, filled = fill_holes(vals, known, (HoleKernel("gaussian", 3, 0.6667, 0.1),), spacing_mm=1.0)
    assert not filled[5].any() and filled[4].all()
    _, filled = fill_holes(vals, known, (HoleKernel("gaussian", 3, 0.6667, 0.1),
                                         HoleKernel("inverse_distance", 7, min_ratio=0.0)), spacing_mm=1.0)
    assert filled.all()


def test_stick_filling_interpolates_across_the_gap_and_respects_stick_length():
    vals, known = _slab_gap(lo=0.0, hi=1.0)
    out, filled = fill_holes(vals, known, (HoleKernel("stick", stick_length=9, n_sticks=1),))
    assert filled.all()
    # PLUS's stick weights: (steps back + 1) / (stick length) for the forward end.
    np.testing.assert_allclose(out[4:7, 5, 5], [0.4, 0.6, 0.8], atol=1e-6)
    # A 3-voxel gap needs sticks of 5 voxels end to end.
    _, filled = fill_holes(vals, known, (HoleKernel("stick", stick_length=4),))
    assert not filled[4:7].any()
    _, filled = fill_holes(vals, known, (HoleKernel("stick", stick_length=5),))
    assert filled.all()


def _plus_kernel_reference(values, known, kernel, acc):
    """vtkPlusFillHolesInVolume's neighbourhood kernels, voxel by voxel (slow, for small grids)."""
    h = (kernel.size - 1) // 2
    r = np.arange(-h, h + 1)
    d = np.sqrt(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2)
    if kernel.kind == "inverse_distance":
        kern = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    else:
        kern = np.exp(-d**2 / (2 * kernel.stdev**2))
    out = np.zeros(values.shape)
    ok = np.zeros(values.shape, dtype=bool)
    pad = [(h, h)] * 3
    V, K, Acc = np.pad(values, pad), np.pad(known, pad), np.pad(acc, pad)
    for x, y, z in np.argwhere(~known):
        win = (slice(x, x + 2 * h + 1), slice(y, y + 2 * h + 1), slice(z, z + 2 * h + 1))
        w = kern * K[win] * (Acc[win] if kernel.kind == "gaussian_accumulation" else 1.0)
        if K[win].sum() / kernel.size**3 > kernel.min_ratio and w.sum() > 0:
            out[x, y, z] = (w * V[win]).sum() / w.sum()
            ok[x, y, z] = True
    return out, ok


@pytest.mark.parametrize("kernel", [HoleKernel("gaussian", 3, 0.6667, 0.3), HoleKernel("gaussian", 5, 1.3, 0.1),
                                    HoleKernel("inverse_distance", 5, min_ratio=0.05),
                                    HoleKernel("gaussian_accumulation", 3, 1.0, 0.2)])
def test_neighbourhood_kernels_match_plus_reference(kernel):
    rng = np.random.default_rng(5)
    values = rng.random((9, 10, 11)).astype(np.float32)
    known = rng.random((9, 10, 11)) < 0.3
    acc = np.where(known, rng.uniform(0.1, 3.0, known.shape), 0.0)
    ref, ref_ok = _plus_kernel_reference(np.where(known, values, 0), known, kernel, acc)
    out, filled = fill_holes(values, known, (kernel,), accumulation=acc)
    np.testing.assert_array_equal(filled, known | ref_ok)
    assert ref_ok.any()
    np.testing.assert_allclose(out[ref_ok], ref[ref_ok], rtol=1e-5)
    np.testing.assert_array_equal(out[known], values[known])


def test_nearest_and_accumulation_kernels():
    vals, known = _slab_gap(lo=0.25, hi=0.25)
    acc = known.astype(np.float64)
    for kernel in (HoleKernel("nearest", size=7, min_ratio=0.0), HoleKernel("gaussian_accumulation", 7, 2.0, 0.0)):
        out, filled = fill_holes(vals, known, (kernel,), accumulation=acc)
        assert filled.all(), kernel.kind
        np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_bad_kernels_and_config():
    with pytest.raises(InputError, match="odd"):
        HoleKernel("gaussian", size=4)
    with pytest.raises(InputError, match="unknown hole-filling kernel"):
        HoleKernel("median")
    with pytest.raises(InputError, match="spacing must be positive"):
        CompoundConfig(spacing_mm=0.0)
    with pytest.raises(InputError, match="interpolation"):
        CompoundConfig(method="cubic")
    with pytest.raises(InputError, match="compounding"):
        CompoundConfig(compounding="median")
    with pytest.raises(InputError, match="preset"):
        CompoundConfig.preset("best")
    assert CompoundConfig.preset("fast").method == "nearest"
    assert CompoundConfig.preset("plus").kernels[-1].kind == "stick"


# --- errors of the pipeline ----------------------------------------------------------------------

def test_sweep_without_poses_and_grid_without_pixels_are_errors():
    sweep = translation_sweep(n=3)
    with pytest.raises(InputError, match="no poses"):
        compound_sweep(Sweep(sweep.frames, None, sweep.spacing_mm), CompoundConfig())
    far = CompoundConfig(grid_origin_mm=(500.0, 500.0, 500.0), grid_shape=(10, 10, 10))
    with pytest.raises(InputError, match="no pixel of the sweep falls inside"):
        compound_sweep(sweep, far)


def test_clip_rectangle_and_fan_masks():
    cfg = CompoundConfig(clip_rectangle=(2, 1, 3, 2))
    m = clip_mask((6, 8), cfg)
    # PLUS includes the end pixel: columns 2..5, rows 1..3.
    assert m.sum() == 4 * 3 and m[1, 2] and m[3, 5] and not m[4, 5] and not m[1, 6]
    fan = CompoundConfig(fan=FanClip((-30.0, 30.0), (10.0, 0.0), (0.0, 15.0)))
    m = clip_mask((20, 21), fan)
    assert m[5, 10] and m[14, 10]  # on the central beam
    assert not m[16, 10]  # beyond the radius
    assert not m[5, 17]  # 54 degrees off the beam
    assert m[10, 15]  # 26.6 degrees
    assert not m[0, 10]  # at the apex row


def test_sector_clipping_restricts_the_pasted_pixels():
    sweep = translation_sweep(n=3)
    sweep.sector = sector_for_probe(sweep.shape, sweep.spacing_mm, angle_deg=60.0, depth_mm=15.0)
    res = compound_sweep(sweep, CompoundConfig(fill_holes=False))
    full = compound_sweep(sweep, CompoundConfig(fill_holes=False, use_sector=False))
    assert res.stats["pixels_per_frame"] < full.stats["pixels_per_frame"]
    assert res.volume.shape[0] < full.volume.shape[0]  # the fan is narrower than the frame


# --- comparison and hold-out evaluation ----------------------------------------------------------

def test_compare_volumes_in_world_coordinates():
    rng = np.random.default_rng(0)
    a = Volume(rng.random((6, 7, 8)).astype(np.float32), np.diag([0.5, 0.5, 0.5, 1.0]))
    # The same voxels stored along flipped axes (LPS-style): identical in the world.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    aff = a.affine @ np.array([[-1, 0, 0, 5], [0, -1, 0, 6], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    b = Volume(a.array[::-1, ::-1, :].copy(), aff)
    np.testing.assert_allclose(b.affine[:3, :3], (a.affine @ flip)[:3, :3])
    out = compare_volumes(a, b)
    assert out["ncc"] == pytest.approx(1.0, abs=1e-9)
    assert out["dice"] == pytest.approx(1.0)
    assert out["n_both"] == a.array.size
    # c shifted by half its width: on a's grid it covers half of a, so Dice = 2 * 1/2 / (1 + 1/2).
    c = Volume(a.array, a.affine @ np.array([[1, 0, 0, 3], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    out = compare_volumes(a, c)
    assert out["n_b"] == out["n_a"] // 2 and out["dice"] == pytest.approx(2 / 3)


def test_holdout_split_and_evaluation():
    train, test = holdout_split(12, 5)
    np.testing.assert_array_equal(test, [2, 7])
    assert len(train) == 10 and 0 in train and 11 in train
    with pytest.raises(InputError):
        holdout_split(10, 1)
    sweep = translation_sweep(n=16, step_mm=0.75, shape=(24, 32))
    out = evaluate_holdout(sweep, k=5, config=CompoundConfig(spacing_mm=0.5))
    assert out["n_test"] == 3 and out["n_train"] == 13
    assert out["coverage"] == pytest.approx(1.0)
    assert out["ncc"] > 0.95 and out["l1"] < 0.02 and out["psnr"] > 30
    assert set(out) >= {"l1", "l2", "ssim", "psnr", "ncc"}


# --- PLUS configuration and the real PLUS reconstruction -----------------------------------------

_XML = """<PlusConfiguration version="2.1">
  <CoordinateDefinitions/>
  <VolumeReconstruction OutputSpacing="1.0 1.0 1.0" OutputOrigin="{ox} {oy} {oz}" OutputExtent="0 9 0 9 0 9"
    ClipRectangleOrigin="2 3" ClipRectangleSize="10 12" FanAnglesDeg="-20 25" FanOriginPixel="8 0"
    FanRadiusStartPixel="1" FanRadiusStopPixel="30" Interpolation="NEAREST_NEIGHBOR"
    CompoundingMode="MAXIMUM" FillHoles="ON">
    <HoleFilling>
      <HoleFillingElement Type="GAUSSIAN" Size="3" Stdev="0.6667" MinimumKnownVoxelsRatio="0.50"/>
      <HoleFillingElement Type="DISTANCE_WEIGHT_INVERSE" Size="5" MinimumKnownVoxelsRatio="0.1"/>
      <HoleFillingElement Type="STICK" StickLengthLimit="7" NumberOfSticksToUse="2"/>
    </HoleFilling>
  </VolumeReconstruction>
</PlusConfiguration>
"""


def test_read_plus_reconstruction(tmp_path):
    xml = tmp_path / "cfg.xml"
    xml.write_text(_XML.format(ox=-5, oy=-6, oz=7))
    cfg = CompoundConfig.from_plus(xml)
    assert cfg.method == "nearest" and cfg.compounding == "max" and cfg.fill_holes
    assert cfg.clip_rectangle == (2, 3, 10, 12)
    assert cfg.fan == FanClip((-20.0, 25.0), (8.0, 0.0), (1.0, 30.0))
    assert [k.kind for k in cfg.kernels] == ["gaussian", "inverse_distance", "stick"]
    assert cfg.kernels[2].stick_length == 7 and cfg.kernels[2].n_sticks == 2
    assert cfg.grid_axes == "lps" and cfg.grid_shape == (10, 10, 10)
    affine, shape = output_grid(translation_sweep(n=2), cfg)
    np.testing.assert_allclose(affine, read_plus_config(xml).output_affine_ras())
    assert shape == read_plus_config(xml).output_shape()
    # A finer spacing keeps the configured box: 9 mm across at 0.5 mm is 19 voxels.
    assert CompoundConfig.from_plus(xml, spacing_mm=0.5).grid_shape == (19, 19, 19)
    bad = tmp_path / "bad.xml"
    bad.write_text(_XML.format(ox=0, oy=0, oz=0).replace('Type="STICK"', 'Type="MAGIC"'))
    with pytest.raises(FileFormatError, match="MAGIC"):
        read_plus_reconstruction(bad)


def test_matches_plus_reconstruction_of_spine_phantom():
    seq = shared_file("plus/SpinePhantomFreehand.igs.mha")
    xml = shared_file("plus/PlusDeviceSet_SpinePhantomFreehandReconstructionOnly.xml")
    ref_path = shared_file("plus/SpinePhantomFreehandReconstructed.mha")
    sweep = read_sweep(seq, plus_config=xml)
    reference = read_volume(ref_path)
    cfg = CompoundConfig.from_plus(xml)
    assert cfg.kernels == (HoleKernel("stick", stick_length=9, n_sticks=1),)
    result = compound_sweep(sweep, cfg)
    # Same voxel centres as PLUS's own output (origin = minimum corner along the Reference axes).
    np.testing.assert_allclose(result.volume.affine, reference.affine, atol=1e-3)
    out = compare_volumes(result.volume, reference)
    assert out["ncc"] >= 0.9
    assert out["dice"] >= 0.9
    # Every voxel PLUS gave a nonzero value is filled in ours (ours also counts black pixels).
    out = compare_volumes(result.volume, reference, mask_a=result.filled)
    assert out["n_both"] >= 0.99 * out["n_b"]


# --- command line --------------------------------------------------------------------------------

def _run(*args: str):
    return CliRunner().invoke(app, ["sweep", "compound", *args])


def test_cli_compound_writes_volume(tmp_path):
    src = write_sweep(tmp_path / "s.seq.nrrd", translation_sweep(n=6, shape=(20, 24)))
    out = tmp_path / "vol.nii.gz"
    res = _run(str(src), str(out), "--spacing", "1", "--method", "nearest", "--compounding", "max",
               "--max-hole", "3")
    assert res.exit_code == 0, res.output
    assert res.output.count("\n") == 1 and "wrote" in res.output and "nearest, max" in res.output
    vol = read_volume(out)
    np.testing.assert_allclose(np.diag(vol.affine)[:3], 1.0)
    assert vol.shape == (13, 8, 11)  # ceil(extent / 1 mm) + 1 over 11.5 x 6.25 x 9.5 mm
    res = _run(str(src), str(tmp_path / "raw.nii.gz"), "--no-fill-holes")
    assert res.exit_code == 0, res.output
    assert "holes filled" not in res.output


@pytest.mark.parametrize("case", ["spacing", "no_poses", "outside", "extension", "method"])
def test_cli_compound_bad_input(tmp_path, case):
    sweep = translation_sweep(n=4, shape=(12, 16))
    src = write_sweep(tmp_path / "s.seq.nrrd", sweep)
    out = tmp_path / "vol.nii.gz"
    args = [str(src), str(out)]
    if case == "spacing":
        args += ["--spacing", "0"]
    elif case == "no_poses":
        src = write_sweep(tmp_path / "u.seq.nrrd", Sweep(sweep.frames, None, sweep.spacing_mm))
        args = [str(src), str(out)]
    elif case == "outside":
        xml = tmp_path / "far.xml"
        xml.write_text(_XML.format(ox=900, oy=900, oz=900))
        args += ["--plus-config", str(xml)]
    elif case == "extension":
        out = tmp_path / "vol.xyz"
        args = [str(src), str(out)]
    else:
        args += ["--method", "cubic"]
    res = _run(*args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    assert not any(p.name.startswith(".vol") for p in tmp_path.iterdir())
