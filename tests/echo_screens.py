"""Fake scanner screens for the intake tests: a fan of speckle (or a pasted view) with known geometry,
and the clutter a real screen has around it (text, ECG trace, depth dots, a grey bar).

Overlays are painted only farther than 3 px from the fan, so the fan itself is exactly known.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from sono3d.intake import FanFit, ViewGeometry


def speckle(shape: tuple[int, int], rng: np.random.Generator, lo: float = 0.12, hi: float = 0.85) -> np.ndarray:
    """Smoothed Rayleigh speckle in [lo, hi]."""
    s = ndi.gaussian_filter(rng.rayleigh(size=shape), 1.0)
    s = (s - s.min()) / (s.max() - s.min())
    return (lo + (hi - lo) * s).astype(np.float32)


def overlays(shape: tuple[int, int], fan: np.ndarray, fit: FanFit, colour_ecg: bool = True) -> np.ndarray:
    """RGB float [H, W, 3] of screen clutter outside ``fan`` (zero elsewhere)."""
    H, W = shape
    im = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(im)
    for i, line in enumerate(["51Hz", "15cm", "2D", " 66%", "C 50", "P Low", "HGen"]):
        d.text((4, 4 + 11 * i), line, fill=(255, 255, 255))
    d.text((W - 60, H - 14), "59 bpm", fill=(255, 255, 255))
    # ECG along the bottom left
    x = np.arange(8, min(W // 2, 220))
    y = H - 12 - 3 * np.sin(x / 9.0) - 14 * np.exp(-(((x - 40) % 70) - 2.0) ** 2 / 3.0)
    d.line(list(zip(x.tolist(), y.tolist())), fill=(60, 220, 60) if colour_ecg else (200, 200, 200), width=1)
    # a grey bar on the right
    for k in range(60):
        d.line([(W - 14, 30 + k), (W - 8, 30 + k)], fill=(255 - 4 * k,) * 3)
    # depth dots along the left edge, 7 px outside it
    half = np.deg2rad(fit.angle_deg) / 2 + np.deg2rad(fit.tilt_deg)
    for rr in np.arange(20, fit.radius_px[1], 18):
        c = fit.apex_px[0] - rr * np.sin(half) * 1.0 - 7 * np.cos(half)
        r = fit.apex_px[1] + rr * np.cos(half) - 7 * np.sin(half)
        d.ellipse([c - 1, r - 1, c + 1, r + 1], fill=(255, 255, 255))
    a = np.asarray(im, dtype=np.float32) / 255.0
    keep = ~ndi.binary_dilation(fan, iterations=3)
    return a * keep[..., None]


def fake_screen(shape: tuple[int, int] = (300, 400), apex: tuple[float, float] = (200.4, 30.6),
                angle_deg: float = 76.0, depth_px: float = 240.0, tilt_deg: float = 0.0, r0_px: float = 0.0,
                frames: int = 1, rng: np.random.Generator | None = None, content: np.ndarray | None = None
                ) -> tuple[np.ndarray, FanFit]:
    """A screen capture ``[N, H, W, 3]`` uint8 with a fan of known geometry (the returned FanFit).

    ``content`` ``[N, H, W]`` in [0, 1] replaces the speckle inside the fan.
    """
    rng = rng or np.random.default_rng(0)
    fit = FanFit(apex_px=apex, angle_deg=angle_deg, tilt_deg=tilt_deg, radius_px=(r0_px, depth_px))
    fan = fit.mask(shape)
    clutter = overlays(shape, fan, fit)
    out = np.zeros((frames,) + shape + (3,), dtype=np.uint8)
    for n in range(frames):
        g = speckle(shape, rng) if content is None else content[n]
        rgb = np.where(fan[..., None], g[..., None], clutter)
        out[n] = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    return out, fit


def paste_view(view: np.ndarray, geometry: ViewGeometry, shape: tuple[int, int], apex: tuple[float, float],
               pixel_mm: float, tilt_deg: float = 0.0) -> tuple[np.ndarray, FanFit]:
    """Draw a view (apex at its top centre) into a screen fan of ``pixel_mm`` pixels.

    Returns the screen grey ``[H, W]`` (zero outside the fan) and the screen fan. Inside the fan the
    view's grey is mapped to ``0.06 + 0.94 g`` (a scanner's grey floor; correlation is unchanged).
    """
    fit = FanFit(apex_px=apex, angle_deg=geometry.opening_deg, tilt_deg=tilt_deg,
                 radius_px=(0.0, geometry.depth_mm / pixel_mm))
    r_px, theta = fit.polar(shape)
    fan = fit.mask(shape)
    rho = r_px * pixel_mm
    S = geometry.size
    col = (S - 1) / 2.0 + rho * np.sin(theta) / geometry.pixel_mm
    row = rho * np.cos(theta) / geometry.pixel_mm
    g = ndi.map_coordinates(np.asarray(view, dtype=np.float64), [row[fan], col[fan]], order=1, mode="nearest")
    out = np.zeros(shape, dtype=np.float32)
    out[fan] = 0.06 + 0.94 * np.clip(g, 0, 1)
    return out, fit
