"""One recorded echo to views in a target geometry: read, find the fan, clean, resample, pick ED/ES.

:func:`intake_echo` is the whole path for one file; ``sono3d heart views`` runs it once per view and
the style bridge runs it on every real frame it trains on.

Pixel size, in order: the DICOM ultrasound region; else ``depth_mm`` (the depth the scanner
shows, e.g. ``15cm`` on the screen: apex, or probe face, to the far arc); else
:data:`DEFAULT_DEPTH_MM`, an adult transthoracic depth, with a warning that sizes are guessed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import InputError, SonoError
from sono3d.intake.phases import cavity_areas, choose_phases
from sono3d.intake.read import EchoFrames, read_echo
from sono3d.intake.resample import ViewGeometry, resample_fan
from sono3d.intake.sector import FanFit, find_sector

__all__ = ["EchoIntake", "intake_echo", "pixel_size", "DEFAULT_DEPTH_MM", "DOPPLER_FRACTION"]

# Adult transthoracic views are mostly recorded at 14-18 cm depth (the six TTE47 stills: 14-19 cm).
DEFAULT_DEPTH_MM = 160.0
# Coloured pixels covering this share of the fan make it a colour-Doppler recording.
DOPPLER_FRACTION = 0.01
# A view whose real image data cover less than this share of the target fan is mostly blank.
_MIN_COVERAGE = 0.3


@dataclass
class EchoIntake:
    """One recording after intake.

    Attributes
    ----------
    path : Path
    kind : str
        ``image``, ``image folder``, ``video``, ``dicom`` or ``array``.
    fit : FanFit
        The fan found in the source pixels.
    pixel_mm : float
        Source pixel size used.
    pixel_source : str
        Where it came from: ``ultrasound region (cm)``, ``PixelSpacing``, ``depth option`` or ``default depth``.
    geometry : ViewGeometry
    views : ndarray [N, size, size] float32
        Every frame resampled (zero outside ``coverage``).
    coverage : ndarray [size, size] bool
        Target pixels that hold image data.
    areas_mm2 : ndarray [N] or None
        Cavity area per frame (loops only).
    ed_frame, es_frame : int
        Frames used (both 0 for a still).
    colour_fraction : float
        Share of the fan's pixels that were coloured in any frame.
    source_frame : ndarray [H, W] float32
        The ED frame as read (for figures).
    warnings : list of str
    seconds : float
        Wall time of the intake (read to resample).
    """

    path: Path
    kind: str
    fit: FanFit
    pixel_mm: float
    pixel_source: str
    geometry: ViewGeometry
    views: np.ndarray
    coverage: np.ndarray
    areas_mm2: np.ndarray | None
    ed_frame: int
    es_frame: int
    colour_fraction: float
    source_frame: np.ndarray
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_frames(self) -> int:
        return int(self.views.shape[0])

    @property
    def is_loop(self) -> bool:
        return self.n_frames > 1

    @property
    def colour_doppler(self) -> bool:
        return self.colour_fraction >= DOPPLER_FRACTION

    @property
    def frames_used(self) -> list[int]:
        """``[ed, es]`` for a loop, ``[0]`` for a still."""
        return [self.ed_frame, self.es_frame] if self.is_loop else [self.ed_frame]

    def images(self) -> np.ndarray:
        """``[P, size, size]``: the ED and ES views of a loop (P = 2) or the still (P = 1)."""
        return self.views[self.frames_used]

    def record(self) -> dict[str, Any]:
        """A JSON-ready account of what was read and found."""
        rec: dict[str, Any] = {
            "file": str(self.path), "kind": self.kind, "frames": self.n_frames,
            "frames_used": self.frames_used, "sector": self.fit.to_dict(),
            "pixel_mm": float(self.pixel_mm), "pixel_source": self.pixel_source,
            "depth_mm": float((self.fit.radius_px[1] - self.fit.radius_px[0]) * self.pixel_mm),
            "coverage": float(self.coverage.sum() / max(self.geometry.mask().sum(), 1)),
            "colour_fraction": float(self.colour_fraction), "colour_doppler": bool(self.colour_doppler),
            "seconds": float(self.seconds), "warnings": list(self.warnings),
        }
        if self.areas_mm2 is not None:
            rec["lv_area_mm2"] = [round(float(a), 1) for a in self.areas_mm2]
        return rec


def pixel_size(frames: EchoFrames, fit: FanFit, depth_mm: float | None = None,
               default_depth_mm: float = DEFAULT_DEPTH_MM) -> tuple[float, str]:
    """Source pixel size (mm) and where it came from (see the module notes)."""
    if frames.spacing_mm is not None:
        dy, dx = frames.spacing_mm
        return float(dy), frames.spacing_source
    span = fit.radius_px[1] - fit.radius_px[0]
    if depth_mm is not None:
        if not (np.isfinite(depth_mm) and depth_mm > 0):
            raise InputError(f"depth must be a positive number of mm, got {depth_mm}")
        return float(depth_mm) / span, "depth option"
    return float(default_depth_mm) / span, "default depth"


def intake_echo(path: str | os.PathLike[str], geometry: ViewGeometry, depth_mm: float | None = None,
                ed_frame: int | None = None, es_frame: int | None = None, mirror: bool = False,
                default_depth_mm: float = DEFAULT_DEPTH_MM, seed: int = 0,
                frames: EchoFrames | None = None) -> EchoIntake:
    """Read one echo recording and bring it into ``geometry``.

    Parameters
    ----------
    path : str or Path
        Image, folder of images, video, DICOM, or frames in ``.npz``/``.npy``.
    geometry : ViewGeometry
        Target view (apex at the top centre).
    depth_mm : float, optional
        Imaging depth shown by the scanner (used when the file has no pixel size).
    ed_frame, es_frame : int, optional
        Frames to use in a loop instead of the cavity estimate (ignored, with a warning, for a still).
    mirror : bool
        Mirror left and right.
    default_depth_mm : float
        Depth assumed when neither the file nor ``depth_mm`` gives a scale.
    seed : int
        Seeds the sector search's RANSAC.
    frames : EchoFrames, optional
        Already-read frames of ``path`` (skips reading).

    Returns
    -------
    EchoIntake

    Raises
    ------
    FileFormatError, InputError
        One line starting with the file's path: unreadable, no sector, frame out of range.
    """
    t0 = time.perf_counter()
    p = Path(path)
    try:
        src = frames if frames is not None else read_echo(p)
        return _intake(src, geometry, depth_mm, ed_frame, es_frame, mirror, default_depth_mm, seed, t0)
    except SonoError as exc:
        msg = str(exc)
        if msg.startswith(str(p)):
            raise
        raise type(exc)(f"{p}: {msg}") from None


def _intake(src: EchoFrames, geometry: ViewGeometry, depth_mm: float | None, ed_frame: int | None,
            es_frame: int | None, mirror: bool, default_depth_mm: float, seed: int, t0: float) -> EchoIntake:
    warnings = list(src.notes)
    fit = find_sector(src.grey, src.region, seed=seed)
    fan = fit.mask(src.shape)
    grey = src.grey * fan  # text, ECG, markers and bars outside the fan go
    colour_fraction = 0.0
    if src.colour is not None:
        coloured = src.colour.any(0) & fan
        colour_fraction = float(coloured.sum() / max(fan.sum(), 1))
        if colour_fraction >= DOPPLER_FRACTION:
            warnings.append(f"{src.path.name}: colour Doppler inside the sector ({colour_fraction:.0%} of it): "
                            "using the grey B-mode part; coloured pixels are set to black (flowing blood)")
        # colour inside the fan (flow, or a coloured marker) is not B-mode: blank it in every frame
        grey[src.colour & fan] = 0.0
    pixel_mm, pixel_source = pixel_size(src, fit, depth_mm, default_depth_mm)
    if pixel_source == "default depth":
        warnings.append(f"{src.path.name}: no pixel size in the file; depth {default_depth_mm:g} mm assumed "
                        "(give the depth shown on the scanner with --depth-mm)")
    views, coverage = resample_fan(grey, fit, pixel_mm, geometry, mirror=mirror, region=src.region)
    target = geometry.mask()
    share = float(coverage.sum() / max(target.sum(), 1))
    if share < _MIN_COVERAGE:
        warnings.append(f"{src.path.name}: the image covers only {share:.0%} of the view's sector")
    areas = None
    if views.shape[0] > 1:
        opening = min(fit.angle_deg, geometry.opening_deg)
        areas, _ = cavity_areas(views, coverage, geometry.pixel_mm, opening)
        ed, es = choose_phases(areas, ed_frame, es_frame)
    else:
        if ed_frame not in (None, 0) or es_frame not in (None, 0):
            warnings.append(f"{src.path.name}: a still image has one frame; --ed-frame/--es-frame ignored")
        ed = es = 0
    return EchoIntake(path=src.path, kind=src.kind, fit=fit, pixel_mm=pixel_mm, pixel_source=pixel_source,
                      geometry=geometry, views=views, coverage=coverage, areas_mm2=areas, ed_frame=ed, es_frame=es,
                      colour_fraction=colour_fraction, source_frame=src.grey[ed].copy(), warnings=warnings,
                      seconds=time.perf_counter() - t0)
