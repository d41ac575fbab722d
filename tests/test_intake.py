"""Echo intake: sector detection on fake scanner screens, resampling round trip, ED/ES on a generated
cine, reading and refusing inputs, and the real recordings in ../shared (skipped when absent)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import ndimage as ndi

from conftest import shared_file
from echo_screens import fake_screen, paste_view, speckle
from sono3d.errors import FileFormatError, InputError
from sono3d.heart.cohort import generate_case
from sono3d.intake import (FanFit, ViewGeometry, cavity_areas, choose_phases, find_sector, intake_echo, otsu_threshold,
                           read_echo, read_npz, resample_fan)
from sono3d.intake.read import _split_colour
from sono3d.simulate.echo_views import ViewOptions, simulate_views


def _grey(rgb: np.ndarray) -> np.ndarray:
    return _split_colour(rgb, "screen")[0]


@pytest.mark.parametrize("kw", [
    {},  # phased array, apex in the picture
    {"apex": (180.2, 20.3), "angle_deg": 60.0, "tilt_deg": 8.0},  # tilted beam
    {"apex": (200.5, -40.2), "angle_deg": 70.0, "depth_px": 300.0},  # apex above a cropped capture
    {"apex": (200.3, -60.4), "angle_deg": 60.0, "r0_px": 80.0, "depth_px": 340.0},  # curvilinear probe
    {"frames": 5},  # a cine loop: static text, changing speckle
    {"apex": (210.7, 25.2), "angle_deg": 84.0, "tilt_deg": -12.0, "depth_px": 230.0},  # tilted the other way
])
def test_sector_found_on_fake_screens(kw):
    rgb, truth = fake_screen(rng=np.random.default_rng(1), **kw)
    fit = find_sector(_grey(rgb))
    assert np.hypot(*(np.subtract(fit.apex_px, truth.apex_px))) <= 2.0
    assert abs(fit.angle_deg - truth.angle_deg) <= 1.0
    assert abs(fit.tilt_deg - truth.tilt_deg) <= 1.0
    assert abs(fit.radius_px[1] - truth.radius_px[1]) <= 2.0
    assert abs(fit.radius_px[0] - truth.radius_px[0]) <= 2.0


def test_sector_mask_excludes_overlays():
    rgb, truth = fake_screen(rng=np.random.default_rng(2))
    grey = _grey(rgb)[0]
    fit = find_sector(grey)
    outside = grey * ~fit.mask(grey.shape)
    # text, ECG, dots and the grey bar are all outside the found fan (they survive blanking only if inside)
    assert grey[~truth.mask(grey.shape)].max() > 0.5
    assert outside[ndi.binary_erosion(~truth.mask(grey.shape), iterations=3)].max() > 0.5
    assert np.count_nonzero(fit.mask(grey.shape) ^ truth.mask(grey.shape)) < 0.01 * truth.mask(grey.shape).sum()


@pytest.mark.parametrize("image", ["black", "photo", "rectangle"])
def test_no_sector_found(image):
    rng = np.random.default_rng(3)
    H, W = 300, 400
    if image == "black":
        g = np.zeros((H, W), np.float32)
    elif image == "photo":
        # a natural-looking picture: smooth random fields, a sky gradient, bright everywhere
        rgb = np.stack([ndi.gaussian_filter(rng.normal(size=(H, W)), 25) for _ in range(3)], -1)
        rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min())
        rgb = 0.6 * rgb + 0.4 * np.linspace(1, 0, H)[:, None, None]
        g = _grey((rgb[None] * 255).astype(np.uint8))[0]
    else:  # a linear-array image: a speckle rectangle with text around it
        g = np.zeros((H, W), np.float32)
        g[40:260, 60:340] = speckle((220, 280), rng)
    with pytest.raises(InputError, match="no imaging sector found"):
        find_sector(g)


def _case_views(size: int):
    return generate_case(3, 0, size=size)["views"]


@pytest.mark.parametrize("j", [0, 4])
def test_resampling_round_trip(j):
    """A cohort view drawn into a screen fan (0.5 mm pixels, tilted 3 degrees) and taken back."""
    v = _case_views(64)
    geo = ViewGeometry(64, 200.0 if j < 3 else 150.0, float(v["depth_mm"][j]), float(v["opening_deg"][j]))
    view = v["echo"][0, j]
    screen, truth = paste_view(view, geo, (420, 560), (280.3, 25.7), pixel_mm=0.5, tilt_deg=3.0)
    fit = find_sector(screen)
    assert np.hypot(*(np.subtract(fit.apex_px, truth.apex_px))) <= 2.0
    back, coverage = resample_fan(screen, fit, geo.depth_mm / fit.radius_px[1], geo)
    inner = coverage & ndi.binary_erosion(geo.mask())
    assert inner.sum() > 0.9 * geo.mask().sum()
    assert np.corrcoef(back[0][inner], view[inner])[0, 1] >= 0.95


def test_resample_mirror_and_coverage():
    geo = ViewGeometry(64, 200.0, 175.0, 77.0)
    g = np.zeros((64, 64), np.float32)
    g[:, :32] = 1.0  # left half bright
    fit = FanFit(apex_px=(31.5, 0.0), angle_deg=77.0, tilt_deg=0.0, radius_px=(0.0, 175.0 / geo.pixel_mm))
    same, _ = resample_fan(g, fit, geo.pixel_mm, geo)
    flipped, _ = resample_fan(g, fit, geo.pixel_mm, geo, mirror=True)
    assert same[0, 30:, :20].mean() > 0.5 and flipped[0, 30:, :20].mean() < 0.05
    # a source half as deep covers only the upper quarter of the target fan's area
    half = FanFit(apex_px=(31.5, 0.0), angle_deg=77.0, tilt_deg=0.0, radius_px=(0.0, 0.5 * 175.0 / geo.pixel_mm))
    _, cov_half = resample_fan(g, half, geo.pixel_mm, geo)
    assert 0.2 < cov_half.sum() / geo.mask().sum() < 0.3


def _cine(size: int, n: int = 12, t_ed: int = 3):
    """A cine interpolated between a case's ED and ES hearts (points and landmarks), rendered as views."""
    case = generate_case(3, 0, size=size)
    w = 0.5 + 0.5 * np.cos(2 * np.pi * (np.arange(n) - t_ed) / n)
    pts = [wi * case["points"]["ed"] + (1 - wi) * case["points"]["es"] for wi in w]
    lms = [{k: wi * case["landmarks"]["ed"][k] + (1 - wi) * case["landmarks"]["es"][k] for k in case["landmarks"]["ed"]}
           for wi in w]
    return simulate_views(pts, lms, np.random.default_rng(5), ViewOptions(size=size))


def _cyclic(a: int, b: int, n: int) -> int:
    return min((a - b) % n, (b - a) % n)


@pytest.mark.parametrize("j", [0, 4])
def test_ed_es_on_generated_cine(j):
    n, t_ed, t_es = 12, 3, 9
    views = _cine(128, n, t_ed)
    geo = ViewGeometry(128, 200.0 if j < 3 else 150.0, float(views["depth_mm"][j]), float(views["opening_deg"][j]))
    areas, _ = cavity_areas(views["echo"][:, j], geo.mask(), geo.pixel_mm, geo.opening_deg)
    ed, es = choose_phases(areas)
    true_lv = (views["labels"][:, j] == 25).sum((1, 2))
    assert int(np.argmax(true_lv)) == t_ed and int(np.argmin(true_lv)) == t_es
    assert _cyclic(ed, t_ed, n) <= 1 and _cyclic(es, t_es, n) <= 1
    assert areas[ed] > areas[es]


def test_ed_es_through_a_screen_loop(tmp_path):
    """The same cine pasted into screen frames, saved as frames, read back through intake_echo."""
    n, t_ed = 12, 3
    views = _cine(128, n, t_ed)
    geo = ViewGeometry(128, 150.0, float(views["depth_mm"][4]), float(views["opening_deg"][4]))
    frames = np.stack([paste_view(views["echo"][k, 4], geo, (360, 480), (240.2, 20.4), pixel_mm=0.4)[0]
                       for k in range(n)])
    np.savez(tmp_path / "loop.npz", frames=(frames * 255).astype(np.uint8))
    it = intake_echo(tmp_path / "loop.npz", geo, depth_mm=geo.depth_mm)
    assert it.is_loop and it.images().shape == (2, 128, 128)
    assert _cyclic(it.ed_frame, t_ed, n) <= 1 and _cyclic(it.es_frame, t_ed + 6, n) <= 1
    assert it.areas_mm2[it.ed_frame] > it.areas_mm2[it.es_frame]
    assert it.pixel_source == "depth option" and abs(it.pixel_mm - 0.4) < 0.01
    fixed = intake_echo(tmp_path / "loop.npz", geo, depth_mm=geo.depth_mm, ed_frame=5, es_frame=0)
    assert fixed.frames_used == [5, 0]
    with pytest.raises(InputError, match="ED frame 12 is out of range"):
        intake_echo(tmp_path / "loop.npz", geo, depth_mm=geo.depth_mm, ed_frame=12)


def test_otsu_splits_two_levels():
    v = np.concatenate([np.full(100, 0.1), np.full(300, 0.7)]) + np.random.default_rng(0).normal(0, 0.02, 400)
    assert 0.2 < otsu_threshold(v) < 0.6


def test_colour_doppler_warns_and_uses_grey(tmp_path):
    import imageio.v3 as iio

    rgb, _ = fake_screen(rng=np.random.default_rng(4))
    doppler = rgb[0].copy()
    doppler[150:190, 170:230] = (220, 30, 30)  # a colour-flow patch inside the fan
    iio.imwrite(tmp_path / "plain.png", rgb[0])
    iio.imwrite(tmp_path / "doppler.png", doppler)
    geo = ViewGeometry(64, 200.0, 175.0, 77.0)
    plain = intake_echo(tmp_path / "plain.png", geo)
    it = intake_echo(tmp_path / "doppler.png", geo)
    assert not plain.colour_doppler and not any("Doppler" in w for w in plain.warnings)
    assert it.colour_doppler and any("colour Doppler" in w for w in it.warnings)
    # the patch (27 x 40 mm at the default depth: ~110 view pixels) became black (blood), not its luma
    hole = (plain.views[0] - it.views[0]) > 0.1
    assert 60 < hole.sum() < 200 and np.count_nonzero(it.views[0][hole] == 0) > 40


class _Boom:
    """Unpickling this would create a file: the test checks that it never happens."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_npz_is_refused_unloaded(tmp_path):
    marker = tmp_path / "unpickled"
    np.savez(tmp_path / "evil.npz", frames=np.array([_Boom(marker)], dtype=object))
    with pytest.raises(FileFormatError, match="pickled Python objects"):
        read_npz(tmp_path / "evil.npz", "frames [N, H, W]")
    with open(tmp_path / "evil.npy", "wb") as fh:
        pickle.dump(_Boom(marker), fh)
    with pytest.raises(FileFormatError, match="expected"):
        read_echo(tmp_path / "evil.npy")
    assert not marker.exists()


def test_unreadable_sources(tmp_path):
    with pytest.raises(FileFormatError, match="no such file"):
        read_echo(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(FileFormatError, match="not an echo image, DICOM or video"):
        read_echo(tmp_path / "notes.txt")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(FileFormatError, match="cannot read image"):
        read_echo(tmp_path / "broken.png")


def test_ybr_dicom_example_has_its_fan():
    """pydicom's 30-frame parasternal echo (YBR): fan found, its wrong-sized region ignored."""
    from pydicom import examples

    e = read_echo(examples.get_path("ybr_color"))
    assert e.n_frames == 30 and e.spacing_mm is None and e.region is None
    assert any("outside the 320x240 image" in n for n in e.notes)
    fit = find_sector(e.grey, e.region)
    assert abs(fit.apex_px[0] - 169) < 5 and abs(fit.apex_px[1] - 7) < 6
    assert 75 < fit.angle_deg < 95 and abs(fit.tilt_deg) < 5


# --- the real recordings in ../shared --------------------------------------------------------

TTE47 = ["a4c", "a2c", "a3c", "sax_basal", "sax_mid", "sax_apical"]


@pytest.mark.shared
@pytest.mark.parametrize("name", TTE47)
def test_real_tte47_sector(name):
    e = read_echo(shared_file(f"echo/tte47/{name}.png"))
    fit = find_sector(e.grey)
    # every TTE47 capture is 800x600 with the apex near the top middle and a 68-88 degree fan
    # about 460-505 px deep (read off the figures; a3c's layout puts its apex lower)
    assert 390 < fit.apex_px[0] < 435 and 50 < fit.apex_px[1] < 105
    assert 65 < fit.angle_deg < 90 and abs(fit.tilt_deg) < 7
    assert 455 < fit.radius_px[1] < 510 and fit.radius_px[0] == 0.0


@pytest.mark.shared
def test_real_obstetric_dicom_uses_region():
    e = read_echo(shared_file("dicom/OBXXXX1A.dcm"))
    assert e.region == (120, 60, 799, 518) and e.spacing_mm is not None
    fit = find_sector(e.grey, e.region)
    # the region's reference pixel (the probe face's centre, physical 0) is (460, 96)
    assert abs(fit.apex_px[0] - 460) < 3
    assert abs(fit.apex_px[1] + fit.radius_px[0] - 96) < 3
    depth_mm = (fit.radius_px[1] - fit.radius_px[0]) * e.spacing_mm[0]
    assert abs(depth_mm - 110) < 5  # "11cm" on the screen


@pytest.mark.shared
def test_real_linear_array_dicom_is_not_a_sector():
    e = read_echo(shared_file("dicom/US1_UNCR.dcm"))
    with pytest.raises(InputError, match="no imaging sector found"):
        find_sector(e.grey, e.region)
