"""Slice rasterizers: every fast backend against the dense reference, forward and all gradients.

The cutoff makes each contribution discontinuous where a pixel's Mahalanobis distance equals the
cutoff; there two correct implementations may round to opposite sides. Comparisons therefore
ignore "ambiguous" pixels (some Gaussian within a hair of the cutoff there): the forward is
compared elsewhere and the upstream gradient is zero there, so gradients compare exactly too.

The triton backend's tests run with CUDA, or on the CPU under Triton's interpreter
(``TRITON_INTERPRET=1`` with triton installed); otherwise they skip.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from sono3d.errors import InputError
from sono3d.sweep.gaussians import covariance, quat_to_rotmat
from sono3d.sweep.raster import available_backends, pixel_positions, render_slices
from sono3d.sweep.raster._conic import slice_pairs

FAST = ["culled", "numba", "triton"]
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
NAMES = ["means", "log_scales", "quats", "opacity_logits", "intensities", "image_to_world"]


def _backend_or_skip(name: str) -> str:
    if name not in available_backends():
        pytest.skip(f"backend {name} does not import here")
    if name == "triton" and not (torch.cuda.is_available() or _INTERPRET):
        pytest.skip("triton needs a CUDA device (or TRITON_INTERPRET=1)")
    return name


def _device(name: str) -> str:
    return "cuda" if name == "triton" and torch.cuda.is_available() else "cpu"


def _poses(g: torch.Generator, B: int, spacing: float, dtype) -> torch.Tensor:
    R = quat_to_rotmat(torch.randn(B, 4, generator=g, dtype=dtype))
    M = torch.zeros(B, 4, 4, dtype=dtype)
    M[:, :3, 0] = R[:, :, 0] * spacing
    M[:, :3, 1] = R[:, :, 1] * spacing * 1.2  # unequal row and column spacing
    M[:, :3, 2] = R[:, :, 2]
    M[:, :3, 3] = torch.randn(B, 3, generator=g, dtype=dtype)
    M[:, 3, 3] = 1
    return M


def random_scene(seed: int, G: int = 40, B: int = 2, H: int = 40, W: int = 70, spacing: float = 0.5,
                 dtype=torch.float64) -> tuple[list[torch.Tensor], tuple[int, int]]:
    """Anisotropic, rotated Gaussians: half near slice 0's plane (footprints crossing tile and image
    borders), a quarter near slice 1's, the rest far from both."""
    g = torch.Generator().manual_seed(seed)
    M = _poses(g, B, spacing, dtype)
    log_scales = torch.log(0.3 + 2.7 * torch.rand(G, 3, generator=g, dtype=dtype))
    quats = torch.randn(G, 4, generator=g, dtype=dtype)
    which = torch.arange(G) % 4
    b = torch.where(which < 2, 0, 1).clamp_max(B - 1)
    col = -8 + (W + 16) * torch.rand(G, generator=g, dtype=dtype)
    row = -8 + (H + 16) * torch.rand(G, generator=g, dtype=dtype)
    off = (torch.rand(G, generator=g, dtype=dtype) * 2 - 1) * 3.0
    off = torch.where(which == 3, 30.0 + off, off)  # far from the plane
    Mb = M[b]
    means = Mb[:, :3, 3] + col[:, None] * Mb[:, :3, 0] + row[:, None] * Mb[:, :3, 1] + off[:, None] * Mb[:, :3, 2]
    opacity_logits = torch.randn(G, generator=g, dtype=dtype)
    intensities = torch.randn(G, generator=g, dtype=dtype)
    return [means, log_scales, quats, opacity_logits, intensities, M], (H, W)


def ambiguous(tensors, shape, cutoff, tol=1e-3, elevation_sigma=0.0) -> torch.Tensor:
    """(B, H, W) True where some Gaussian's m^2 is within ``tol * cutoff^2`` of ``cutoff^2``
    (with a slice thickness, m^2 of the covariance widened along each slice's normal)."""
    t = [x.detach().double().cpu() for x in tensors]
    x = pixel_positions(t[5], shape)  # (B, H, W, 3)
    M = t[5]
    n = torch.linalg.cross(M[:, :3, 0], M[:, :3, 1])
    n = n / n.norm(dim=-1, keepdim=True)
    cov = covariance(t[1], t[2])[None] + elevation_sigma**2 * (n[:, None, :, None] * n[:, None, None, :])
    A = torch.linalg.inv(cov)  # (B, G, 3, 3)
    d = x[..., None, :] - t[0]  # (B, H, W, G, 3)
    m2 = torch.einsum("bhwgi,bgij,bhwgj->bhwg", d, A, d)
    return ((m2 - cutoff**2).abs() < tol * cutoff**2).any(-1)


def fwd_grads(backend, tensors, shape, cutoff, upstream, device="cpu", dtype=None, elevation_sigma=0.0):
    leaves = [x.detach().to(device=device, dtype=dtype or x.dtype).requires_grad_() for x in tensors]
    img = render_slices(*leaves, shape, backend=backend, cutoff=cutoff, elevation_sigma=elevation_sigma)
    grads = torch.autograd.grad((img * upstream.to(img)).sum(), leaves)
    return img.detach().double().cpu(), [g.double().cpu() for g in grads]


def assert_match(backend, tensors, shape, cutoff, dtype, rtol, elevation_sigma=0.0):
    upstream = torch.randn((tensors[5].shape[0],) + shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    if cutoff is not None:
        upstream[ambiguous(tensors, shape, cutoff, elevation_sigma=elevation_sigma)] = 0.0
    keep = upstream != 0
    ref, ref_g = fwd_grads("reference", tensors, shape, cutoff, upstream, elevation_sigma=elevation_sigma)
    img, grads = fwd_grads(backend, tensors, shape, cutoff, upstream, _device(backend), dtype,
                           elevation_sigma=elevation_sigma)
    scale = ref.abs().max().clamp_min(1e-12)
    assert ref.abs().max() > 0.1, "scene renders nothing: the test would prove nothing"
    err = ((img - ref).abs() * keep).max() / scale
    assert err <= rtol, f"forward relative error {err:.2e}"
    for name, a, b in zip(NAMES, grads, ref_g):
        assert a.shape == b.shape, name
        gerr = (a - b).abs().max() / b.abs().max().clamp_min(1e-12)
        assert gerr <= 10 * rtol, f"d/d{name}: relative error {gerr:.2e}"


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("seed", [0, 1])
def test_backend_matches_reference_with_cutoff(backend, seed):
    _backend_or_skip(backend)
    tensors, shape = random_scene(seed)
    # float64 for culled (exact up to rounding); numba and triton compute in float32
    exact = backend == "culled"
    assert_match(backend, tensors, shape, 3.0, torch.float64 if exact else torch.float32, 1e-9 if exact else 2e-5)


@pytest.mark.parametrize("backend", FAST)
def test_needles_and_specks_match_reference(backend):
    """Thin tilted needles (footprint corners far outside the ellipse) and sub-pixel specks: the
    numba kernels' fallbacks from the 2D exp recurrence."""
    _backend_or_skip(backend)
    tensors, shape = random_scene(8, G=24)
    g = torch.Generator().manual_seed(9)
    long_axis = torch.log(torch.tensor([0.04, 4.0, 0.4], dtype=torch.float64))
    speck = torch.log(torch.tensor([0.03, 0.03, 0.03], dtype=torch.float64))
    tensors[1] = torch.where((torch.arange(24) % 2 == 0)[:, None], long_axis, speck)
    tensors[1] = tensors[1] + 0.1 * torch.randn(24, 3, generator=g, dtype=torch.float64)
    exact = backend == "culled"
    # A speck a sixteenth of a pixel wide turns the ~1e-5 px float32 error of its centre into
    # ~1e-3 of its value, hence the looser float32 tolerance (real bugs give errors of order 1).
    assert_match(backend, tensors, shape, 3.0, torch.float64 if exact else torch.float32, 1e-9 if exact else 2e-3)


@pytest.mark.parametrize("backend", FAST)
def test_backend_matches_reference_without_cutoff(backend):
    _backend_or_skip(backend)
    tensors, shape = random_scene(3, G=12, H=20, W=36)
    exact = backend == "culled"
    assert_match(backend, tensors, shape, None, torch.float64 if exact else torch.float32, 1e-9 if exact else 2e-5)


@pytest.mark.parametrize("esig", [0.0, 0.9])
def test_numba_chain_equals_torch_chain_float64(esig):
    """The compiled per-pair preprocessing (thin planes, and the thickness projection) and its
    hand-derived backward against autograd through :func:`slice_pairs` (same pairs, same conics, same
    gradients for all six inputs, including the slice normal's dependence on the pose)."""
    _backend_or_skip("numba")
    from sono3d.sweep.raster.numba_cpu import numba_pairs, numba_pairs_backward

    tensors, shape = random_scene(6 if esig == 0 else 12, G=30)
    leaves = [x.detach().clone().requires_grad_() for x in tensors]
    ref = slice_pairs(*leaves, shape, 3.0, elevation_sigma=esig)
    got = numba_pairs(*tensors, shape, 3.0, elevation_sigma=esig)
    assert len(ref) > 10
    assert torch.equal(ref.slice_index, torch.from_numpy(got["slice"]).long())
    assert torch.equal(ref.gauss_index, torch.from_numpy(got["gauss"]).long())
    assert torch.equal(ref.bbox, torch.from_numpy(got["bbox"]).long())
    torch.testing.assert_close(torch.from_numpy(got["params"]), ref.params.detach(), rtol=1e-9, atol=1e-12)
    gparams = torch.randn(ref.params.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = torch.autograd.grad(ref.params, leaves, gparams)
    for name, a, b in zip(NAMES, numba_pairs_backward(got, gparams.numpy()), expected):
        torch.testing.assert_close(torch.from_numpy(a), b, rtol=1e-8, atol=1e-10, msg=name)


def test_culled_gradcheck_float64():
    """Finite differences through the culled backend's hand-written backward, all six inputs."""
    for seed in range(50):  # first tiny visible scene with no pixel within 1e-3 of the cutoff
        tensors, shape = random_scene(100 + seed, G=6, B=2, H=8, W=10, spacing=0.8)
        visible = render_slices(*tensors, shape, backend="reference", cutoff=2.5)
        if (visible[0].abs().max() > 0.05 and visible[1].abs().max() > 0.05
                and not ambiguous(tensors, shape, 2.5, tol=1e-3).any()):
            break
    else:
        pytest.fail("no suitable tiny scene")
    leaves = [x.detach().clone().requires_grad_() for x in tensors]

    def f(*xs):
        return render_slices(*xs, shape, backend="culled", cutoff=2.5)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("backend", FAST)
def test_empty_scene_and_no_gaussian_near_plane(backend):
    _backend_or_skip(backend)
    dev = _device(backend)
    tensors, shape = random_scene(4, G=8)
    far = [x.clone() for x in tensors]
    far[0] = far[0] + 100.0 * far[5][0, :3, 2]  # 100 mm along slice 0's normal
    far[5] = far[5][:1]
    empty = [x[:0] for x in tensors[:5]] + [tensors[5]]
    for scene in (far, empty):
        leaves = [x.to(dev).requires_grad_() for x in scene]
        img = render_slices(*leaves, shape, backend=backend, cutoff=3.0)
        assert img.shape == (scene[5].shape[0],) + shape and not img.any()
        grads = torch.autograd.grad(img.sum(), leaves, allow_unused=True)
        for name, g, x in zip(NAMES, grads, leaves):
            assert g is not None and g.shape == x.shape and not g.any(), name


def _single(dtype=torch.float64, H=33, W=41):
    """One Gaussian at the origin (sigmas 2, 1, 0.5 mm along x, y, z), opacity 1/2, intensity 2;
    the slice is the z = 0 plane, 0.25 mm pixels, centred on the origin."""
    M = torch.eye(4, dtype=dtype)[None].clone()
    M[0, 0, 0] = M[0, 1, 1] = 0.25
    M[0, 0, 3], M[0, 1, 3] = -0.25 * (W - 1) / 2, -0.25 * (H - 1) / 2
    g = [torch.zeros(1, 3, dtype=dtype), torch.log(torch.tensor([[2.0, 1.0, 0.5]], dtype=dtype)),
         torch.tensor([[1.0, 0, 0, 0]], dtype=dtype), torch.zeros(1, dtype=dtype), torch.tensor([2.0], dtype=dtype)]
    return g, M, (H, W)


@pytest.mark.parametrize("backend", ["reference"] + FAST)
def test_single_gaussian_renders_analytic_profile(backend):
    if backend != "reference":
        _backend_or_skip(backend)
    g, M, (H, W) = _single()
    dev = _device(backend)
    img = render_slices(*[x.to(dev) for x in g], M.to(dev), (H, W), backend=backend, cutoff=None)[0].double().cpu()
    x = (torch.arange(W, dtype=torch.float64) - (W - 1) / 2) * 0.25
    y = (torch.arange(H, dtype=torch.float64) - (H - 1) / 2) * 0.25
    expected = 0.5 * 2.0 * torch.exp(-0.5 * (x[None, :] ** 2 / 4.0 + y[:, None] ** 2 / 1.0))
    torch.testing.assert_close(img, expected, rtol=1e-5, atol=1e-6)
    # the plane 0.5 mm off the centre (one sigma along z) scales the profile by exp(-1/2)
    M2 = M.clone()
    M2[0, 2, 3] = 0.5
    img2 = render_slices(*[x.to(dev) for x in g], M2.to(dev), (H, W), backend=backend, cutoff=None)[0].double().cpu()
    torch.testing.assert_close(img2, expected * math.exp(-0.5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference"] + FAST)
def test_rotation_convention_elongation_follows_axis(backend):
    """Long along x stays along the image columns on an x-y plane; a 90 degree turn about z puts it
    along the rows."""
    if backend != "reference":
        _backend_or_skip(backend)
    g, M, shape = _single(H=41, W=41)
    g[1] = torch.log(torch.tensor([[2.0, 0.5, 0.5]], dtype=torch.float64))
    dev = _device(backend)

    def spread(quat):
        g[2] = torch.tensor([quat], dtype=torch.float64)
        img = render_slices(*[x.to(dev) for x in g], M.to(dev), shape, backend=backend, cutoff=3.0)[0].double().cpu()
        return (img.sum(0) > 1e-3).sum().item(), (img.sum(1) > 1e-3).sum().item()  # columns, rows lit

    cols, rows = spread([1.0, 0, 0, 0])
    assert cols > 2 * rows
    c = math.sqrt(0.5)
    cols, rows = spread([c, 0, 0, c])
    assert rows > 2 * cols


def test_bad_input_is_a_clear_error():
    tensors, shape = random_scene(5, G=3)
    with pytest.raises(InputError, match="unknown rasterizer backend"):
        render_slices(*tensors, shape, backend="nope")
    with pytest.raises(InputError, match="cutoff"):
        render_slices(*tensors, shape, backend="culled", cutoff=-1.0)
    with pytest.raises(InputError, match="image_to_world"):
        render_slices(*tensors[:5], tensors[5][:, :3], shape, backend="culled")


# --------------------------------------------------------------------------------------------
# slice thickness: each slice integrates the volume over a Gaussian elevation profile


@pytest.mark.parametrize("backend", FAST)
def test_thick_slices_match_reference(backend):
    _backend_or_skip(backend)
    tensors, shape = random_scene(11)
    exact = backend == "culled"
    for cutoff in (3.0, None):
        assert_match(backend, tensors, shape, cutoff, torch.float64 if exact else torch.float32,
                     1e-9 if exact else 2e-5, elevation_sigma=0.7)


@pytest.mark.parametrize("backend", ["reference"] + FAST)
def test_thickness_to_zero_is_the_thin_plane(backend):
    if backend != "reference":
        _backend_or_skip(backend)
    tensors, shape = random_scene(13, G=16, H=20, W=30)
    dev = _device(backend)
    t = [x.to(dev) for x in tensors]
    thin = render_slices(*t, shape, backend=backend, cutoff=None).double().cpu()
    thick = render_slices(*t, shape, backend=backend, cutoff=None, elevation_sigma=1e-4).double().cpu()
    assert thin.abs().max() > 0.1
    torch.testing.assert_close(thick, thin, rtol=0, atol=1e-5 * float(thin.abs().max()))
    wide = render_slices(*t, shape, backend=backend, cutoff=None, elevation_sigma=2.0).double().cpu()
    assert (wide - thin).abs().max() > 1e-2 * thin.abs().max()  # and a real thickness changes the image


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_thick_slice_is_the_elevation_integral_of_thin_ones(backend):
    """Gauss-Hermite quadrature of thin planes shifted along the normal reproduces the closed form."""
    if backend != "reference":
        _backend_or_skip(backend)
    import numpy as np

    tensors, shape = random_scene(14, G=16, H=20, W=30)
    sigma = 0.8
    thick = render_slices(*tensors, shape, backend=backend, cutoff=None, elevation_sigma=sigma).double()
    x, w = np.polynomial.hermite_e.hermegauss(40)  # nodes and weights for exp(-t^2 / 2)
    M = tensors[5]
    n = torch.linalg.cross(M[:, :3, 0], M[:, :3, 1])
    n = n / n.norm(dim=-1, keepdim=True)
    integral = torch.zeros_like(thick)
    for xi, wi in zip(x, w / math.sqrt(2 * math.pi)):
        shifted = M.clone()
        shifted[:, :3, 3] = M[:, :3, 3] + float(xi) * sigma * n
        integral += float(wi) * render_slices(*tensors[:5], shifted, shape, backend=backend, cutoff=None).double()
    assert integral.abs().max() > 0.1
    tol = 1e-7 if backend == "reference" else 2e-5  # 40 quadrature nodes: ~5e-9
    torch.testing.assert_close(thick, integral, rtol=0, atol=tol * float(integral.abs().max()))
