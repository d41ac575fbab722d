"""Metrics against known values, scikit-image and SciPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from sono3d.errors import InputError
from sono3d.metrics import (
    assd,
    bland_altman,
    chamfer,
    dice,
    hausdorff,
    iou,
    l1,
    mae,
    mse,
    ncc,
    pearson,
    psnr,
    spearman,
    ssim,
    ssim_torch,
    surface_distances,
)

skm = pytest.importorskip("skimage.metrics")


def _sk_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    return float(
        skm.structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range
        )
    )


def _smooth(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = ndimage.gaussian_filter(rng.random(shape), 3.0)
    return (x - x.min()) / np.ptp(x)


# ------------------------------------------------------------------ known values


def test_identical_images(rng: np.random.Generator) -> None:
    a = rng.random((32, 40))
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert psnr(a, a) == math.inf
    assert ncc(a, a) == pytest.approx(1.0)
    assert l1(a, a) == 0.0 and mse(a, a) == 0.0


def test_l1_mse_known() -> None:
    a = np.zeros((4, 4))
    b = np.full((4, 4), 0.5)
    b[0, 0] = 1.5
    assert l1(a, b) == pytest.approx((15 * 0.5 + 1.5) / 16)
    assert mse(a, b) == pytest.approx((15 * 0.25 + 2.25) / 16)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    assert l1(a, b, mask) == pytest.approx(1.5)


def test_ncc_affine_invariance_and_sign(rng: np.random.Generator) -> None:
    a = rng.random((20, 20, 8))
    assert ncc(a, 3.0 * a + 7.0) == pytest.approx(1.0, abs=1e-12)
    assert ncc(a, -2.0 * a + 1.0) == pytest.approx(-1.0, abs=1e-12)
    # Masked: only the masked region needs to be an affine copy.
    b = 0.5 * a - 1.0
    mask = np.zeros(a.shape, bool)
    mask[5:15, 5:15] = True
    b[~mask] = rng.random(int((~mask).sum()))
    assert ncc(a, b, mask) == pytest.approx(1.0, abs=1e-12)
    assert ncc(a, b) < 0.99
    assert math.isnan(ncc(a, np.ones_like(a)))


def test_psnr_known_noise() -> None:
    a = np.zeros((64, 64))
    b = a.copy()
    b[::2] = 0.1  # half the pixels off by 0.1: MSE = 0.005
    assert psnr(a, b) == pytest.approx(10 * math.log10(1 / 0.005))
    assert psnr(a, b, data_range=255.0) == pytest.approx(10 * math.log10(255.0**2 / 0.005))


def test_shape_mismatch_and_small_images() -> None:
    with pytest.raises(InputError, match="differ in shape"):
        mse(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(InputError, match="at least 11|>= 11"):
        ssim(np.zeros((10, 30)), np.zeros((10, 30)))
    with pytest.raises(InputError, match="no pixels"):
        l1(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3), bool))


# ------------------------------------------------------------------ SSIM vs scikit-image


@pytest.mark.parametrize("kind", ["random", "smooth"])
@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_ssim_matches_skimage_2d(rng: np.random.Generator, kind: str, data_range: float) -> None:
    a = rng.random((37, 45)) if kind == "random" else _smooth(rng, (37, 45))
    b = np.clip(a + 0.15 * rng.standard_normal(a.shape), 0, 1)
    ours = ssim(a, b, data_range=data_range)
    assert ours == pytest.approx(_sk_ssim(a, b, data_range), abs=1e-4)
    assert ours < 0.999


def test_ssim_matches_skimage_3d(rng: np.random.Generator) -> None:
    a = _smooth(rng, (16, 18, 20))
    b = a + 0.05 * rng.standard_normal(a.shape)
    assert ssim(a, b) == pytest.approx(_sk_ssim(a, b, 1.0), abs=1e-4)


def test_ssim_mask_restricts_average(rng: np.random.Generator) -> None:
    a = _smooth(rng, (40, 40))
    b = a.copy()
    b[:, 20:] = rng.random((40, 20))  # right half corrupted
    left = np.zeros(a.shape, bool)
    left[:, :14] = True  # window centres whose windows stay in the clean half
    assert ssim(a, b, mask=left) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, b) < 0.9


# ------------------------------------------------------------------ torch SSIM


@pytest.fixture(autouse=False)
def one_thread():
    """Tiny convolutions: one thread, because OpenMP barriers stall badly on a loaded 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_ssim_torch_equals_numpy(rng: np.random.Generator, one_thread: None) -> None:
    a = rng.random((3, 24, 30))
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
    per = ssim_torch(torch.from_numpy(a), torch.from_numpy(b), reduction="none")
    ref = [ssim(a[i], b[i]) for i in range(3)]
    np.testing.assert_allclose(per.numpy(), ref, atol=1e-10)
    # [B, 1, H, W] and float32 give the same, within float32 precision.
    s32 = ssim_torch(torch.from_numpy(a[:, None]).float(), torch.from_numpy(b[:, None]).float())
    assert s32.dtype == torch.float32
    assert float(s32) == pytest.approx(np.mean(ref), abs=1e-5)
    # A 2D frame alone.
    assert float(ssim_torch(torch.from_numpy(a[0]), torch.from_numpy(b[0]))) == pytest.approx(ref[0], abs=1e-10)


def test_ssim_torch_mask_equals_numpy(rng: np.random.Generator, one_thread: None) -> None:
    a = rng.random((2, 30, 30))
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
    yy, xx = np.mgrid[:30, :30]
    mask = (yy - 15) ** 2 + (xx - 15) ** 2 < 81
    per = ssim_torch(torch.from_numpy(a), torch.from_numpy(b), mask=torch.from_numpy(mask), reduction="none")
    ref = [ssim(a[i], b[i], mask=mask) for i in range(2)]
    np.testing.assert_allclose(per.numpy(), ref, atol=1e-10)
    with pytest.raises(InputError, match="broadcast"):
        ssim_torch(torch.from_numpy(a), torch.from_numpy(b), mask=torch.ones(5, 5))


def test_ssim_torch_gradcheck(one_thread: None) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 11, 12, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.rand(1, 1, 11, 12, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ssim_torch(a, b), (x, y), eps=1e-6, atol=1e-5)


def test_ssim_torch_loss_descends(one_thread: None) -> None:
    # Plain gradient descent (torch.optim's first step imports the compiler stack: seconds).
    g = torch.Generator().manual_seed(1)
    target = torch.rand(1, 16, 16, dtype=torch.float64, generator=g)
    x = torch.rand(1, 16, 16, dtype=torch.float64, generator=g, requires_grad=True)
    losses = []
    for _ in range(20):
        loss = 1 - ssim_torch(x, target)
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x -= 5.0 * grad
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]


# ------------------------------------------------------------------ overlap and surfaces


def test_dice_iou_analytic() -> None:
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :6] = True  # 60 pixels
    b[:, 4:] = True  # 60 pixels, 20 shared
    assert dice(a, b) == pytest.approx(2 * 20 / 120)
    assert iou(a, b) == pytest.approx(20 / 100)
    assert dice(a, a) == 1.0 and iou(a, ~a) == 0.0
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def _fibonacci_sphere(n: int, radius: float) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return radius * np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def test_hausdorff_concentric_spheres() -> None:
    inner = _fibonacci_sphere(2000, 10.0)
    outer = _fibonacci_sphere(2000, 13.0)  # same directions: every nearest point is radial
    d = surface_distances(inner, outer)
    assert d.hausdorff == pytest.approx(3.0, abs=1e-9)
    assert d.assd == pytest.approx(3.0, abs=1e-9)
    assert d.chamfer == pytest.approx(3.0, abs=1e-9)
    # Different samplings of the outer sphere: still the radius difference, up to the sampling gap.
    outer2 = _fibonacci_sphere(5000, 13.0) @ np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    assert hausdorff(inner, outer2) == pytest.approx(3.0, abs=0.3)
    assert hausdorff(outer2, inner) == hausdorff(inner, outer2)


def test_chamfer_and_assd_definitions() -> None:
    a = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    b = np.array([[0.0, 0, 2.0]])
    # a->b: 2, sqrt(5); b->a: 2
    assert chamfer(a, b) == pytest.approx(0.5 * ((2 + 5**0.5) / 2 + 2))
    assert assd(a, b) == pytest.approx((2 + 5**0.5 + 2) / 3)
    assert hausdorff(a, b) == pytest.approx(5**0.5)


def test_surface_distances_on_meshes() -> None:
    pv = pytest.importorskip("pyvista")
    s = pv.Sphere(radius=5.0)
    assert hausdorff(s, s.translate((0.5, 0, 0))) == pytest.approx(0.5, abs=1e-5)  # float32 points
    with pytest.raises(InputError, match="points"):
        hausdorff(np.zeros((0, 3)), s)


# ------------------------------------------------------------------ statistics vs SciPy


def test_pearson_spearman_match_scipy(rng: np.random.Generator) -> None:
    x = rng.normal(size=25)
    y = 0.6 * x + rng.normal(scale=0.7, size=25)
    p = pearson(x, y)
    ref = stats.pearsonr(x, y)
    assert p.r == pytest.approx(ref.statistic) and p.p == pytest.approx(ref.pvalue) and p.n == 25
    ci = ref.confidence_interval(0.95)  # SciPy's interval is the same Fisher-z one
    assert p.ci == pytest.approx((ci.low, ci.high), abs=1e-10)
    assert p.ci[0] < p.r < p.ci[1]
    s = spearman(x, y)
    sref = stats.spearmanr(x, y)
    assert s.rho == pytest.approx(sref.statistic) and s.p == pytest.approx(sref.pvalue)


def test_pearson_edge_cases() -> None:
    assert pearson([1, 2, 3], [2, 4, 7]).ci == (-1.0, 1.0)
    perfect = pearson([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert perfect.r == pytest.approx(1.0) and perfect.ci[1] == pytest.approx(1.0)
    with pytest.raises(InputError, match="constant"):
        pearson([1, 1, 1, 1], [1, 2, 3, 4])
    with pytest.raises(InputError, match="at least 3"):
        spearman([1, 2], [1, 2])
    with pytest.raises(InputError, match="NaN"):
        pearson([1, 2, np.nan, 4], [1, 2, 3, 4])


def test_mae_and_bland_altman() -> None:
    a = np.array([50.0, 60.0, 55.0, 40.0])
    b = np.array([52.0, 57.0, 55.0, 44.0])
    assert mae(a, b) == pytest.approx((2 + 3 + 0 + 4) / 4)
    ba = bland_altman(a, b)
    d = a - b
    assert ba.bias == pytest.approx(d.mean())
    assert ba.sd == pytest.approx(d.std(ddof=1))
    assert ba.loa == pytest.approx((d.mean() - 1.96 * d.std(ddof=1), d.mean() + 1.96 * d.std(ddof=1)))
    np.testing.assert_allclose(ba.mean, (a + b) / 2)
    assert ba.n == 4
