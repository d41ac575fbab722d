"""The fused training loss equals the autograd reference, value and gradient."""

from __future__ import annotations

import pytest
import torch

from sono3d.errors import InputError
from sono3d.sweep.loss import fused_available, hybrid_loss, hybrid_loss_reference

pytestmark = pytest.mark.skipif(not fused_available(), reason="numba does not import here")


def _frames(b, h, w, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, h, w, generator=g, dtype=dtype)
    # a target correlated with x, so the SSIM is neither ~0 nor ~1
    y = (0.7 * x + 0.3 * torch.rand(b, h, w, generator=g, dtype=dtype)).clamp(0, 1)
    mask = (torch.rand(h, w, generator=g) > 0.25).to(dtype)
    mask[h // 2, w // 2] = 1  # at least one SSIM window centre counts
    return x, y, mask


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("shape", [(3, 11, 11), (2, 23, 17), (1, 40, 64)])
@pytest.mark.parametrize("l1_weight", [0.0, 0.8, 1.0])
def test_fused_equals_reference(dtype, tol, use_mask, shape, l1_weight):
    x, y, mask = _frames(*shape, dtype)
    m = mask if use_mask else None
    xf = x.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    fused = hybrid_loss(xf, y, m, l1_weight, fused=True)
    ref = hybrid_loss_reference(xr, y, m, l1_weight)
    for a, b in zip(fused, ref):
        assert abs(a.item() - b.item()) < tol * 10
    (gf,) = torch.autograd.grad(fused[0], xf)
    (gr,) = torch.autograd.grad(ref[0], xr)
    scale = float(gr.abs().max())
    assert scale > 0
    assert float((gf - gr).abs().max()) <= tol * max(scale, 1e-3) * 10


def test_fused_gradcheck_float64():
    x, y, mask = _frames(2, 13, 12, torch.float64, seed=3)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: hybrid_loss(t, y, mask, 0.8, fused=True)[0], (x,))


def test_identical_frames_give_zero_loss():
    x, _, mask = _frames(2, 20, 20, torch.float32)
    loss, l1, s = hybrid_loss(x.clone().requires_grad_(True), x, mask)
    assert abs(loss.item()) < 1e-6 and l1.item() == 0.0 and abs(s.item() - 1.0) < 1e-6


def test_default_picks_fused_on_cpu_and_reference_when_target_needs_grad():
    x, y, _ = _frames(2, 16, 16, torch.float32)
    loss, l1, s = hybrid_loss(x.requires_grad_(True), y)
    assert not l1.requires_grad and not s.requires_grad  # the fused kernel's logging outputs
    loss2, l1b, s2 = hybrid_loss(x, y.clone().requires_grad_(True))
    assert s2.requires_grad  # the autograd reference
    assert abs(loss.item() - loss2.item()) < 1e-6


@pytest.mark.parametrize(
    "args,words",
    [
        ((torch.zeros(2, 16, 16), torch.zeros(2, 16, 15), None), "same shape"),
        ((torch.zeros(16, 16), torch.zeros(16, 16), None), "same shape"),
        ((torch.zeros(2, 16, 16), torch.zeros(2, 16, 16), torch.ones(15, 16)), "mask"),
        ((torch.zeros(2, 10, 16), torch.zeros(2, 10, 16), None), "at least 11x11"),
    ],
)
def test_bad_input_is_one_line_error(args, words):
    with pytest.raises(InputError, match=words):
        hybrid_loss(*args)


def test_mask_without_valid_pixels_is_an_error():
    mask = torch.zeros(16, 16)
    mask[0, 0] = 1.0  # only a border pixel: no SSIM window centre inside
    with pytest.raises(InputError, match="no pixel"):
        hybrid_loss(torch.rand(1, 16, 16, requires_grad=True), torch.rand(1, 16, 16), mask, fused=True)


def test_bad_weight():
    with pytest.raises(InputError, match="l1_weight"):
        hybrid_loss(torch.rand(1, 16, 16), torch.rand(1, 16, 16), None, 1.5)


def test_mask_bounding_box_crop_is_exact():
    """A mask covering a corner: the kernel works on its bounding box; values and gradient still equal."""
    x, y, _ = _frames(2, 48, 40, torch.float64, seed=5)
    mask = torch.zeros(48, 40, dtype=torch.float64)
    mask[3:20, 22:39] = 1.0
    xf = x.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    fused = hybrid_loss(xf, y, mask, 0.8, fused=True)
    ref = hybrid_loss_reference(xr, y, mask, 0.8)
    for a, b in zip(fused, ref):
        assert abs(a.item() - b.item()) < 1e-12
    (gf,) = torch.autograd.grad(fused[0], xf)
    (gr,) = torch.autograd.grad(ref[0], xr)
    assert float((gf - gr).abs().max()) < 1e-15
    assert float(gr[:, 30:].abs().max()) == 0.0  # rows beyond the box get no gradient in either
