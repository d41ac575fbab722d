"""Options of classic compounding: :class:`CompoundConfig`, its hole-filling kernels and fan clip, and
the same options read from a PLUS configuration's ``<VolumeReconstruction>`` element.

The PLUS XML itself is parsed once, by :func:`sono3d.io.read_plus_config`; this module only turns
its fields into compounding options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import FileFormatError, InputError
from sono3d.io import PlusConfig, read_plus_config

__all__ = [
    "COMPOUNDING_MODES",
    "HOLE_KERNELS",
    "INTERPOLATION_METHODS",
    "CompoundConfig",
    "FanClip",
    "HoleKernel",
    "read_plus_hole_filling",
    "read_plus_reconstruction",
]

INTERPOLATION_METHODS = ("nearest", "linear")
COMPOUNDING_MODES = ("mean", "max", "latest")
HOLE_KERNELS = ("gaussian", "gaussian_accumulation", "inverse_distance", "nearest", "stick")


@dataclass(frozen=True)
class HoleKernel:
    """One hole-filling element, tried in order until one succeeds for a voxel.

    Parameters
    ----------
    kind : {"gaussian", "gaussian_accumulation", "inverse_distance", "nearest", "stick"}
    size : int
        Edge of the cubic neighbourhood in voxels (odd), for all kinds but ``stick``.
    stdev : float
        Gaussian standard deviation in voxels.
    min_ratio : float
        The voxel is filled only if more than this fraction of the ``size^3`` cube is recorded.
    stick_length : int
        Longest stick in voxels (recorded end to recorded end, both ends included), ``stick`` only.
    n_sticks : int
        Number of shortest sticks averaged (ties all count), ``stick`` only.
    """

    kind: str = "gaussian"
    size: int = 3
    stdev: float = 0.6667
    min_ratio: float = 0.5
    stick_length: int = 9
    n_sticks: int = 1

    def __post_init__(self) -> None:
        if self.kind not in HOLE_KERNELS:
            raise InputError(f"unknown hole-filling kernel {self.kind!r}; choose from {', '.join(HOLE_KERNELS)}")
        if self.kind == "stick":
            if self.stick_length < 3:
                raise InputError(f"stick length must be at least 3 voxels, got {self.stick_length}")
            if self.n_sticks < 1:
                raise InputError(f"number of sticks must be at least 1, got {self.n_sticks}")
            return
        if self.size < 3 or self.size % 2 == 0:
            raise InputError(f"hole-filling kernel size must be an odd number >= 3, got {self.size}")
        if not (0.0 <= self.min_ratio < 1.0):
            raise InputError(f"hole-filling min_ratio must be in [0, 1), got {self.min_ratio}")
        if self.kind.startswith("gaussian") and not self.stdev > 0:
            raise InputError(f"Gaussian kernel stdev must be positive, got {self.stdev}")


@dataclass(frozen=True)
class FanClip:
    """PLUS fan clipping in pixel units (``FanAnglesDeg``, ``FanOriginPixel``, ``FanRadius*Pixel``).

    A pixel ``(col, row)`` is kept when it lies below the origin, its angle from the central beam
    (``atan`` of lateral over axial distance in mm, positive towards +col) is within
    ``angles_deg``, and its distance from the origin is within ``radius_px`` (measured in pixels,
    as PLUS does with unit image spacing).
    """

    angles_deg: tuple[float, float]
    origin_px: tuple[float, float] = (0.0, 0.0)
    radius_px: tuple[float, float] = (0.0, math.inf)

    def __post_init__(self) -> None:
        a0, a1 = self.angles_deg
        if not (-90.0 < a0 < 90.0 and -90.0 < a1 < 90.0):
            raise InputError(f"fan angles must lie in (-90, 90) degrees, got {self.angles_deg}")
        r0, r1 = self.radius_px
        if not (0.0 <= r0 < r1):
            raise InputError(f"fan radii must satisfy 0 <= start < stop, got {self.radius_px}")


_DEFAULT_KERNELS = (
    HoleKernel("gaussian", size=3, stdev=0.6667, min_ratio=0.25),
    HoleKernel("gaussian", size=5, stdev=1.3333, min_ratio=0.1),
    HoleKernel("gaussian", size=7, stdev=2.0, min_ratio=0.0),
)


@dataclass(frozen=True)
class CompoundConfig:
    """Options of :func:`compound_sweep`; see :meth:`preset` for named choices.

    Attributes
    ----------
    spacing_mm : float or (float, float, float)
        Voxel edge(s) of the output grid along its axes.
    method : {"nearest", "linear"}
        Pixel splatting: into the nearest voxel, or trilinearly over eight voxels.
    compounding : {"mean", "max", "latest"}
        How overlapping contributions combine.
    fill_holes : bool
        Fill unrecorded voxels with ``kernels`` after pasting.
    kernels : tuple of HoleKernel
        Hole-filling elements, tried in order.
    max_hole_mm : float or None
        Leave holes farther than ``max_hole_mm / 2`` from every recorded voxel empty.
    clip_rectangle : (col0, row0, width, height) or None
        PLUS ``ClipRectangleOrigin`` / ``ClipRectangleSize`` in pixels. As in PLUS the end is
        inclusive: columns ``col0 .. col0 + width`` (clamped to the image).
    fan : FanClip or None
        PLUS fan clipping.
    use_sector : bool
        Also clip to the sweep's own :class:`~sono3d.types.Sector`, when it has one.
    grid_axes : {"ras", "lps"}
        Axes the voxel grid follows. PLUS builds its grid along the ``Reference`` axes, which
        sono3d reads as LPS; ``"lps"`` reproduces PLUS's voxel centres.
    grid_origin_mm : (x, y, z) or None
        Centre of voxel (0, 0, 0) in ``grid_axes`` coordinates; with ``grid_shape``, fixes the grid
        instead of the bounding box of the clipped pixels.
    grid_shape : (I, J, K) or None
    pixel_threshold : float or None
        Skip pixels darker than this (PLUS ``PixelRejectionThreshold``, here in [0, 1] grey levels).
    """

    spacing_mm: float | tuple[float, float, float] = 0.5
    method: str = "linear"
    compounding: str = "mean"
    fill_holes: bool = True
    kernels: tuple[HoleKernel, ...] = _DEFAULT_KERNELS
    max_hole_mm: float | None = None
    clip_rectangle: tuple[int, int, int, int] | None = None
    fan: FanClip | None = None
    use_sector: bool = True
    grid_axes: str = "ras"
    grid_origin_mm: tuple[float, float, float] | None = None
    grid_shape: tuple[int, int, int] | None = None
    pixel_threshold: float | None = None

    def __post_init__(self) -> None:
        try:
            sp = np.broadcast_to(np.asarray(self.spacing_mm, dtype=np.float64), (3,))
        except (ValueError, TypeError):
            raise InputError(f"output spacing must be one or three numbers in mm, got {self.spacing_mm}") from None
        if not (np.all(np.isfinite(sp)) and np.all(sp > 0)):
            raise InputError(f"output spacing must be positive, got {self.spacing_mm} mm")
        if self.method not in INTERPOLATION_METHODS:
            raise InputError(f"unknown interpolation {self.method!r}; choose nearest or linear")
        if self.compounding not in COMPOUNDING_MODES:
            raise InputError(f"unknown compounding {self.compounding!r}; choose mean, max or latest")
        if self.grid_axes not in ("ras", "lps"):
            raise InputError(f"grid_axes must be 'ras' or 'lps', got {self.grid_axes!r}")
        if self.max_hole_mm is not None and not self.max_hole_mm > 0:
            raise InputError(f"maximum hole size must be positive, got {self.max_hole_mm} mm")
        if (self.grid_origin_mm is None) != (self.grid_shape is None):
            raise InputError("give both grid_origin_mm and grid_shape, or neither")
        if self.grid_shape is not None and (len(self.grid_shape) != 3 or min(self.grid_shape) < 1):
            raise InputError(f"grid shape must be three positive sizes, got {self.grid_shape}")
        if self.clip_rectangle is not None:
            c0, r0, w, h = self.clip_rectangle
            if w <= 0 or h <= 0:
                raise InputError(f"clip rectangle size must be positive, got {w} x {h} pixels")
        object.__setattr__(self, "kernels", tuple(self.kernels))

    @property
    def spacing(self) -> np.ndarray:
        """Voxel edges ``(3,)`` in mm."""
        return np.broadcast_to(np.asarray(self.spacing_mm, dtype=np.float64), (3,)).copy()

    def replace(self, **changes: Any) -> "CompoundConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> "CompoundConfig":
        """Named configurations.

        ``"default"``
            Linear splatting, mean compounding, Gaussian kernels of 3, 5 and 7 voxels (the last
            fills any hole within 3 voxels of data).
        ``"fast"``
            Nearest-neighbour splatting, mean, one Gaussian 3 kernel.
        ``"plus"``
            A PLUS-style chain: linear, mean, Gaussian 3 (stdev 0.6667, ratio 0.5) then sticks
            (length 9, one stick; the spine phantom configuration uses the sticks alone).
        ``"inverse"``
            Linear, mean, Gaussian 3 then inverse-distance 7.
        ``"none"``
            Linear, mean, no hole filling (the raw pasted voxels).
        """
        presets = {
            "default": cls(),
            "fast": cls(method="nearest", kernels=(HoleKernel("gaussian", 3, 0.6667, 0.25),)),
            "plus": cls(kernels=(HoleKernel("gaussian", 3, 0.6667, 0.5),
                                 HoleKernel("stick", stick_length=9, n_sticks=1))),
            "inverse": cls(kernels=(HoleKernel("gaussian", 3, 0.6667, 0.25),
                                    HoleKernel("inverse_distance", size=7, min_ratio=0.0))),
            "none": cls(fill_holes=False),
        }
        if name not in presets:
            raise InputError(f"unknown compounding preset {name!r}; choose from {', '.join(presets)}")
        return presets[name].replace(**changes) if changes else presets[name]

    @classmethod
    def from_plus(cls, plus_config: Any, **changes: Any) -> "CompoundConfig":
        """The configuration of a PLUS ``<VolumeReconstruction>`` element (path or
        :class:`sono3d.io.PlusConfig`, see :func:`read_plus_reconstruction`); keyword arguments
        override single fields. A new ``spacing_mm`` keeps a configured grid's box (origin and
        far corner) and changes its number of voxels."""
        fields = read_plus_reconstruction(plus_config)
        if "spacing_mm" in changes and fields.get("grid_shape") is not None and "grid_shape" not in changes:
            old = np.broadcast_to(np.asarray(fields.get("spacing_mm", 1.0), dtype=np.float64), (3,))
            new = np.broadcast_to(np.asarray(changes["spacing_mm"], dtype=np.float64), (3,))
            if np.all(new > 0):
                span = (np.asarray(fields["grid_shape"]) - 1) * old
                fields["grid_shape"] = tuple(int(v) + 1 for v in np.ceil(span / new - 1e-9))
        return cls(**{**fields, **changes})


def _plus(plus_config: "str | Path | PlusConfig") -> PlusConfig:
    """A PLUS configuration as read by :func:`sono3d.io.read_plus_config` (the one PLUS XML parser)."""
    return plus_config if isinstance(plus_config, PlusConfig) else read_plus_config(plus_config)


def read_plus_reconstruction(plus_config: "str | Path | PlusConfig") -> dict[str, Any]:
    """:class:`CompoundConfig` fields from a PLUS configuration's ``<VolumeReconstruction>``.

    Output spacing, origin + extent, clip rectangle and fan come from
    :func:`sono3d.io.read_plus_config`; ``Interpolation``, ``CompoundingMode`` (or the older
    ``Compounding`` / ``Calculation``), ``PixelRejectionThreshold`` (0-255, rescaled to [0, 1]) and
    ``FillHoles`` from its raw attributes; the ``<HoleFilling>`` kernels from
    :func:`read_plus_hole_filling`. The grid follows the ``Reference`` axes
    (``grid_axes="lps"``), the sweep's own sector is not used.

    Parameters
    ----------
    plus_config : str, Path or sono3d.io.PlusConfig

    Raises
    ------
    FileFormatError
        Unreadable XML, malformed numbers or hole-filling elements.
    """
    cfg = _plus(plus_config)
    a = {k: str(v) for k, v in cfg.reconstruction.items()}
    out: dict[str, Any] = {"grid_axes": "lps", "use_sector": False}
    if cfg.output_spacing_mm is not None:
        out["spacing_mm"] = tuple(float(v) for v in cfg.output_spacing_mm)
    if cfg.output_origin_mm is not None and cfg.output_extent is not None:
        sp = np.broadcast_to(np.asarray(out.get("spacing_mm", 1.0), dtype=np.float64), (3,))
        e = cfg.output_extent
        # VTK places index e0 at origin + e0 * spacing; our grid starts at index e0.
        out["grid_origin_mm"] = tuple(float(o + e[2 * i] * sp[i]) for i, o in enumerate(cfg.output_origin_mm))
        out["grid_shape"] = cfg.output_shape()
    if cfg.clip_size_px is not None and cfg.clip_size_px[0] > 0 and cfg.clip_size_px[1] > 0:
        c0 = cfg.clip_origin_px or (0, 0)
        out["clip_rectangle"] = (int(c0[0]), int(c0[1]), int(cfg.clip_size_px[0]), int(cfg.clip_size_px[1]))
    angles = cfg.fan_angles_deg
    if angles is not None and (angles[0] != 0 or angles[1] != 0):
        out["fan"] = FanClip(tuple(sorted(angles)), cfg.fan_origin_px or (0.0, 0.0),  # type: ignore[arg-type]
                             cfg.fan_radius_px or (0.0, math.inf))
    interp = a.get("Interpolation", "LINEAR").upper()
    out["method"] = "nearest" if interp.startswith("NEAREST") else "linear"
    mode = a.get("CompoundingMode", "").upper()
    if not mode:
        if a.get("Calculation", "").upper() == "MAXIMUM":
            mode = "MAXIMUM"
        elif a.get("Compounding", "ON").upper() == "OFF":
            mode = "LATEST"
        else:
            mode = "MEAN"
    out["compounding"] = "max" if mode.startswith("MAX") else "latest" if mode.startswith("LATEST") else "mean"
    if "PixelRejectionThreshold" in a:
        try:
            out["pixel_threshold"] = float(a["PixelRejectionThreshold"]) / 255.0
        except ValueError:
            raise FileFormatError(f"{cfg.path}: PixelRejectionThreshold is not a number") from None
    out["fill_holes"] = a.get("FillHoles", "OFF").upper() == "ON"
    kernels = read_plus_hole_filling(cfg)
    if kernels:
        out["kernels"] = kernels
    elif out["fill_holes"]:
        raise FileFormatError(f"{cfg.path}: FillHoles is ON but <HoleFilling> has no HoleFillingElement")
    return out


_PLUS_KERNELS = {"GAUSSIAN": "gaussian", "GAUSSIAN_ACCUMULATION": "gaussian_accumulation",
                 "DISTANCE_WEIGHT_INVERSE": "inverse_distance", "NEAREST_NEIGHBOR": "nearest", "STICK": "stick"}


def read_plus_hole_filling(plus_config: "str | Path | PlusConfig") -> tuple[HoleKernel, ...]:
    """The ``<HoleFilling>/<HoleFillingElement>`` kernels of a PLUS configuration, in order.

    ``plus_config`` is a path or a :class:`sono3d.io.PlusConfig`, whose ``hole_filling`` holds the
    elements' attributes as text; they are read as PLUS reads them: ``Type``; ``Size``, ``Stdev``,
    ``MinimumKnownVoxelsRatio``; ``StickLengthLimit``, ``NumberOfSticksToUse``. An unknown ``Type``
    or a malformed number raises :class:`FileFormatError`.
    """
    cfg = _plus(plus_config)
    path = cfg.path
    kernels = []
    for el in cfg.hole_filling:
        kind = el.get("Type", "").upper()
        if kind not in _PLUS_KERNELS:
            raise FileFormatError(f"{path}: unknown HoleFillingElement Type {kind!r}")
        try:
            if kind == "STICK":
                kernels.append(HoleKernel("stick", stick_length=int(el.get("StickLengthLimit", 9)),
                                          n_sticks=int(el.get("NumberOfSticksToUse", 1))))
            else:
                kernels.append(HoleKernel(_PLUS_KERNELS[kind], size=int(el.get("Size", 3)),
                                          stdev=float(el.get("Stdev", 1.0)),
                                          min_ratio=float(el.get("MinimumKnownVoxelsRatio", 0.5))))
        except (ValueError, InputError) as exc:
            raise FileFormatError(f"{path}: bad HoleFillingElement {kind}: {exc}") from None
    return tuple(kernels)
