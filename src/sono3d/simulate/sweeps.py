"""Simulated sweeps with exact poses: transvaginal-like fans, translations, and perturbed fans.

A transvaginal probe is end-fire: its image plane contains the probe axis and the sector apex sits
at the probe tip. The probe aims from the tip at the uterus; a *sagittal* sweep starts in the
sagittal plane and rocks the probe left-right, a *transversal* one starts in the plane turned 90
degrees about the beam and rocks it anterior-posterior. Either way the planes fan about the image's
lateral direction through the tip (:func:`sono3d.geometry.fan_sweep_in_image`), from ``-span/2`` to
``+span/2`` (the sweep paper: -60 to +60 degrees).

Perturbed sweeps add what a hand does: per-frame angular jitter, non-uniform angular speed
(a smooth monotone warp of time), and tremor (smooth small rotations about the tip and
translations). The sweep's ``image_to_world`` holds the true poses; ``meta`` holds the nominal
(uniform) and true angles, so a sensorless method can be scored against the truth.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from sono3d.errors import InputError
from sono3d.geometry.fan import fan_sweep_in_image, rotate_about, translation_sweep, uniform_angles
from sono3d.geometry.planes import image_to_world_matrix
from sono3d.geometry.sector import sector_mask
from sono3d.geometry.transforms import rigid
from sono3d.simulate.bmode import BModeParams, bmode
from sono3d.simulate.slicing import sample_planes
from sono3d.types import Sector, Sweep, Volume

__all__ = ["SweepConfig", "SWEEP_PRESETS", "ProbePlacement", "probe_placement", "probe_base_pose",
           "frame_geometry", "fan_angles", "sweep_poses", "simulate_sweep"]


@dataclass(frozen=True)
class SweepConfig:
    """How to sweep and what the frames show.

    Attributes
    ----------
    kind : ``"fan"`` or ``"translation"``
    direction : ``"sagittal"`` or ``"transversal"``
        Orientation of the middle frame (see the module docstring).
    frames : int
        Number of frames (at least 2).
    span_deg : float
        Fan: total rotation (120 = -60..+60 degrees).
    pivot_offset_mm : float
        Fan: the pivot lies this far behind the probe tip along the beam (0: at the tip).
    length_mm : float
        Translation: total travel along the plane normal.
    size_px : int
        Frames are ``size_px x size_px`` pixels (square pixels covering the sector).
    sector_angle_deg, depth_mm : float
        Opening angle of the image sector and its depth from the probe tip.
    appearance : ``"labels"`` or ``"bmode"``
        ``labels`` samples the paper's label volume (exterior 0, interior 0.5, border 1);
        ``bmode`` samples the echogenicity volume and runs the B-mode model.
    order : int
        Interpolation order when sampling the volume (1 trilinear).
    jitter_deg : float
        Standard deviation of independent per-frame angle errors.
    speed_variation : float
        0 uniform; up to 0.9, amplitude of a smooth speed change over the sweep.
    tremor_deg, tremor_mm : float
        RMS of smooth hand tremor (rotation about the tip, translation), correlated over a few frames.
    frame_rate_hz : float
        For ``meta["frame_times_s"]``.
    seed : int
        One seed for the perturbations and the speckle.
    bmode : BModeParams
    """

    kind: Literal["fan", "translation"] = "fan"
    direction: Literal["sagittal", "transversal"] = "sagittal"
    frames: int = 100
    span_deg: float = 120.0
    pivot_offset_mm: float = 0.0
    length_mm: float = 60.0
    size_px: int = 256
    sector_angle_deg: float = 90.0
    depth_mm: float = 100.0
    appearance: Literal["labels", "bmode"] = "labels"
    order: int = 1
    jitter_deg: float = 0.0
    speed_variation: float = 0.0
    tremor_deg: float = 0.0
    tremor_mm: float = 0.0
    frame_rate_hz: float = 10.0
    seed: int = 0
    bmode: BModeParams = field(default_factory=BModeParams)

    def __post_init__(self) -> None:
        if self.kind not in ("fan", "translation"):
            raise InputError(f"sweep kind must be 'fan' or 'translation', got {self.kind!r}")
        if self.direction not in ("sagittal", "transversal"):
            raise InputError(f"sweep direction must be 'sagittal' or 'transversal', got {self.direction!r}")
        if self.appearance not in ("labels", "bmode"):
            raise InputError(f"appearance must be 'labels' or 'bmode', got {self.appearance!r}")
        if int(self.frames) != self.frames or self.frames < 2:
            raise InputError(f"a sweep needs at least 2 frames, got {self.frames}")
        if not (np.isfinite(self.span_deg) and 0 < self.span_deg <= 180):
            raise InputError(f"sweep span must be in (0, 180] degrees, got {self.span_deg}")
        if not (np.isfinite(self.pivot_offset_mm) and self.pivot_offset_mm >= 0):
            raise InputError(f"pivot offset must be >= 0 mm, got {self.pivot_offset_mm}")
        if not (np.isfinite(self.length_mm) and self.length_mm > 0):
            raise InputError(f"translation length must be positive, got {self.length_mm} mm")
        if int(self.size_px) != self.size_px or self.size_px < 8:
            raise InputError(f"frame size must be at least 8 pixels, got {self.size_px}")
        if not (np.isfinite(self.sector_angle_deg) and 0 < self.sector_angle_deg < 180):
            raise InputError(f"sector angle must be in (0, 180) degrees, got {self.sector_angle_deg}")
        if not (np.isfinite(self.depth_mm) and self.depth_mm > 0):
            raise InputError(f"sector depth must be positive, got {self.depth_mm} mm")
        for name in ("jitter_deg", "tremor_deg", "tremor_mm"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be >= 0, got {v}")
        if not (0 <= self.speed_variation <= 0.9):
            raise InputError(f"speed variation must be in [0, 0.9], got {self.speed_variation}")
        if not (np.isfinite(self.frame_rate_hz) and self.frame_rate_hz > 0):
            raise InputError(f"frame rate must be positive, got {self.frame_rate_hz}")

    @property
    def perturbed(self) -> bool:
        return bool(self.jitter_deg or self.speed_variation or self.tremor_deg or self.tremor_mm)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SWEEP_PRESETS: dict[str, SweepConfig] = {
    # The sweep paper's synthetic data: uniform -60..+60 degree fans of label images.
    "paper": SweepConfig(),
    # A freehand-like sweep for testing the sensorless prior.
    "freehand": SweepConfig(jitter_deg=0.5, speed_variation=0.3, tremor_deg=0.5, tremor_mm=0.5),
}


@dataclass(frozen=True)
class ProbePlacement:
    """Where the probe tip is (mm) and where it aims (mm); ``right`` fixes the sagittal plane's normal."""

    tip: np.ndarray
    target: np.ndarray
    right: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))


def probe_placement(source: Any) -> ProbePlacement:
    """The probe placement for a phantom (its landmarks) or a plain volume.

    A plain :class:`Volume` is scanned from below: the tip sits on the volume's centre line, 40% of
    the volume's extent along z below its centre, aiming at the centre.
    """
    lm = getattr(source, "landmarks", None)
    if lm and "probe_tip" in lm and "target" in lm:
        return ProbePlacement(np.asarray(lm["probe_tip"], float), np.asarray(lm["target"], float))
    vol = _volume_of(source, "labels")
    shape = np.asarray(vol.shape, dtype=float)
    centre = (vol.affine @ np.append((shape - 1) / 2, 1.0))[:3]
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]) @ vol.affine.T
    extent_z = float(np.ptp(corners[:, 2]))
    return ProbePlacement(centre - np.array([0.0, 0.0, 0.4 * extent_z + 1.0]), centre)


def frame_geometry(size_px: int, sector_angle_deg: float, depth_mm: float
                   ) -> tuple[tuple[int, int], tuple[float, float], Sector]:
    """Frame shape, square pixel spacing and sector for a probe whose apex is the top-centre pixel.

    The spacing is the smallest that fits the whole sector (depth and width) in the frame.
    """
    H = W = int(size_px)
    half = np.deg2rad(sector_angle_deg) / 2
    width = 2 * depth_mm * np.sin(half) if half < np.pi / 2 else 2 * depth_mm
    s = max(depth_mm / (H - 1), width / (W - 1))
    sector = Sector(apex_px=((W - 1) / 2.0, 0.0), angle_deg=float(sector_angle_deg), radius_mm=(0.0, float(depth_mm)))
    return (H, W), (s, s), sector


def probe_base_pose(placement: ProbePlacement, direction: str, shape: tuple[int, int],
                    spacing_mm: tuple[float, float]) -> np.ndarray:
    """``image_to_world`` of the middle frame: top-centre pixel at the tip, rows along the aim.

    ``sagittal``: plane normal towards the patient's right (columns run anterior for a probe aiming
    up). ``transversal``: columns run towards the patient's right.
    """
    H, W = shape
    a = np.asarray(placement.target, float) - np.asarray(placement.tip, float)
    if np.linalg.norm(a) < 1e-9:
        raise InputError("probe tip and target coincide")
    row = a / np.linalg.norm(a)
    right = np.asarray(placement.right, float)
    right = right - (right @ row) * row
    if np.linalg.norm(right) < 1e-6:
        raise InputError("the probe aims along the left-right axis; cannot define a sagittal plane")
    right /= np.linalg.norm(right)
    if direction == "sagittal":
        normal = right
        col = np.cross(row, normal)
    elif direction == "transversal":
        col = right
        normal = np.cross(col, row)
    else:
        raise InputError(f"sweep direction must be 'sagittal' or 'transversal', got {direction!r}")
    R = np.column_stack([col, row, normal])
    dy, dx = spacing_mm
    origin = np.asarray(placement.tip, float) - (W - 1) / 2.0 * dx * col
    return image_to_world_matrix(R, origin, spacing_mm)


def fan_angles(n: int, span_deg: float, speed_variation: float = 0.0, jitter_deg: float = 0.0,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """True fan angles (radians) of ``n`` frames: uniform over the span, time-warped, jittered.

    The warp ``s(t) = t + v (sin(2 pi t + p) - sin p) / (2 pi)`` keeps the end points and stays
    monotone for ``v < 1``; ``p`` is random.
    """
    nominal = uniform_angles(n, span_deg)
    if not speed_variation and not jitter_deg:
        return nominal
    rng = rng if rng is not None else np.random.default_rng(0)
    t = np.linspace(0.0, 1.0, n)
    if speed_variation:
        p = rng.uniform(0, 2 * np.pi)
        t = t + speed_variation * (np.sin(2 * np.pi * t + p) - np.sin(p)) / (2 * np.pi)
    ang = np.deg2rad(span_deg) * (t - 0.5)
    if jitter_deg:
        ang = ang + np.deg2rad(jitter_deg) * rng.standard_normal(n)
    return ang


def _tremor(n: int, rot_deg: float, trans_mm: float, rng: np.random.Generator,
            correlation_frames: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth per-frame rotation vectors (radians) and translations (mm) with the given RMS."""

    def smooth(rms: float) -> np.ndarray:
        if rms <= 0:
            return np.zeros((n, 3))
        x = ndimage.gaussian_filter1d(rng.standard_normal((n, 3)), correlation_frames, axis=0, mode="nearest")
        x -= x.mean(axis=0)
        norm = np.sqrt((x ** 2).sum(axis=1).mean())
        return x * (rms / norm) if norm > 0 else x

    return smooth(np.deg2rad(rot_deg)), smooth(trans_mm)


def sweep_poses(base_pose: np.ndarray, shape: tuple[int, int], config: SweepConfig,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """True poses ``[N, 4, 4]`` of a sweep and a record of how they were made.

    The record holds ``nominal_angles_deg`` and ``angles_deg`` (fans), ``offsets_mm``
    (translations), the ``pivot_mm`` and ``axis`` of the fan, and the tremor applied.
    """
    rng = rng if rng is not None else np.random.default_rng(config.seed)
    n = int(config.frames)
    M = np.asarray(base_pose, float)
    H, W = shape
    col = M[:3, 0] / np.linalg.norm(M[:3, 0])
    tip = M[:3, 3] + (W - 1) / 2.0 * M[:3, 0]
    pivot = tip - config.pivot_offset_mm * M[:3, 1] / np.linalg.norm(M[:3, 1])
    info: dict[str, Any] = {"kind": config.kind, "pivot_mm": pivot.tolist(), "axis": col.tolist()}
    if config.kind == "fan":
        nominal = uniform_angles(n, config.span_deg)
        info["nominal_angles_deg"] = np.rad2deg(nominal).tolist()
        if config.speed_variation or config.jitter_deg:
            angles = fan_angles(n, config.span_deg, config.speed_variation, config.jitter_deg, rng)
            poses = np.stack([rotate_about(M, col, pivot, a) for a in angles])
        else:
            angles = nominal
            poses = fan_sweep_in_image(M, shape, n, config.span_deg, "lateral", config.pivot_offset_mm)
        info["angles_deg"] = np.rad2deg(angles).tolist()
    else:
        length = config.length_mm
        poses = translation_sweep(M, n, length)
        info["offsets_mm"] = np.linspace(-length / 2, length / 2, n).tolist()
        if config.jitter_deg or config.speed_variation:
            t = np.linspace(0, 1, n)
            if config.speed_variation:
                p = rng.uniform(0, 2 * np.pi)
                t = t + config.speed_variation * (np.sin(2 * np.pi * t + p) - np.sin(p)) / (2 * np.pi)
            off = length * (t - 0.5)
            normal = M[:3, 2]
            poses = np.repeat(M[None], n, axis=0)
            poses[:, :3, 3] += off[:, None] * normal
            if config.jitter_deg:
                jit = np.deg2rad(config.jitter_deg) * rng.standard_normal(n)
                poses = np.stack([rotate_about(P, col, P[:3, 3] + (W - 1) / 2.0 * P[:3, 0], a)
                                  for P, a in zip(poses, jit)])
            info["offsets_mm"] = off.tolist()
    if config.tremor_deg or config.tremor_mm:
        rotvec, trans = _tremor(n, config.tremor_deg, config.tremor_mm, rng)
        out = []
        for P, rv, tr in zip(poses, rotvec, trans):
            probe_tip = P[:3, 3] + (W - 1) / 2.0 * P[:3, 0]
            ang = float(np.linalg.norm(rv))
            T = rigid(None, tr)
            if ang > 0:
                T = T @ rotate_about(np.eye(4), rv / ang, probe_tip, ang)
            out.append(T @ P)
        poses = np.stack(out)
        info["tremor_rotvec_deg"] = np.rad2deg(rotvec).tolist()
        info["tremor_mm"] = trans.tolist()
    return poses, info


def _volume_of(source: Any, what: str) -> Volume:
    if isinstance(source, Volume):
        return source
    attr = {"labels": "labels", "bmode": "echogenicity"}[what]
    vol = getattr(source, attr, None)
    if not isinstance(vol, Volume):
        raise InputError(f"source has no {attr} volume to sample")
    return vol


def simulate_sweep(source: Any, config: SweepConfig = SweepConfig(),
                   placement: ProbePlacement | None = None) -> tuple[Sweep, Volume]:
    """Simulate a sweep through a phantom or a volume.

    Parameters
    ----------
    source : Phantom or Volume
        A phantom (its ``labels`` volume for ``labels`` appearance, its ``echogenicity`` for
        ``bmode``; its landmarks place the probe) or a volume sampled as it is.
    config : SweepConfig
    placement : ProbePlacement, optional
        Overrides the probe tip and aim.

    Returns
    -------
    sweep : Sweep
        Frames ``[N, S, S]`` in [0, 1], true poses, the sector, and ``meta`` with the nominal and
        true angles, the configuration and ``frame_times_s``.
    truth : Volume
        The volume the frames were sampled from (``meta["kind"]`` says which).
    """
    rng = np.random.default_rng(config.seed)
    vol = _volume_of(source, config.appearance)
    place = placement if placement is not None else probe_placement(source)
    shape, spacing, sector = frame_geometry(config.size_px, config.sector_angle_deg, config.depth_mm)
    base = probe_base_pose(place, config.direction, shape, spacing)
    poses, info = sweep_poses(base, shape, config, rng)
    mask = sector_mask(sector, shape, spacing)
    # B-mode: tissue goes on beyond the phantom's box, so pixels outside it see the background.
    fill = float(getattr(source, "echo_background", 0.0)) if config.appearance == "bmode" else 0.0
    frames = sample_planes(vol, poses, shape, order=config.order, fill=np.nan, mask=mask)
    seen = np.isfinite(frames)
    if not np.any(seen):
        raise InputError("the simulated sweep misses the volume: no frame pixel falls inside it")
    frames[~seen] = fill
    if config.appearance == "bmode":
        frames = bmode(np.clip(frames, 0.0, None), spacing, config.bmode, sector, rng)
    else:
        frames = np.clip(frames, 0.0, 1.0) * mask
    meta = {
        "source": "sono3d.simulate",
        "simulated": True,
        "appearance": config.appearance,
        "direction": config.direction,
        "frame_times_s": (np.arange(config.frames) / config.frame_rate_hz).tolist(),
        "probe_tip_mm": np.asarray(place.tip, float).tolist(),
        "probe_target_mm": np.asarray(place.target, float).tolist(),
        "sweep": info,
        "config": config.to_dict(),
    }
    sweep = Sweep(frames=frames, image_to_world=poses, spacing_mm=spacing, sector=sector, meta=meta)
    truth = Volume(vol.array, vol.affine, meta={**vol.meta, "kind": vol.meta.get("kind", config.appearance)})
    return sweep, truth
