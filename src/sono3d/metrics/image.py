"""Image and volume similarity: L1, L2 (MSE), SSIM, PSNR and NCC.

NumPy functions work on 2D images ``[H, W]`` and 3D volumes ``[I, J, K]`` alike (any matching
shape). :func:`ssim_torch` is the differentiable SSIM used as a training / fitting loss on batches
of 2D frames.

SSIM follows Wang et al. (2004) as the papers use it: a Gaussian window of 11 taps per axis with
sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, population (not sample) covariances, and the mean taken
over the positions where the whole window lies inside the image (a 5-pixel border is dropped).
This equals ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=L)``.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from sono3d.errors import InputError

if TYPE_CHECKING:  # torch is imported lazily so that the CLI starts fast
    import torch

__all__ = [
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WIN",
    "gaussian_window_1d",
    "l1",
    "mse",
    "ncc",
    "psnr",
    "ssim",
    "ssim_map",
    "ssim_torch",
]

SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# --------------------------------------------------------------------------------------------
# helpers


def gaussian_window_1d(size: int = SSIM_WIN, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1D Gaussian taps, shape ``(size,)``, float64, centred on the middle tap."""
    if size < 1 or size % 2 == 0:
        raise InputError(f"SSIM window size must be a positive odd number, got {size}")
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise InputError("images are empty")
    return a, b


def _weights(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """A mask as float64 weights of ``shape`` (boolean or non-negative), or None for no mask."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != shape:
        raise InputError(f"mask shape {m.shape} does not match image shape {shape}")
    m = m.astype(np.float64)
    if not np.isfinite(m).all() or (m < 0).any():
        raise InputError("mask weights must be finite and non-negative")
    if m.sum() <= 0:
        raise InputError("mask selects no pixels")
    return m


def _mean(x: np.ndarray, w: np.ndarray | None) -> float:
    if w is None:
        return float(x.mean())
    return float((x * w).sum() / w.sum())


# --------------------------------------------------------------------------------------------
# pixel-wise errors


def l1(a: Any, b: Any, mask: Any = None) -> float:
    """Mean absolute difference of two images or volumes (optionally over a mask)."""
    a, b = _pair(a, b)
    return _mean(np.abs(a - b), _weights(mask, a.shape))


def mse(a: Any, b: Any, mask: Any = None) -> float:
    """Mean squared difference (the "L2" loss) of two images or volumes (optionally masked)."""
    a, b = _pair(a, b)
    return _mean((a - b) ** 2, _weights(mask, a.shape))


def psnr(a: Any, b: Any, data_range: float = 1.0, mask: Any = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range**2 / MSE)``.

    Returns ``inf`` for identical inputs (MSE 0).
    """
    if data_range <= 0:
        raise InputError(f"data_range must be positive, got {data_range}")
    err = mse(a, b, mask)
    if err == 0.0:
        return math.inf
    return float(10.0 * np.log10(data_range**2 / err))


def ncc(a: Any, b: Any, mask: Any = None) -> float:
    """Zero-normalised cross-correlation in [-1, 1] (the Pearson correlation of the intensities).

    Invariant to ``a -> s a + t`` with ``s > 0``. Returns NaN when either input is constant over
    the (masked) region, where the correlation is undefined.
    """
    a, b = _pair(a, b)
    w = _weights(mask, a.shape)
    if w is None:
        w = np.ones_like(a)
    ws = w.sum()
    da = a - (a * w).sum() / ws
    db = b - (b * w).sum() / ws
    num = (w * da * db).sum()
    den = math.sqrt(float((w * da * da).sum()) * float((w * db * db).sum()))
    if den == 0.0:
        return math.nan
    return float(np.clip(num / den, -1.0, 1.0))


# --------------------------------------------------------------------------------------------
# SSIM, NumPy


def _ssim_constants(data_range: float, k1: float, k2: float) -> tuple[float, float]:
    """``C1 = (K1 L)^2`` and ``C2 = (K2 L)^2`` for the dynamic range ``L`` (checked positive)."""
    if data_range <= 0:
        raise InputError(f"data_range must be positive, got {data_range}")
    return (k1 * data_range) ** 2, (k2 * data_range) ** 2


def _ssim_from_moments(mu_a: Any, mu_b: Any, e_aa: Any, e_bb: Any, e_ab: Any, c1: float, c2: float) -> Any:
    """The SSIM map from the local moments ``E[a], E[b], E[a^2], E[b^2], E[ab]`` (NumPy or torch alike).

    ``(2 mu_a mu_b + C1)(2 cov + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2))`` with population
    (co)variances; shared by :func:`ssim_map` and :func:`ssim_torch` so both compute the same numbers.
    """
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    num = (2 * mu_ab + c1) * (2 * (e_ab - mu_ab) + c2)
    den = (mu_aa + mu_bb + c1) * ((e_aa - mu_aa) + (e_bb - mu_bb) + c2)
    return num / den


def _check_ssim_shape(shape: tuple[int, ...], win: int) -> None:
    if len(shape) not in (2, 3):
        raise InputError(f"SSIM needs a 2D image or 3D volume, got shape {shape}")
    if min(shape) < win:
        raise InputError(f"SSIM needs every side >= {win} pixels (the window), got shape {shape}")


def _filter_valid(x: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """Separable Gaussian filtering keeping only positions where the window fits ('valid').

    Filters in place-sized buffers (no window copies, so 256^3 volumes stay cheap) and crops the
    border, where the boundary mode would otherwise matter.
    """
    from scipy.ndimage import correlate1d

    for axis in range(x.ndim):
        x = correlate1d(x, w1, axis=axis, mode="reflect")
    h = w1.size // 2
    return x[tuple(slice(h, n - h) for n in x.shape)]


def ssim_map(
    a: Any,
    b: Any,
    data_range: float = 1.0,
    *,
    win_size: int = SSIM_WIN,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> np.ndarray:
    """Local SSIM at every position where the Gaussian window fits inside the image.

    Parameters
    ----------
    a, b : array, shape (H, W) or (I, J, K)
        Images or volumes of the same shape.
    data_range : float
        Dynamic range ``L`` of the intensities (1 for images in [0, 1]); sets ``C1 = (K1 L)^2``,
        ``C2 = (K2 L)^2``.

    Returns
    -------
    ndarray, float64, shape ``(H - win + 1, W - win + 1[, ...])``
        Entry ``[i, j]`` is the SSIM of the window centred on pixel ``(i + win//2, j + win//2)``.
    """
    a, b = _pair(a, b)
    _check_ssim_shape(a.shape, win_size)
    c1, c2 = _ssim_constants(data_range, k1, k2)
    w1 = gaussian_window_1d(win_size, sigma)
    # One product at a time, so a large volume never holds more than one extra full-size array.
    return _ssim_from_moments(_filter_valid(a, w1), _filter_valid(b, w1), _filter_valid(a * a, w1),
                              _filter_valid(b * b, w1), _filter_valid(a * b, w1), c1, c2)


def _crop_mask(mask: Any, shape: tuple[int, ...], win: int) -> np.ndarray | None:
    w = _weights(mask, shape)
    if w is None:
        return None
    h = win // 2
    w = w[tuple(slice(h, n - h) for n in shape)]
    if w.sum() <= 0:
        raise InputError(f"mask selects no pixel at least {h} pixels inside the image border")
    return w


def ssim(
    a: Any,
    b: Any,
    data_range: float = 1.0,
    mask: Any = None,
    *,
    win_size: int = SSIM_WIN,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> float:
    """Mean structural similarity of two images (2D) or volumes (3D).

    Parameters
    ----------
    a, b : array, shape (H, W) or (I, J, K)
    data_range : float
        Dynamic range of the intensities (1 for [0, 1] images, 255 for 8-bit).
    mask : array of bool or non-negative weights, same shape, optional
        Average the SSIM map over the window centres inside the mask (for example a sector mask),
        instead of over the whole valid region.

    Returns
    -------
    float
        1 for identical inputs; matches scikit-image's Gaussian-weighted SSIM (see module notes).
    """
    s = ssim_map(a, b, data_range, win_size=win_size, sigma=sigma, k1=k1, k2=k2)
    return _mean(s, _crop_mask(mask, np.shape(a), win_size))


# --------------------------------------------------------------------------------------------
# SSIM, torch (differentiable)


@functools.lru_cache(maxsize=32)
def _torch_taps(size: int, sigma: float, dtype: Any, device: Any) -> tuple[Any, Any]:
    """Depthwise row and column kernels for the five SSIM statistics, built once per dtype/device."""
    import torch

    w = torch.as_tensor(gaussian_window_1d(size, sigma), dtype=dtype, device=device)
    horizontal = w.view(1, 1, 1, size).repeat(5, 1, 1, 1)  # [5, 1, 1, win]
    vertical = w.view(1, 1, size, 1).repeat(5, 1, 1, 1)  # [5, 1, win, 1]
    return horizontal, vertical


def ssim_torch(
    x: "torch.Tensor",
    y: "torch.Tensor",
    data_range: float = 1.0,
    mask: "torch.Tensor | None" = None,
    *,
    reduction: str = "mean",
    win_size: int = SSIM_WIN,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> "torch.Tensor":
    """Differentiable SSIM of batches of 2D frames (use ``1 - ssim_torch(...)`` as a loss).

    The five local statistics (means, second moments, cross moment) are filtered together in one
    grouped separable convolution (a 1 x win then a win x 1 depthwise pass over ``[B, 5, H, W]``
    in channels-last layout), with the taps cached per dtype and device. Gradients flow to ``x`` and ``y``.

    Parameters
    ----------
    x, y : Tensor, shape (B, 1, H, W), (B, H, W) or (H, W)
        Frames of the same shape, dtype and device; ``H, W >= win_size``.
    data_range : float
        Dynamic range of the intensities.
    mask : Tensor, shape broadcastable to (B, H, W), bool or float weights, optional
        Average the SSIM map over window centres inside the mask (for example the sector). With
        ``reduction="none"`` a frame whose mask is empty inside the valid region gets 0.
    reduction : {"mean", "none"}
        ``"mean"``: a scalar, the mean over frames of each frame's mean SSIM (with a mask: the
        mask-weighted mean over all frames' pixels); ``"none"``: per-frame means, shape ``(B,)``.

    Returns
    -------
    Tensor
        Scalar or ``(B,)``, same dtype as ``x``. Equals :func:`ssim` frame by frame.
    """
    import torch
    import torch.nn.functional as F

    if x.shape != y.shape:
        raise InputError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() == 2:
        x, y = x[None, None], y[None, None]
    elif x.dim() == 3:
        x, y = x[:, None], y[:, None]
    elif x.dim() != 4 or x.shape[1] != 1:
        raise InputError(f"ssim_torch expects (B, 1, H, W), (B, H, W) or (H, W), got {tuple(x.shape)}")
    b, _, h, w = x.shape
    if min(h, w) < win_size:
        raise InputError(f"SSIM needs frames of at least {win_size}x{win_size}, got {h}x{w}")
    if reduction not in ("mean", "none"):
        raise InputError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    c1, c2 = _ssim_constants(data_range, k1, k2)
    if not x.is_floating_point():
        x, y = x.float(), y.float()
    y = y.to(x.dtype)

    kh, kv = _torch_taps(win_size, float(sigma), x.dtype, x.device)
    # channels-last makes the depthwise convolutions several times faster on CPU (oneDNN path):
    # measured 0.13 s vs 0.59 s fwd+bwd for [32, 5, 256, 256] on 2 cores.
    # Stacking on the last axis and permuting builds the channels-last tensor in one copy.
    x2, y2 = x[:, 0], y[:, 0]
    stats = torch.stack([x2, y2, x2 * x2, y2 * y2, x2 * y2], dim=-1).permute(0, 3, 1, 2)
    stats = F.conv2d(F.conv2d(stats, kh, groups=5), kv, groups=5)  # [B, 5, H-win+1, W-win+1]
    # Back to planar layout so the element-wise algebra below runs on contiguous maps.
    smap = _ssim_from_moments(*stats.contiguous().unbind(dim=1), c1, c2)  # [B, h', w']

    if mask is None:
        per_frame = smap.mean(dim=(1, 2))
        return per_frame.mean() if reduction == "mean" else per_frame

    m = torch.as_tensor(mask, device=x.device)
    if m.dim() == 4:
        m = m[:, 0]
    try:
        m = m.to(x.dtype).expand(b, h, w)
    except RuntimeError as exc:
        raise InputError(f"mask shape {tuple(m.shape)} does not broadcast to {(b, h, w)}") from exc
    half = win_size // 2
    m = m[:, half : h - half, half : w - half]
    weight = m.sum(dim=(1, 2))
    if reduction == "mean":
        return (smap * m).sum() / m.sum().clamp_min(torch.finfo(x.dtype).eps)
    return (smap * m).sum(dim=(1, 2)) / weight.clamp_min(torch.finfo(x.dtype).eps)
