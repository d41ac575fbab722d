"""The core data types that flow through every engine.

See ``docs/conventions.md`` for units and frames. In short: millimetres, RAS world frame,
pixel index ``(col, row)`` maps through a 4x4 ``image_to_world`` matrix applied to
``(col, row, 0, 1)``; volumes carry a 4x4 ``affine`` from voxel index ``(i, j, k, 1)`` to RAS mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sono3d.errors import InputError

__all__ = ["PHASES", "COMPACT_FRAME_PIXELS", "Sector", "Sweep", "Volume", "frame_dtype"]

# The two cardiac phases, end-diastole and end-systole, in the order every heart array, file and
# table of sono3d uses (arrays indexed ``[phase]``, files ``ed.vtp`` / ``es.vtp``).
PHASES = ("ed", "es")

#: A sweep read from a file with more pixels than this (2^28: 1 GiB as float32, e.g. 1,024 frames
#: of 512x512) keeps its frames as float16: half the memory, and float16's 11-bit significand still
#: separates every level of an 8-bit recording (rounding below 1/8 of a level). Smaller sweeps stay
#: float32, bit for bit as before.
COMPACT_FRAME_PIXELS = 1 << 28


def frame_dtype(n_pixels: int) -> np.dtype:
    """The dtype a reader stores ``n_pixels`` frame pixels in: float32, or float16 beyond
    :data:`COMPACT_FRAME_PIXELS`."""
    return np.dtype(np.float16 if int(n_pixels) > COMPACT_FRAME_PIXELS else np.float32)


@dataclass(frozen=True)
class Sector:
    """Fan (sector) geometry of a phased or curvilinear probe, in one image's pixel frame.

    Parameters
    ----------
    apex_px : (float, float)
        ``(col, row)`` of the fan apex in pixels. For a curvilinear probe the apex lies above
        the image (negative row); for a phased array it sits on the top row.
    angle_deg : float
        Full opening angle of the fan in degrees, symmetric about the central beam.
    radius_mm : (float, float)
        ``(r_min, r_max)``: distances from the apex in mm between which echoes are imaged.
        ``r_min`` is the probe-face radius of a curvilinear probe (0 for a phased array).
    tilt_deg : float
        Rotation of the central beam from the +row (axial, downwards) direction towards +col.
    """

    apex_px: tuple[float, float]
    angle_deg: float
    radius_mm: tuple[float, float]
    tilt_deg: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 < self.angle_deg <= 360.0):
            raise InputError(f"sector opening angle must be in (0, 360] degrees, got {self.angle_deg}")
        r0, r1 = self.radius_mm
        if not (0.0 <= r0 < r1):
            raise InputError(f"sector radii must satisfy 0 <= r_min < r_max, got {self.radius_mm}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "apex_px": [float(v) for v in self.apex_px],
            "angle_deg": float(self.angle_deg),
            "radius_mm": [float(v) for v in self.radius_mm],
            "tilt_deg": float(self.tilt_deg),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sector":
        return cls(
            apex_px=tuple(float(v) for v in d["apex_px"]),  # type: ignore[arg-type]
            angle_deg=float(d["angle_deg"]),
            radius_mm=tuple(float(v) for v in d["radius_mm"]),  # type: ignore[arg-type]
            tilt_deg=float(d.get("tilt_deg", 0.0)),
        )


@dataclass
class Sweep:
    """A 2D ultrasound sweep: frames and, where known, where each frame lies in the world.

    Attributes
    ----------
    frames : ndarray, shape (N, H, W), float32 or float16
        Grey levels in [0, 1]. Row ``r`` runs down the image (away from the probe), column ``c``
        runs across it (lateral). float16 is kept as it is (readers use it for large sweeps, see
        :func:`frame_dtype`; consumers convert a batch of frames at a time); any other dtype
        becomes float32.
    image_to_world : ndarray, shape (N, 4, 4), float64, or None
        Per-frame matrix taking the pixel homogeneous vector ``(col, row, 0, 1)`` to RAS mm. Its
        upper-left 3x3 block is a rotation times ``diag(dx, dy, 1)`` (pixel spacing folded in).
        ``None`` when the sweep is untracked (sensorless reconstruction assumes poses).
    spacing_mm : (float, float)
        ``(dy, dx)``: row and column pixel spacing in mm.
    sector : Sector or None
        Fan geometry, if the image is a sector scan.
    meta : dict
        Free-form metadata: ``source`` (path), ``frame_times_s``, ``probe``, ...
    """

    frames: np.ndarray
    image_to_world: np.ndarray | None
    spacing_mm: tuple[float, float]
    sector: Sector | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        if frames.ndim != 3:
            raise InputError(f"sweep frames must have shape [N, H, W], got {frames.shape}")
        if frames.shape[0] == 0:
            raise InputError("sweep is empty: it has no frames")
        if frames.shape[1] < 2 or frames.shape[2] < 2:
            raise InputError(f"sweep frames are too small: {frames.shape[1]}x{frames.shape[2]} pixels")
        if frames.dtype != np.float16:
            frames = frames.astype(np.float32, copy=False)
        if not all(np.isfinite(frames[s:s + 64]).all() for s in range(0, frames.shape[0], 64)):
            raise InputError("sweep frames contain NaN or infinite values")
        self.frames = frames
        dy, dx = (float(v) for v in self.spacing_mm)
        if not (np.isfinite(dy) and np.isfinite(dx) and dy > 0 and dx > 0):
            raise InputError(f"pixel spacing must be positive and finite, got {self.spacing_mm}")
        self.spacing_mm = (dy, dx)
        if self.image_to_world is not None:
            m = np.asarray(self.image_to_world, dtype=np.float64)
            if m.shape != (frames.shape[0], 4, 4):
                raise InputError(
                    f"poses do not match frames: {frames.shape[0]} frames but image_to_world has shape {m.shape}"
                )
            if not np.all(np.isfinite(m)):
                raise InputError("poses contain NaN or infinite values")
            self.image_to_world = m

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of one frame in pixels."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def has_poses(self) -> bool:
        return self.image_to_world is not None

    def subset(self, index: np.ndarray | list[int] | slice) -> "Sweep":
        """A sweep made of some of the frames (poses and frame times follow)."""
        idx = np.arange(self.n_frames)[index]
        meta = dict(self.meta)
        if "frame_times_s" in meta and meta["frame_times_s"] is not None:
            meta["frame_times_s"] = list(np.asarray(meta["frame_times_s"])[idx])
        return replace(
            self,
            frames=self.frames[idx],
            image_to_world=None if self.image_to_world is None else self.image_to_world[idx],
            meta=meta,
        )


@dataclass
class Volume:
    """A scalar 3D image with its place in the world.

    Attributes
    ----------
    array : ndarray, shape (X, Y, Z)
        Voxel values, indexed ``[i, j, k]`` as nibabel does.
    affine : ndarray, shape (4, 4)
        Voxel index ``(i, j, k, 1)`` to RAS millimetres.
    meta : dict
        Free-form metadata (``source``, ``kind`` such as ``labels`` or ``bmode``).
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = np.asarray(self.array)
        if a.ndim != 3:
            raise InputError(f"volume array must have shape [X, Y, Z], got {a.shape}")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
            raise InputError("volume affine must be a finite 4x4 matrix")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise InputError("volume affine is singular: a voxel axis has zero length or lies in the plane of the "
                             "others (expected positive voxel spacing along three independent axes)")
        self.array = a
        self.affine = aff

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm along i, j, k."""
        s = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(s[0]), float(s[1]), float(s[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.array.shape)  # type: ignore[return-value]
