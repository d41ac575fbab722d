"""Classic freehand compounding: paste tracked 2D frames into a voxel grid, then fill the holes.

This is the baseline the field knows from the PLUS toolkit's volume reconstructor
(``vtkPlusPasteSliceIntoVolume`` followed by ``vtkPlusFillHolesInVolume``), re-implemented as compiled
loops (numba) in PLUS's order; hole filling visits only the holes within a kernel's reach of data:

1. **Clipping.** Only the pixels inside the clip rectangle, the PLUS fan and the sweep's
   :class:`~sono3d.types.Sector` are pasted.
2. **Splatting.** Every kept pixel goes to continuous voxel coordinates through
   ``inv(grid_affine) @ image_to_world``. *Nearest*: it lands in the voxel it rounds to.
   *Linear*: it is spread over the eight surrounding voxels with trilinear weights (PLUS skips a
   pixel whose eight neighbours are not all inside the grid; so do we).
3. **Compounding.** *Mean*: weighted mean of all contributions (weights 1 or trilinear).
   *Max*: the brightest contribution. *Latest*: the contribution of the last frame (ties inside a
   frame go to the last pixel in raster order). With linear splatting, max and latest only touch
   the neighbours whose trilinear weight is at least 1/8, as PLUS does.
4. **Hole filling.** Voxels that received nothing are filled by the first kernel (in the order
   given) that succeeds: Gaussian, Gaussian weighted by the accumulation buffer, inverse distance,
   nearest neighbour (all require more than ``min_ratio`` of the ``size^3`` cube to be known) or
   sticks (linear interpolation between the nearest recorded voxels on either side along 13
   directions). Kernels read only originally recorded voxels (one pass, like PLUS). Holes farther
   than ``max_hole_mm / 2`` from any recorded voxel are left empty.

Differences from PLUS, on purpose: values are float32 (PLUS rounds to the input pixel type after
every pixel), accumulation weights are unbounded (PLUS saturates its 16-bit buffer after 255 full
pixels per voxel), and under max compounding a voxel hit only by black pixels counts as recorded.

The grid is either given (origin, shape, spacing, e.g. from a PLUS configuration) or the bounding
box of all clipped pixels, aligned with the RAS axes or, for PLUS data, with the LPS-labelled
``Reference`` axes (``grid_axes="lps"``) so that voxel centres coincide with PLUS's own output.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numba
import numpy as np
from scipy import ndimage

from sono3d.errors import FileFormatError, InputError
from sono3d.types import Sweep, Volume

__all__ = [
    "COMPOUNDING_MODES",
    "HOLE_KERNELS",
    "INTERPOLATION_METHODS",
    "CompoundConfig",
    "CompoundResult",
    "FanClip",
    "HoleKernel",
    "clip_mask",
    "compare_volumes",
    "compound_sweep",
    "evaluate_holdout",
    "fill_holes",
    "holdout_split",
    "output_grid",
    "read_plus_hole_filling",
    "read_plus_reconstruction",
    "splat_frames",
]

INTERPOLATION_METHODS = ("nearest", "linear")
COMPOUNDING_MODES = ("mean", "max", "latest")
HOLE_KERNELS = ("gaussian", "gaussian_accumulation", "inverse_distance", "nearest", "stick")

# PLUS stores accumulation as 16-bit fixed point with 256 per full pixel; a voxel whose rounded
# accumulation is 0 counts as a hole, i.e. total trilinear weight below 1/512.
_MIN_ACCUMULATION = 0.5 / 256.0
# Trilinear neighbours lighter than this are not touched by max / latest compounding (PLUS).
_MIN_CORNER_WEIGHT = 0.125
# The 13 stick directions of vtkPlusFillHolesInVolume (one of each +/- pair).
_STICK_DIRECTIONS = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, -1, 0], [1, 0, -1],
     [0, 1, -1], [1, 1, 1], [-1, 1, 1], [1, -1, 1], [-1, -1, 1]], dtype=np.int64)
_MAX_VOXELS = 400_000_000
_LPS_AXES = np.diag([-1.0, -1.0, 1.0])


# --------------------------------------------------------------------------------------------
# options


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


@dataclass
class CompoundResult:
    """What :func:`compound_sweep` returns.

    Attributes
    ----------
    volume : Volume
        Compounded grey levels (float32, 0 where nothing was recorded or filled), RAS affine.
    filled : ndarray of bool, shape (I, J, K)
        Voxels that hold data: recorded by a pixel or filled by a kernel.
    accumulation : ndarray of float32, shape (I, J, K)
        Summed splatting weights per voxel (1 per nearest-neighbour pixel, trilinear weights
        otherwise); 0 for holes, including filled ones.
    stats : dict
        Counts and timings: frames, pixels pasted and outside, grid shape, recorded and filled
        fractions, seconds per stage.
    """

    volume: Volume
    filled: np.ndarray
    accumulation: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# PLUS configuration


def read_plus_reconstruction(plus_config: "str | Path | Any") -> dict[str, Any]:
    """:class:`CompoundConfig` fields from a PLUS configuration's ``<VolumeReconstruction>``.

    Output spacing, origin + extent, clip rectangle and fan come from
    :func:`sono3d.io.read_plus_config`; ``Interpolation``, ``CompoundingMode`` (or the older
    ``Compounding`` / ``Calculation``), ``PixelRejectionThreshold`` (0-255, rescaled to [0, 1]) and
    ``FillHoles`` from its raw attributes; the ``<HoleFilling>`` kernels (which it does not parse)
    from :func:`read_plus_hole_filling`. The grid follows the ``Reference`` axes
    (``grid_axes="lps"``), the sweep's own sector is not used.

    Parameters
    ----------
    plus_config : str, Path or sono3d.io.PlusConfig

    Raises
    ------
    FileFormatError
        Unreadable XML, malformed numbers or hole-filling elements.
    """
    from sono3d.io import PlusConfig, read_plus_config

    cfg = plus_config if isinstance(plus_config, PlusConfig) else read_plus_config(plus_config)
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
    kernels = read_plus_hole_filling(cfg.path)
    if kernels:
        out["kernels"] = kernels
    elif out["fill_holes"]:
        raise FileFormatError(f"{cfg.path}: FillHoles is ON but <HoleFilling> has no HoleFillingElement")
    return out


_PLUS_KERNELS = {"GAUSSIAN": "gaussian", "GAUSSIAN_ACCUMULATION": "gaussian_accumulation",
                 "DISTANCE_WEIGHT_INVERSE": "inverse_distance", "NEAREST_NEIGHBOR": "nearest", "STICK": "stick"}


def read_plus_hole_filling(xml_path: str | Path) -> tuple[HoleKernel, ...]:
    """The ``<HoleFilling>/<HoleFillingElement>`` kernels of a PLUS configuration, in order.

    Attributes as PLUS reads them: ``Type``; ``Size``, ``Stdev``, ``MinimumKnownVoxelsRatio``;
    ``StickLengthLimit``, ``NumberOfSticksToUse``.
    """
    import xml.etree.ElementTree as ET

    path = Path(xml_path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise FileFormatError(f"{path}: cannot read the PLUS configuration ({exc})") from None
    kernels = []
    for el in root.iter("HoleFillingElement"):
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


# --------------------------------------------------------------------------------------------
# clipping and the output grid


def clip_mask(shape: tuple[int, int], config: CompoundConfig, sector: Any = None,
              spacing_mm: tuple[float, float] | None = None) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the pixels that are pasted (clip rectangle, fan, sector)."""
    H, W = shape
    mask = np.ones((H, W), dtype=bool)
    if config.clip_rectangle is not None:
        c0, r0, w, h = (int(v) for v in config.clip_rectangle)
        # PLUS's GetClipExtent: floor(origin + size) is included.
        mask[:] = False
        mask[max(r0, 0):min(r0 + h, H - 1) + 1, max(c0, 0):min(c0 + w, W - 1) + 1] = True
    if config.fan is not None:
        fan = config.fan
        rows, cols = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
        x = cols - fan.origin_px[0]
        y = rows - fan.origin_px[1]
        lo, hi = sorted(math.tan(math.radians(v)) for v in fan.angles_deg)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = x / y
        r2 = x * x + y * y
        mask &= (y > 0) & (ratio >= lo) & (ratio <= hi)
        mask &= (r2 >= fan.radius_px[0] ** 2) & (r2 <= fan.radius_px[1] ** 2)
    if config.use_sector and sector is not None:
        from sono3d.geometry.sector import sector_mask

        if spacing_mm is None:
            raise InputError("sector clipping needs the pixel spacing")
        mask &= sector_mask(sector, (H, W), spacing_mm)
    return mask


def _axes(config: CompoundConfig) -> np.ndarray:
    return np.eye(3) if config.grid_axes == "ras" else _LPS_AXES


def output_grid(sweep: Sweep, config: CompoundConfig, mask: np.ndarray | None = None
                ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The output grid: ``(affine (4, 4), shape (I, J, K))``.

    From ``config.grid_origin_mm`` / ``grid_shape`` when given; otherwise the bounding box (along
    ``config.grid_axes``) of every clipped pixel of every frame, with voxel (0, 0, 0) on its minimum
    corner and ``ceil(extent / spacing) + 1`` voxels per axis (the rule of current PLUS; the
    shared spine-phantom reference, from an older PLUS, has one voxel fewer per axis).
    """
    M = _poses(sweep)
    R = _axes(config)
    sp = config.spacing
    if config.grid_origin_mm is not None:
        q0 = np.asarray(config.grid_origin_mm, dtype=np.float64)
        shape = tuple(int(v) for v in config.grid_shape)  # type: ignore[union-attr]
    else:
        if mask is None:
            mask = clip_mask(sweep.shape, config, sweep.sector, sweep.spacing_mm)
        if not mask.any():
            raise InputError("the clipping (rectangle, fan, sector) leaves no pixel of the frames")
        # The hull of an affine image of the mask is spanned by its border pixels.
        border = mask & ~ndimage.binary_erosion(mask, border_value=0)
        rows, cols = np.nonzero(border)
        pts = (M[:, None, :3, 0] * cols[None, :, None] + M[:, None, :3, 1] * rows[None, :, None]
               + M[:, None, :3, 3]).reshape(-1, 3)
        q = pts @ R  # coordinates along the grid axes (R is orthonormal)
        q0 = q.min(axis=0)
        extent = q.max(axis=0) - q0
        # Tolerate round-off so an extent of exactly n voxels gives n + 1, not n + 2.
        shape = tuple(int(v) + 1 for v in np.ceil(extent / sp - 1e-9))
    n = int(np.prod(np.asarray(shape, dtype=np.int64)))
    if n > _MAX_VOXELS:
        raise InputError(
            f"output grid {shape[0]}x{shape[1]}x{shape[2]} ({n / 1e6:.0f} M voxels) is too large; "
            f"use a larger spacing than {config.spacing_mm} mm"
        )
    affine = np.eye(4)
    affine[:3, :3] = R @ np.diag(sp)
    affine[:3, 3] = R @ q0
    return affine, shape  # type: ignore[return-value]


def _poses(sweep: Sweep) -> np.ndarray:
    if sweep.image_to_world is None:
        raise InputError("the sweep has no poses (image_to_world); compounding needs a tracked sweep")
    return np.asarray(sweep.image_to_world, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# splatting


_MODE_CODES = {"mean": 0, "max": 1, "latest": 2}


@numba.njit(cache=True, nogil=True)
def _splat_kernel(frames, A, rows, cols, dims, linear, mode, threshold, acc, out):  # noqa: ANN001, ANN202
    """Paste every masked pixel of every frame, in acquisition then raster order (PLUS's loop).

    ``acc`` and ``out`` are flat float64 grids: summed weights and, for mean, summed
    ``weight * value``; for max / latest, the current value. Returns (pasted, considered).
    """
    n_frames = frames.shape[0]
    n_pix = rows.shape[0]
    d0, d1, d2 = dims[0], dims[1], dims[2]
    pasted = 0
    considered = 0
    for n in range(n_frames):
        a = A[n]
        for p in range(n_pix):
            r = rows[p]
            c = cols[p]
            v = frames[n, r, c]
            if v < threshold:
                continue
            considered += 1
            x = a[0, 0] * c + a[0, 1] * r + a[0, 3]
            y = a[1, 0] * c + a[1, 1] * r + a[1, 3]
            z = a[2, 0] * c + a[2, 1] * r + a[2, 3]
            if not linear:
                i = int(np.floor(x + 0.5))
                j = int(np.floor(y + 0.5))
                k = int(np.floor(z + 0.5))
                if i < 0 or j < 0 or k < 0 or i >= d0 or j >= d1 or k >= d2:
                    continue
                pasted += 1
                f = (i * d1 + j) * d2 + k
                acc[f] += 1.0
                if mode == 0:
                    out[f] += v
                elif mode == 1:
                    if acc[f] == 1.0 or v > out[f]:
                        out[f] = v
                else:
                    out[f] = v
                continue
            fi = np.floor(x)
            fj = np.floor(y)
            fk = np.floor(z)
            tx = x - fi
            ty = y - fj
            tz = z - fk
            i0 = int(fi)
            j0 = int(fj)
            k0 = int(fk)
            # PLUS's bounds check: every neighbour with a nonzero weight must be inside the grid.
            i1 = i0 + (1 if tx != 0.0 else 0)
            j1 = j0 + (1 if ty != 0.0 else 0)
            k1 = k0 + (1 if tz != 0.0 else 0)
            if i0 < 0 or j0 < 0 or k0 < 0 or i1 >= d0 or j1 >= d1 or k1 >= d2:
                continue
            pasted += 1
            for bi in range(2):
                wi = tx if bi else 1.0 - tx
                for bj in range(2):
                    wj = ty if bj else 1.0 - ty
                    for bk in range(2):
                        w = wi * wj * (tz if bk else 1.0 - tz)
                        if w == 0.0:
                            continue
                        if mode != 0 and w < _MIN_CORNER_WEIGHT:
                            continue
                        f = ((i0 + bi) * d1 + (j0 + bj)) * d2 + (k0 + bk)
                        first = acc[f] == 0.0
                        acc[f] += w
                        if mode == 0:
                            out[f] += w * v
                        elif mode == 1:
                            if first or v > out[f]:
                                out[f] = v
                        else:
                            out[f] = v
    return pasted, considered


def splat_frames(frames: np.ndarray, pixel_to_voxel: np.ndarray, mask: np.ndarray, shape: tuple[int, int, int],
                 method: str = "linear", compounding: str = "mean", pixel_threshold: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Paste frames into a voxel grid (compiled with numba; one pass over the pixels).

    Parameters
    ----------
    frames : ndarray, shape (N, H, W)
        Grey levels, in acquisition order (it matters for ``"latest"``).
    pixel_to_voxel : ndarray, shape (N, 4, 4)
        Pixel ``(col, row, 0, 1)`` to continuous voxel index ``(i, j, k, 1)``.
    mask : ndarray of bool, shape (H, W)
        Pixels to paste.
    shape : (I, J, K)
        Grid size.
    method, compounding : str
        See :class:`CompoundConfig`.
    pixel_threshold : float, optional
        Skip pixels darker than this.

    Returns
    -------
    values : ndarray, float32, shape (I, J, K)
        Compounded values, 0 where nothing was recorded.
    accumulation : ndarray, float32, shape (I, J, K)
        Summed weights, 0 where not recorded (below 1/512: PLUS rounds its 8.8 fixed-point
        accumulation buffer to 0 there).
    counts : dict
        ``pixels`` pasted into the grid and ``outside`` (kept by the mask but off the grid).
    """
    if method not in INTERPOLATION_METHODS:
        raise InputError(f"unknown interpolation {method!r}")
    if compounding not in COMPOUNDING_MODES:
        raise InputError(f"unknown compounding {compounding!r}")
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    A = np.ascontiguousarray(pixel_to_voxel, dtype=np.float64)
    if A.shape != (frames.shape[0], 4, 4):
        raise InputError(f"need one 4x4 matrix per frame, got {A.shape} for {frames.shape[0]} frames")
    dims = np.asarray(shape, dtype=np.int64)
    nvox = int(np.prod(dims))
    rows, cols = (np.ascontiguousarray(v, dtype=np.int64) for v in np.nonzero(mask))
    acc = np.zeros(nvox, dtype=np.float64)
    out = np.zeros(nvox, dtype=np.float64)
    threshold = -np.inf if pixel_threshold is None else float(pixel_threshold)
    pasted, considered = _splat_kernel(frames, A, rows, cols, dims, method == "linear",
                                       _MODE_CODES[compounding], threshold, acc, out)
    recorded = acc >= _MIN_ACCUMULATION
    values = np.zeros(nvox, dtype=np.float32)
    if compounding == "mean":
        values[recorded] = out[recorded] / acc[recorded]
    else:
        values[recorded] = out[recorded]
    acc[~recorded] = 0.0
    counts = {"pixels": int(pasted), "outside": int(considered - pasted)}
    return values.reshape(shape), acc.astype(np.float32).reshape(shape), counts


# --------------------------------------------------------------------------------------------
# hole filling


def _kernel_weights(kernel: HoleKernel) -> np.ndarray:
    """The ``(size, size, size)`` weights of a neighbourhood kernel, as PLUS tabulates them."""
    r = np.arange(kernel.size, dtype=np.float64) - (kernel.size - 1) / 2
    d2 = r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2
    if kernel.kind.startswith("gaussian"):
        return np.exp(-d2 / (2.0 * kernel.stdev**2))  # PLUS's normalising factor cancels out
    if kernel.kind == "inverse_distance":
        return np.divide(1.0, np.sqrt(d2), out=np.zeros_like(d2), where=d2 > 0)
    return np.ones_like(d2)


@numba.njit(cache=True, nogil=True)
def _neighbourhood_kernel(values, known, weight, use_weight, pts, kern, min_count, nearest, out, ok):  # noqa: ANN001, ANN202
    """PLUS's neighbourhood kernels at the hole voxels ``pts`` (M, 3); results in ``out``/``ok`` (M,).

    Weighted mean of the known voxels of the cube (``kern`` times ``weight`` when ``use_weight``);
    ``nearest``: plain mean over the smallest cube (radius 1, 2, ...) that holds a known voxel.
    Either way the voxel counts only if more than ``min_count`` known voxels were found.
    """
    d0, d1, d2 = values.shape
    h = kern.shape[0] // 2
    for m in range(pts.shape[0]):
        x, y, z = pts[m, 0], pts[m, 1], pts[m, 2]
        r_first = 1 if nearest else h
        for r in range(r_first, h + 1):
            cnt = 0
            sw = 0.0
            swv = 0.0
            for a in range(max(x - r, 0), min(x + r, d0 - 1) + 1):
                for b in range(max(y - r, 0), min(y + r, d1 - 1) + 1):
                    for c in range(max(z - r, 0), min(z + r, d2 - 1) + 1):
                        if known[a, b, c]:
                            cnt += 1
                            w = 1.0 if nearest else kern[a - x + h, b - y + h, c - z + h]
                            if use_weight:
                                w *= weight[a, b, c]
                            sw += w
                            swv += w * values[a, b, c]
            if cnt > 0:
                if cnt > min_count and sw > 0.0:
                    out[m] = swv / sw
                    ok[m] = True
                break


def _near(known: np.ndarray, radius: int) -> np.ndarray:
    """Voxels with a known voxel within ``radius`` along every axis (a cube), as bool."""
    return ndimage.maximum_filter(known.view(np.uint8), size=2 * radius + 1, mode="constant", cval=0) > 0


def _reach(kernel: HoleKernel) -> int:
    """How far (voxels, along every axis) a kernel looks for known voxels."""
    # A stick's nearer end is at most L - 2 steps away (the whole stick spans at most L voxels).
    return kernel.stick_length - 2 if kernel.kind == "stick" else (kernel.size - 1) // 2


def _kernel_fill(values: np.ndarray, known: np.ndarray, pts: np.ndarray, kernel: HoleKernel,
                 accumulation: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Values ``(M,)`` and success ``(M,)`` of one kernel at the hole voxels ``pts`` ``(M, 3)``."""
    out = np.zeros(pts.shape[0], dtype=np.float64)
    ok = np.zeros(pts.shape[0], dtype=np.bool_)
    if kernel.kind == "stick":
        _stick_kernel(values, known, pts, _STICK_DIRECTIONS, int(kernel.stick_length), int(kernel.n_sticks), out, ok)
        return out, ok
    use_weight = kernel.kind == "gaussian_accumulation"
    if use_weight and accumulation is None:
        raise InputError("the gaussian_accumulation kernel needs the accumulation buffer")
    weight = (np.ascontiguousarray(accumulation, dtype=np.float32) if use_weight
              else np.ones((1, 1, 1), dtype=np.float32))
    _neighbourhood_kernel(values, known, weight, use_weight, pts, _kernel_weights(kernel),
                          float(kernel.min_ratio * kernel.size**3), kernel.kind == "nearest", out, ok)
    return out, ok


@numba.njit(cache=True, nogil=True)
def _stick_kernel(values, known, pts, directions, L, n_sticks, out, ok):  # noqa: ANN001, ANN202
    """PLUS's stick filling for the voxels ``pts`` (M, 3); results in ``out`` / ``ok`` (M,)."""
    d0, d1, d2 = values.shape
    n_dir = directions.shape[0]
    W = np.zeros(n_dir)
    V = np.zeros(n_dir)
    for m in range(pts.shape[0]):
        x, y, z = pts[m, 0], pts[m, 1], pts[m, 2]
        for n in range(n_dir):
            dx, dy, dz = directions[n, 0], directions[n, 1], directions[n, 2]
            W[n] = 0.0
            fwd = 0
            fval = 0.0
            for j in range(1, L):  # forward: at most L - 1 steps
                a, b, c = x + j * dx, y + j * dy, z + j * dz
                if a < 0 or b < 0 or c < 0 or a >= d0 or b >= d1 or c >= d2:
                    break
                if known[a, b, c]:
                    fwd = j
                    fval = values[a, b, c]
                    break
            if fwd == 0:
                continue
            rvs = 0
            rval = 0.0
            for j in range(1, L - fwd):  # the whole stick spans at most L voxels
                a, b, c = x - j * dx, y - j * dy, z - j * dz
                if a < 0 or b < 0 or c < 0 or a >= d0 or b >= d1 or c >= d2:
                    break
                if known[a, b, c]:
                    rvs = j
                    rval = values[a, b, c]
                    break
            if rvs == 0:
                continue
            total = fwd + rvs + 1.0
            w_fwd = (rvs + 1.0) / total  # PLUS's weighting (not exactly linear interpolation)
            W[n] = 1.0 / (total * np.sqrt(dx * dx + dy * dy + dz * dz))
            V[n] = w_fwd * fval + (1.0 - w_fwd) * rval
        used = 0
        sw = 0.0
        swv = 0.0
        while used < n_sticks:
            best = 0.0
            for n in range(n_dir):
                if W[n] > best:
                    best = W[n]
            if best == 0.0:
                break
            for n in range(n_dir):  # every stick tied for the shortest counts
                if W[n] == best:
                    sw += W[n]
                    swv += W[n] * V[n]
                    used += 1
                    W[n] = 0.0
        if sw > 0.0:
            out[m] = swv / sw
            ok[m] = True


def fill_holes(values: np.ndarray, recorded: np.ndarray, kernels: tuple[HoleKernel, ...] | list[HoleKernel],
               spacing_mm: float | tuple[float, float, float] = 1.0, max_hole_mm: float | None = None,
               accumulation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fill unrecorded voxels, PLUS-style (one pass; kernels read recorded voxels only).

    Parameters
    ----------
    values : ndarray, shape (I, J, K)
        Compounded values (anything where not recorded).
    recorded : ndarray of bool, shape (I, J, K)
        Voxels that received data.
    kernels : sequence of HoleKernel
        Tried in order; the first that succeeds for a voxel sets it.
    spacing_mm : float or (3,)
        Voxel edges, for ``max_hole_mm``.
    max_hole_mm : float, optional
        Only voxels within ``max_hole_mm / 2`` of a recorded voxel are filled.
    accumulation : ndarray, shape (I, J, K), optional
        Splatting weights (needed by ``gaussian_accumulation``).

    Returns
    -------
    values : ndarray, float32, shape (I, J, K)
        Recorded voxels unchanged, filled ones set, the rest 0.
    filled : ndarray of bool
        Recorded or filled.
    """
    v = np.asarray(values, dtype=np.float32)
    known = np.ascontiguousarray(recorded, dtype=bool)
    if v.shape != known.shape or v.ndim != 3:
        raise InputError(f"values {v.shape} and recorded mask {known.shape} must be the same 3D shape")
    v = np.where(known, v, np.float32(0.0))
    todo = ~known
    if max_hole_mm is not None and known.any():
        sp = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
        dist = ndimage.distance_transform_edt(todo, sampling=sp)
        todo &= dist <= max_hole_mm / 2 + 1e-9
    out = v.copy()
    filled = known.copy()
    if known.any() and kernels:
        # Only holes with a known voxel within some kernel's reach can be filled; visit just those.
        cand = np.argwhere(todo & _near(known, max(_reach(k) for k in kernels)))
        still = np.ones(cand.shape[0], dtype=bool)
        for kernel in kernels:
            sel = np.flatnonzero(still)
            if sel.size == 0:
                break
            fv, ok = _kernel_fill(v, known, cand[sel], kernel, accumulation)
            i, j, k = cand[sel[ok]].T
            out[i, j, k] = fv[ok]
            filled[i, j, k] = True
            still[sel[ok]] = False
    return out, filled


# --------------------------------------------------------------------------------------------
# the pipeline


def compound_sweep(sweep: Sweep, config: CompoundConfig | None = None, *,
                   grid: tuple[np.ndarray, tuple[int, int, int]] | None = None) -> CompoundResult:
    """Compound a tracked sweep into a voxel volume with known poses.

    Parameters
    ----------
    sweep : Sweep
        Frames ``(N, H, W)`` with ``image_to_world`` ``(N, 4, 4)``.
    config : CompoundConfig, optional
        Defaults to ``CompoundConfig()`` (linear, mean, hole filling on, 0.5 mm).
    grid : (affine (4, 4), shape (I, J, K)), optional
        Use this grid instead of the one ``config`` defines (e.g. the grid of a larger sweep).

    Returns
    -------
    CompoundResult
        The volume (RAS affine, float32), the filled mask, the accumulation buffer and stats.

    Raises
    ------
    InputError
        A sweep without poses, clipping that keeps no pixel, or poses that put no pixel inside the grid.
    """
    config = config or CompoundConfig()
    t0 = time.perf_counter()
    M = _poses(sweep)
    mask = clip_mask(sweep.shape, config, sweep.sector, sweep.spacing_mm)
    if not mask.any():
        raise InputError("the clipping (rectangle, fan, sector) leaves no pixel of the frames")
    if grid is None:
        affine, shape = output_grid(sweep, config, mask)
    else:
        affine = np.asarray(grid[0], dtype=np.float64)
        shape = tuple(int(v) for v in grid[1])  # type: ignore[assignment]
        if affine.shape != (4, 4) or len(shape) != 3 or min(shape) < 1:
            raise InputError("grid must be (4x4 affine, (I, J, K) shape)")
    A = np.linalg.inv(affine) @ M
    values, acc, counts = splat_frames(sweep.frames, A, mask, shape, config.method, config.compounding,
                                       config.pixel_threshold)
    if counts["pixels"] == 0:
        raise InputError(
            f"no pixel of the sweep falls inside the output grid {shape[0]}x{shape[1]}x{shape[2]}; "
            "check the poses and the grid origin / extent"
        )
    recorded = acc > 0
    t1 = time.perf_counter()
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if config.fill_holes and config.kernels:
        values, filled = fill_holes(values, recorded, config.kernels, spacing, config.max_hole_mm, acc)
    else:
        filled = recorded
    t2 = time.perf_counter()
    nvox = int(np.prod(shape))
    stats = {
        "frames": sweep.n_frames,
        "pixels_per_frame": int(mask.sum()),
        "pixels_pasted": counts["pixels"],
        "pixels_outside": counts["outside"],
        "shape": [int(v) for v in shape],
        "spacing_mm": [float(v) for v in spacing],
        "recorded_fraction": float(recorded.sum() / nvox),
        "filled_fraction": float(filled.sum() / nvox),
        "holes_filled": int(filled.sum() - recorded.sum()),
        "method": config.method,
        "compounding": config.compounding,
        "seconds_splat": t1 - t0,
        "seconds_fill": t2 - t1,
        "seconds": t2 - t0,
    }
    meta = {"kind": "compounded", "method": config.method, "compounding": config.compounding,
            "source": sweep.meta.get("source")}
    return CompoundResult(Volume(values, affine, meta), filled, acc, stats)


# --------------------------------------------------------------------------------------------
# evaluation


def compare_volumes(a: Volume, b: Volume, mask_a: np.ndarray | None = None, mask_b: np.ndarray | None = None,
                    order: int = 1) -> dict[str, float]:
    """Agreement of two volumes in world coordinates, on ``a``'s grid.

    ``b`` (and ``mask_b``) are resampled onto ``a``'s voxel centres through the affines
    (trilinear for values, nearest for the mask; outside ``b`` counts as empty).

    Parameters
    ----------
    a, b : Volume
    mask_a, mask_b : ndarray of bool, optional
        Voxels holding data (e.g. :attr:`CompoundResult.filled`); default: nonzero voxels.
    order : int
        Interpolation order for ``b``'s values.

    Returns
    -------
    dict
        ``ncc``: normalised cross-correlation over the voxels filled in both; ``ncc_union``: over
        the voxels filled in either; ``dice``: overlap of the two filled masks; ``n_a``, ``n_b``,
        ``n_both``: voxel counts on ``a``'s grid. NCC ignores grey scales (a PLUS ``uint8``
        volume compares directly with a [0, 1] one).
    """
    from sono3d.metrics import dice, ncc

    A = np.asarray(a.array, dtype=np.float64)
    ma = A != 0 if mask_a is None else np.asarray(mask_a, dtype=bool)
    if ma.shape != A.shape:
        raise InputError(f"mask of the first volume has shape {ma.shape}, not {A.shape}")
    mb_src = np.asarray(b.array) != 0 if mask_b is None else np.asarray(mask_b, dtype=bool)
    if mb_src.shape != b.shape:
        raise InputError(f"mask of the second volume has shape {mb_src.shape}, not {b.shape}")
    T = np.linalg.inv(b.affine) @ a.affine  # a-voxel to b-voxel
    ijk = np.indices(A.shape, dtype=np.float64).reshape(3, -1)
    coords = T[:3, :3] @ ijk + T[:3, 3:4]
    bv = ndimage.map_coordinates(np.asarray(b.array, dtype=np.float64), coords, order=order, mode="constant",
                                 cval=0.0).reshape(A.shape)
    mb = ndimage.map_coordinates(mb_src.astype(np.float32), coords, order=0, mode="constant",
                                 cval=0.0).reshape(A.shape) > 0.5
    both = ma & mb
    either = ma | mb
    out = {
        "n_a": int(ma.sum()),
        "n_b": int(mb.sum()),
        "n_both": int(both.sum()),
        "dice": float(dice(ma, mb)) if either.any() else math.nan,
        "ncc": float(ncc(A, bv, both)) if both.any() else math.nan,
        "ncc_union": float(ncc(A, bv, either)) if either.any() else math.nan,
    }
    return out


def holdout_split(n_frames: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out frame indices: every ``k``-th frame is held out.

    The held-out frames are ``k // 2, k // 2 + k, ...`` so that both ends of the sweep stay in
    training and every held-out plane lies between training planes.
    """
    if k < 2:
        raise InputError(f"hold-out step k must be at least 2, got {k}")
    idx = np.arange(n_frames)
    test = idx[(idx % k) == (k // 2)]
    if test.size == 0 or test.size == n_frames:
        raise InputError(f"a sweep of {n_frames} frames is too short to hold out every {k}-th frame")
    train = idx[(idx % k) != (k // 2)]
    return train, test


def evaluate_holdout(sweep: Sweep, k: int = 5, config: CompoundConfig | None = None) -> dict[str, Any]:
    """Held-out-frame accuracy of compounding: the baseline the Gaussian sweep engine is scored against.

    Compounds the training frames of :func:`holdout_split` (hole filling as in ``config``, on by
    default) on the grid of the whole sweep, re-slices the volume on the held-out planes
    (trilinear, :func:`sono3d.simulate.slicing.sample_planes`) and compares with the real
    held-out frames inside the clip mask.

    Returns
    -------
    dict
        Means over held-out frames of ``l1``, ``l2`` (mean squared error), ``ssim``, ``psnr`` (dB,
        data range 1) and ``ncc`` (:func:`sono3d.sweep.evaluate.frame_metrics`, the definitions the
        Gaussian engine reports), ``frames``; ``coverage`` (fraction of masked held-out pixels that
        fall on filled voxels); ``n_train``, ``n_test``, ``k``; ``seconds`` (compounding).
    """
    from sono3d.simulate.slicing import sample_planes
    from sono3d.sweep.evaluate import frame_metrics

    config = config or CompoundConfig()
    train, test = holdout_split(sweep.n_frames, k)
    mask = clip_mask(sweep.shape, config, sweep.sector, sweep.spacing_mm)
    grid = output_grid(sweep, config, mask)
    result = compound_sweep(sweep.subset(train), config, grid=grid)
    M_test = _poses(sweep)[test]
    pred = sample_planes(result.volume, M_test, sweep.shape, order=1, mask=mask)
    cover = sample_planes(Volume(result.filled.astype(np.float32), result.volume.affine), M_test, sweep.shape,
                          order=0, mask=mask)
    out: dict[str, Any] = frame_metrics(pred, sweep.frames[test], mask)
    out.update({"coverage": float(cover[:, mask].mean()), "n_train": int(train.size), "n_test": int(test.size),
                "k": int(k), "seconds": result.stats["seconds"]})
    return out
