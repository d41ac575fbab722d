"""Resampling a found fan into a target view geometry (the network's: apex at the top centre).

The map is physical: a point at radius ``rho`` mm and beam angle ``theta`` from the source's apex
(``theta`` measured from its central beam) lands at the same ``rho`` and ``theta`` in the target,
whose apex is pixel ``((W - 1) / 2, 0)`` and whose central beam runs down the rows. So anatomy keeps
its size in millimetres and its angles; the source fan is turned upright (its tilt removed), and
pixels are kept only where both fans overlap (the *coverage*): a narrower or shallower source
leaves the rest of the target fan black, a wider or deeper one is cut to it.

A curvilinear source keeps its virtual apex at the target's apex, so its probe-face arc stays an
arc ``r_min`` mm below the apex (nothing is imaged above it).

Before the bilinear sampling the source is averaged over ``k x k`` blocks, ``k`` the whole number of
source pixels per target pixel, so speckle is not aliased into the smaller image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from sono3d.errors import InputError
from sono3d.geometry.sector import polar_coordinates, sector_for_probe, sector_mask
from sono3d.intake.sector import FanFit
from sono3d.types import Sector

__all__ = ["ViewGeometry", "resample_fan"]


@dataclass(frozen=True)
class ViewGeometry:
    """A target view: square image, apex at pixel ``((size - 1) / 2, 0)``, central beam down the rows.

    Attributes
    ----------
    size : int
        Image height and width in pixels.
    fov_mm : float
        Image extent (both axes) in mm; the pixel size is ``fov_mm / size``.
    depth_mm : float
        Sector depth from the apex.
    opening_deg : float
        Full opening angle of the target fan.
    """

    size: int
    fov_mm: float
    depth_mm: float
    opening_deg: float

    def __post_init__(self) -> None:
        if not (isinstance(self.size, (int, np.integer)) and 16 <= self.size <= 2048):
            raise InputError(f"view size must be an integer number of pixels in [16, 2048], got {self.size}")
        for name in ("fov_mm", "depth_mm"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"view {name} must be positive, got {v}")
        if not 0 < self.opening_deg < 180:
            raise InputError(f"view opening angle must be in (0, 180) degrees, got {self.opening_deg}")

    @property
    def pixel_mm(self) -> float:
        return float(self.fov_mm) / int(self.size)

    @property
    def spacing_mm(self) -> tuple[float, float]:
        return self.pixel_mm, self.pixel_mm

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.size), int(self.size)

    def sector(self) -> Sector:
        """The target fan as a :class:`~sono3d.types.Sector` (apex on the top row, centred)."""
        return sector_for_probe(self.shape, self.spacing_mm, self.opening_deg, self.depth_mm)

    def mask(self) -> np.ndarray:
        """Boolean ``[size, size]``: the target fan."""
        return sector_mask(self.sector(), self.shape, self.spacing_mm)


def resample_fan(frames: np.ndarray, fit: FanFit, pixel_mm: float, geometry: ViewGeometry, mirror: bool = False,
                 region: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resample the fan of ``frames`` into ``geometry``.

    Parameters
    ----------
    frames : ndarray [N, H, W] or [H, W]
        Grey frames in [0, 1], blanked outside the fan or not (only fan pixels are sampled).
    fit : FanFit
        The source fan, in the frames' pixels.
    pixel_mm : float
        Source pixel size in mm (square pixels).
    geometry : ViewGeometry
    mirror : bool
        Mirror left and right (for a scanner that shows the view the other way round).
    region : (x0, y0, x1, y1) or None
        Source pixels outside this inclusive box are not used (a DICOM ultrasound region).

    Returns
    -------
    views : ndarray [N, size, size] float32
        Zero outside the coverage.
    coverage : ndarray [size, size] bool
        Target pixels inside both fans (and inside the source picture).
    """
    g = np.asarray(frames, dtype=np.float32)
    if g.ndim == 2:
        g = g[None]
    if not (np.isfinite(pixel_mm) and pixel_mm > 0):
        raise InputError(f"source pixel size must be positive, got {pixel_mm}")
    N, H, W = g.shape
    radius, theta = polar_coordinates(geometry.sector(), geometry.shape, geometry.spacing_mm)
    if mirror:
        theta = -theta
    r_px = radius / pixel_mm
    a = theta + np.deg2rad(fit.tilt_deg)
    cols = fit.apex_px[0] + r_px * np.sin(a)
    rows = fit.apex_px[1] + r_px * np.cos(a)
    x0, y0, x1, y1 = region if region is not None else (0, 0, W - 1, H - 1)
    coverage = (geometry.mask() & (r_px >= fit.radius_px[0]) & (r_px <= fit.radius_px[1])
                & (np.abs(theta) <= np.deg2rad(fit.angle_deg) / 2)
                & (cols >= max(x0, 0) - 0.5) & (cols <= min(x1, W - 1) + 0.5)
                & (rows >= max(y0, 0) - 0.5) & (rows <= min(y1, H - 1) + 0.5))
    out = np.zeros((N,) + geometry.shape, dtype=np.float32)
    if not coverage.any():
        return out, coverage
    # Work on the covered part of the source only, averaged over k x k blocks.
    k = max(1, int(np.floor(geometry.pixel_mm / pixel_mm)))
    c_lo = int(np.clip(np.floor(cols[coverage].min()) - k, 0, W - 1))
    c_hi = int(np.clip(np.ceil(cols[coverage].max()) + k + 1, 1, W))
    r_lo = int(np.clip(np.floor(rows[coverage].min()) - k, 0, H - 1))
    r_hi = int(np.clip(np.ceil(rows[coverage].max()) + k + 1, 1, H))
    h, w = (r_hi - r_lo) // k, (c_hi - c_lo) // k
    if h < 2 or w < 2:
        k, h, w = 1, r_hi - r_lo, c_hi - c_lo
    crop = g[:, r_lo:r_lo + h * k, c_lo:c_lo + w * k]
    blocks = crop.reshape(N, h, k, w, k).mean(axis=(2, 4)) if k > 1 else crop
    # block (i, j) averages source pixels r_lo + i*k ... r_lo + i*k + k - 1: its centre is at
    # r_lo + i*k + (k - 1)/2
    bi = (rows[coverage] - r_lo - (k - 1) / 2.0) / k
    bj = (cols[coverage] - c_lo - (k - 1) / 2.0) / k
    coords = np.stack([bi, bj])
    for n in range(N):
        out[n][coverage] = ndi.map_coordinates(blocks[n], coords, order=1, mode="nearest")
    return out, coverage
