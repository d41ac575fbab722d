"""B-mode image formation from an echogenicity map: scatterers, point spread function, envelope,
depth attenuation with time-gain compensation, and log compression.

The model, per frame (rows axial, columns lateral):

1. scatterer amplitudes: white Gaussian noise times the echogenicity (amplitude reflectivity);
2. round-trip attenuation ``10^(-a f 2r / 20)`` (``a`` in dB/cm/MHz, ``f`` in MHz, depth ``r`` from
   the sector apex in cm);
3. RF: a separable point spread function, a Gaussian envelope modulated by a carrier along the
   rows and a Gaussian across the columns (widths given as FWHM in mm);
4. electronic noise, then time-gain compensation that restores a fraction of the nominal
   attenuation (so deep noise is amplified, as on a scanner);
5. envelope ``|hilbert(rf)|`` along the rows;
6. log compression to [0, 1] over a dynamic range in dB.

The carrier of a real probe (several cycles per 0.5 mm pixel) cannot be sampled on the image grid.
The RF is therefore formed on an axially oversampled grid (up to 4x) with the carrier scaled down to
a quarter of the fine sampling rate; envelope statistics depend only on the PSF envelope, which
keeps its physical width (or the narrowest one the grid can carry). Scatterers are drawn
independently per frame.

:func:`bmode` runs steps 3-5 in one FFT pass along the beam (axial PSF times the analytic-signal
filter, folded to one sample per image row) and applies the slowly varying TGC to the envelope;
:func:`rf_frames` followed by :func:`envelope` is the time-domain reference it is tested against.

The heart paper's pseudo-echo step (:func:`pseudo_echo`: sector crop, Gaussian blur, noise) is the
special case with no carrier, no speckle and no log compression: the PSF is the blur and the
scatterer term is additive noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from sono3d.errors import InputError
from sono3d.geometry.sector import sector_mask
from sono3d.types import Sector

__all__ = ["BModeParams", "bmode", "rf_frames", "envelope", "log_compress", "pseudo_echo",
           "depth_map_mm", "axial_oversampling"]

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
# Carrier frequency on the fine axial grid (cycles per sample) and the narrowest envelope (samples)
# that keeps the RF band inside (0, Nyquist): 2.5 standard deviations of the spectrum either side.
_CARRIER = 0.25
_MIN_SIGMA_FINE = 2.5 / (2.0 * np.pi * _CARRIER)
_MAX_OVERSAMPLING = 4


@dataclass(frozen=True)
class BModeParams:
    """Acquisition and display settings of the B-mode model.

    Attributes
    ----------
    frequency_mhz : float
        Centre frequency (transvaginal probes: 5-9 MHz); enters the attenuation.
    axial_fwhm_mm, lateral_fwhm_mm : float
        Resolution: full width at half maximum of the PSF envelope along and across the beam.
    attenuation_db_cm_mhz : float
        Tissue attenuation (soft tissue about 0.5).
    tgc : float
        Fraction of the nominal attenuation that time-gain compensation restores (1: all of it).
    dynamic_range_db : float
        Range of envelope levels mapped onto [0, 1] by log compression.
    gain_db : float
        Overall gain before log compression; 0 puts the RMS speckle of echogenicity 1 at white.
    noise_db : float
        RMS electronic noise relative to the RMS echo of echogenicity 1 at zero depth.
    """

    frequency_mhz: float = 6.5
    axial_fwhm_mm: float = 0.5
    lateral_fwhm_mm: float = 1.2
    attenuation_db_cm_mhz: float = 0.5
    tgc: float = 1.0
    dynamic_range_db: float = 50.0
    gain_db: float = -15.0
    noise_db: float = -80.0

    def __post_init__(self) -> None:
        for name in ("frequency_mhz", "axial_fwhm_mm", "lateral_fwhm_mm", "dynamic_range_db"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"B-mode setting {name} must be positive, got {v}")
        if not (np.isfinite(self.attenuation_db_cm_mhz) and self.attenuation_db_cm_mhz >= 0):
            raise InputError(f"attenuation must be >= 0 dB/cm/MHz, got {self.attenuation_db_cm_mhz}")
        if not (np.isfinite(self.tgc) and 0 <= self.tgc <= 2):
            raise InputError(f"TGC fraction must be in [0, 2], got {self.tgc}")


def axial_oversampling(params: BModeParams, dy_mm: float) -> int:
    """Axial oversampling factor (1-4) the RF grid needs to carry the PSF at row spacing ``dy_mm``."""
    sigma_px = params.axial_fwhm_mm * _FWHM_TO_SIGMA / dy_mm
    return int(np.clip(np.ceil(_MIN_SIGMA_FINE / sigma_px), 1, _MAX_OVERSAMPLING))


def _axial_kernel(sigma: float) -> np.ndarray:
    half = int(np.ceil(4 * sigma))
    z = np.arange(-half, half + 1, dtype=np.float64)
    return (np.exp(-0.5 * (z / sigma) ** 2) * np.cos(2 * np.pi * _CARRIER * z)).astype(np.float32)


def _lateral_kernel(sigma: float) -> np.ndarray:
    half = max(1, int(np.ceil(4 * sigma)))
    z = np.arange(-half, half + 1, dtype=np.float64)
    return np.exp(-0.5 * (z / sigma) ** 2).astype(np.float32)


def depth_map_mm(shape: tuple[int, int], spacing_mm: tuple[float, float], sector: Sector | None = None,
                 oversampling: int = 1) -> np.ndarray:
    """Distance (mm) of each (fine) pixel from the transducer: radius from the sector apex, else row depth.

    Returns ``(H * oversampling, W)``; fine row ``f`` sits at image row ``f / oversampling``.
    """
    H, W = shape
    dy, dx = spacing_mm
    rows = np.arange(H * oversampling, dtype=np.float64) / oversampling
    if sector is None:
        return np.repeat((rows * dy)[:, None], W, axis=1)
    ax = (rows[:, None] - sector.apex_px[1]) * dy
    lat = (np.arange(W)[None, :] - sector.apex_px[0]) * dx
    return np.hypot(ax, lat)


@dataclass(frozen=True)
class _Stage:
    """Scatterer field after attenuation (and the lateral PSF for the reference path), laid out
    ``(N, W, H * U)`` (axial last)."""

    field: np.ndarray
    U: int
    k_ax: np.ndarray
    sig_lat: float
    tgc: np.ndarray  # (W, H * U) gain per fine sample


def _scatter_stage(echo: np.ndarray, spacing_mm: tuple[float, float], params: BModeParams,
                   sector: Sector | None, rng: np.random.Generator | int | None, lateral: bool = True,
                   scatterers: np.ndarray | None = None) -> _Stage:
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    echo = np.asarray(echo, dtype=np.float32)
    N, H, W = echo.shape
    dy, dx = spacing_mm
    U = axial_oversampling(params, dy)
    sig_ax = max(params.axial_fwhm_mm * _FWHM_TO_SIGMA / dy * U, _MIN_SIGMA_FINE)
    sig_lat = params.lateral_fwhm_mm * _FWHM_TO_SIGMA / dx
    depth_cm = depth_map_mm((H, W), (dy, dx), sector, U).T.astype(np.float32) / 10.0  # (W, H*U)
    loss_db = params.attenuation_db_cm_mhz * params.frequency_mhz * 2.0 * depth_cm
    atten = (10.0 ** (-loss_db / 20.0)).astype(np.float32)
    tgc = (10.0 ** (params.tgc * loss_db / 20.0)).astype(np.float32)
    et = echo.transpose(0, 2, 1)  # axial last: FFTs and filters run on contiguous memory
    amp = (np.repeat(et, U, axis=2) if U > 1 else et) * atten
    if np.isfinite(params.noise_db):
        # Receiver noise with the given RMS relative to the echo of echogenicity 1 at zero depth,
        # band-limited by the receive filter. Scatterers and noise are independent zero-mean
        # Gaussians, so one draw with the summed variance makes both.
        sigma_n = np.float32(10.0 ** (params.noise_db / 20.0))
        amp = np.sqrt(amp * amp + sigma_n * sigma_n)
    if scatterers is None:
        field = rng.standard_normal((N, W, H * U), dtype=np.float32)
    else:
        if scatterers.shape != (N, H * U, W):
            raise InputError(f"scatterer field must have shape {(N, H * U, W)} (axial oversampling {U}), "
                             f"got {scatterers.shape}")
        field = np.ascontiguousarray(np.asarray(scatterers, dtype=np.float32).transpose(0, 2, 1))
    field *= amp
    if lateral and sig_lat >= 0.3:
        field = ndimage.convolve1d(field, _lateral_kernel(sig_lat), axis=1, mode="constant")
    return _Stage(field, U, _axial_kernel(sig_ax), float(sig_lat), tgc)


def rf_frames(echo: np.ndarray, spacing_mm: tuple[float, float], params: BModeParams = BModeParams(),
              sector: Sector | None = None, rng: np.random.Generator | int | None = 0
              ) -> tuple[np.ndarray, int]:
    """RF frames on the axially oversampled grid, after noise and TGC (the time-domain reference).

    :func:`bmode` computes the same envelope faster in the frequency domain (and applies TGC to
    the envelope, which differs only where the gain changes within a pulse length).

    Parameters
    ----------
    echo : ndarray, shape (N, H, W)
        Echogenicity (amplitude reflectivity, >= 0).
    spacing_mm : (dy, dx)
    params : BModeParams
    sector : Sector, optional
        Depth is measured from its apex (else from row 0).
    rng : Generator or seed

    Returns
    -------
    rf : ndarray, shape (N, H * U, W), float32
    U : int
        The axial oversampling factor.
    """
    st = _scatter_stage(echo, spacing_mm, params, sector, rng)
    rf = ndimage.convolve1d(st.field, st.k_ax, axis=2, mode="constant")
    rf *= st.tgc
    return np.ascontiguousarray(rf.transpose(0, 2, 1)), st.U


def _fast_envelope(st: _Stage, H: int) -> np.ndarray:
    """Envelope ``(N, W, H)`` at image rows: axial PSF and Hilbert transform in one FFT pass.

    The zero-padded FFT makes the convolution linear (as ``mode="constant"``); folding the analytic
    spectrum by ``U`` yields exactly every ``U``-th sample from an inverse FFT ``U`` times shorter.
    """
    U, k = st.U, st.k_ax
    n_in = st.field.shape[-1]
    half = (len(k) - 1) // 2
    m = sp_fft.next_fast_len(-(-(n_in + half) // U))
    n = m * U
    kk = np.zeros(n, dtype=np.float32)
    kk[: half + 1] = k[half:]
    kk[n - half:] = k[:half]
    K = sp_fft.rfft(kk)
    h = np.full(K.shape, 2.0, dtype=np.float32)
    h[0] = 1.0
    if n % 2 == 0:
        h[-1] = 1.0  # the Nyquist bin
    off = (U - 1) // 2
    phase = np.exp(2j * np.pi * np.arange(K.size) * off / n)
    filt = (K * h * phase).astype(np.complex64)
    X = sp_fft.rfft(st.field, n=n, axis=-1)
    X *= filt
    Z = np.zeros(X.shape[:-1] + (n,), dtype=np.complex64)
    Z[..., : X.shape[-1]] = X
    folded = np.ascontiguousarray(Z.reshape(X.shape[:-1] + (U, m)).sum(axis=-2))
    if st.sig_lat >= 0.3:
        # The lateral PSF commutes with every axial step; applied here it filters U times fewer
        # samples (real and imaginary parts as interleaved float32 columns).
        flat = folded.view(np.float32)
        folded = ndimage.convolve1d(flat, _lateral_kernel(st.sig_lat), axis=1, mode="constant").view(np.complex64)
    env = np.abs(sp_fft.ifft(folded, axis=-1)[..., :H]) / np.float32(U)
    return env.astype(np.float32) * st.tgc[:, off::U][None, :, :H]


def _reference_rms(k_ax: np.ndarray, sig_lat: float) -> float:
    """RMS of the RF of unit white scatterers (echogenicity 1, no attenuation)."""
    lat = float(np.sum(_lateral_kernel(sig_lat) ** 2)) if sig_lat >= 0.3 else 1.0
    return float(np.sqrt(np.sum(k_ax.astype(np.float64) ** 2) * lat))


def _analytic_spectrum(rf: np.ndarray, axis: int) -> np.ndarray:
    """One-sided spectrum (length N along ``axis``) of the analytic signal of real ``rf``."""
    n = rf.shape[axis]
    X = sp_fft.rfft(rf, axis=axis)
    h = np.full(X.shape[axis], 2.0, dtype=np.float32)
    h[0] = 1.0
    if n % 2 == 0:
        h[-1] = 1.0
    shape = [1] * rf.ndim
    shape[axis] = -1
    X *= h.reshape(shape)
    pad = [(0, 0)] * rf.ndim
    pad[axis] = (0, n - X.shape[axis])
    return np.pad(X, pad)


def envelope(rf: np.ndarray, axis: int = -2, step: int = 1, offset: int = 0) -> np.ndarray:
    """Envelope ``|hilbert(rf)|`` along the axial ``axis`` (float32), optionally decimated.

    With ``step > 1`` only samples ``offset, offset + step, ...`` are returned, computed exactly by
    folding the analytic spectrum (an inverse FFT ``step`` times shorter). The length along
    ``axis`` must then be a multiple of ``step``.
    """
    rf = np.asarray(rf)
    rf = rf.astype(np.float32) if rf.dtype != np.float64 else rf
    axis = axis % rf.ndim
    n = rf.shape[axis]
    if step < 1 or n % step:
        raise InputError(f"envelope decimation step {step} must divide the axial length {n}")
    Z = _analytic_spectrum(rf, axis)
    if step == 1:
        return np.abs(sp_fft.ifft(Z, axis=axis)).astype(np.float32)
    m = n // step
    shape = [1] * rf.ndim
    shape[axis] = n
    Z *= np.exp(2j * np.pi * np.arange(n) * offset / n).astype(Z.dtype).reshape(shape)
    folded = Z.reshape(rf.shape[:axis] + (step, m) + rf.shape[axis + 1:]).sum(axis=axis)
    return (np.abs(sp_fft.ifft(folded, axis=axis)) / step).astype(np.float32)


def log_compress(env: np.ndarray, dynamic_range_db: float = 50.0, reference: float = 1.0,
                 gain_db: float = 0.0) -> np.ndarray:
    """Map envelope levels to [0, 1]: ``reference`` (after ``gain_db``) is 1, ``-dynamic_range_db`` below is 0."""
    if not (np.isfinite(dynamic_range_db) and dynamic_range_db > 0):
        raise InputError(f"dynamic range must be positive, got {dynamic_range_db} dB")
    db = 20.0 * np.log10(np.maximum(env, 1e-12) / reference) + gain_db
    return np.clip(1.0 + db / dynamic_range_db, 0.0, 1.0).astype(np.float32)


def bmode(echo: np.ndarray, spacing_mm: tuple[float, float], params: BModeParams = BModeParams(),
          sector: Sector | None = None, rng: np.random.Generator | int | None = 0,
          return_envelope: bool = False, scatterers: np.ndarray | None = None) -> np.ndarray:
    """B-mode frames from echogenicity frames.

    Parameters
    ----------
    echo : ndarray, shape (N, H, W) or (H, W)
        Echogenicity in [0, 1] sampled on the image planes.
    spacing_mm : (dy, dx)
        Pixel spacing in mm.
    params : BModeParams
    sector : Sector, optional
        Pixels outside it are set to 0 (and depth is measured from its apex).
    rng : Generator or seed
        Source of the scatterers and electronic noise.
    return_envelope : bool
        Return the envelope before log compression instead (same shape; echogenicity 1 without
        attenuation has RMS 1), e.g. to check speckle statistics.
    scatterers : ndarray, shape (N, H * U, W), optional
        Scatterer amplitudes (unit variance) on the axially oversampled grid
        (``U = axial_oversampling(params, dy)``) to use instead of drawing white noise from ``rng``:
        a field tied to tissue positions keeps the speckle of tissue seen twice (two phases, two
        crossing planes).

    Returns
    -------
    ndarray, same shape as ``echo``, float32 in [0, 1] (or the envelope).
    """
    e = np.asarray(echo, dtype=np.float32)
    single = e.ndim == 2
    if single:
        e = e[None]
    if e.ndim != 3:
        raise InputError(f"echogenicity frames must have shape [N, H, W] or [H, W], got {np.shape(echo)}")
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise InputError("echogenicity must be finite and non-negative")
    dy, dx = (float(v) for v in spacing_mm)
    if not (dy > 0 and dx > 0):
        raise InputError(f"pixel spacing must be positive, got {spacing_mm}")
    st = _scatter_stage(e, (dy, dx), params, sector, rng, lateral=False, scatterers=scatterers)
    ref = _reference_rms(st.k_ax, st.sig_lat)
    env = _fast_envelope(st, e.shape[1]).transpose(0, 2, 1) / np.float32(ref * np.sqrt(2.0))
    out = env if return_envelope else log_compress(env, params.dynamic_range_db, 1.0, params.gain_db)
    if sector is not None:
        out = out * sector_mask(sector, e.shape[1:], (dy, dx))[None]
    out = out.astype(np.float32)
    return out[0] if single else out


def pseudo_echo(label_image: np.ndarray, sector_mask: np.ndarray | None, blur_sigma_px: float = 2.0,
                noise_std: float = 0.1, rng: np.random.Generator | int | None = 0,
                binarize: bool = True) -> np.ndarray:
    """The heart paper's pseudo-echo image: sector crop, Gaussian blur, additive noise.

    Parameters
    ----------
    label_image : ndarray, shape (H, W) or (N, H, W)
        A label (or grey) image sliced from a model.
    sector_mask : ndarray of bool, shape (H, W), or None
        Pixels the probe sees; outside it the result is 0.
    blur_sigma_px : float
        Gaussian blur (pixels) applied inside the mask.
    noise_std : float
        Standard deviation of the Gaussian noise added inside the mask.
    rng : Generator or seed
    binarize : bool
        Tissue (label > 0) white, background black, as in the paper; ``False`` keeps grey levels.

    Returns
    -------
    ndarray, same shape, float32 in [0, 1].
    """
    img = np.asarray(label_image)
    if img.ndim not in (2, 3):
        raise InputError(f"label image must have shape [H, W] or [N, H, W], got {img.shape}")
    if not (np.isfinite(blur_sigma_px) and blur_sigma_px >= 0):
        raise InputError(f"blur sigma must be >= 0 pixels, got {blur_sigma_px}")
    if not (np.isfinite(noise_std) and noise_std >= 0):
        raise InputError(f"noise standard deviation must be >= 0, got {noise_std}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    x = (img > 0).astype(np.float32) if binarize else img.astype(np.float32)
    m = np.ones(img.shape[-2:], dtype=bool) if sector_mask is None else np.asarray(sector_mask, dtype=bool)
    if m.shape != img.shape[-2:]:
        raise InputError(f"sector mask shape {m.shape} does not match the image {img.shape[-2:]}")
    x = x * m
    if blur_sigma_px > 0:
        sig = (0.0,) * (x.ndim - 2) + (blur_sigma_px, blur_sigma_px)
        x = ndimage.gaussian_filter(x, sig, mode="constant")
    if noise_std > 0:
        x = x + rng.normal(0.0, noise_std, size=x.shape).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * m).astype(np.float32)
