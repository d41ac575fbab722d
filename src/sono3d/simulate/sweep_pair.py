"""Two sweeps of one phantom, each in its own frame: the test bed of joint reconstruction.

A clinician records a sagittal and a transversal transvaginal sweep one after the other; nothing
ties their coordinates together. :func:`simulate_sweep_pair` makes such a pair with exact truth:

* sweep **a** is a sagittal fan (``span_deg``, default -60..+60 degrees) from the phantom's probe
  placement (:func:`~sono3d.simulate.sweeps.probe_placement`);
* sweep **b** is a transversal fan from that placement moved by a random rigid displacement: a
  rotation by up to ``offset_deg`` about a random axis through the probe tip, then a translation by
  up to ``offset_mm`` in a random direction (magnitudes uniform in ``[0, bound]``, or exactly the
  bounds with ``exact_offset``);
* each sweep is written in its **own** frame, the one a sensorless reconstruction uses: the fan's
  central (angle 0) plane in the canonical pose (:func:`~sono3d.geometry.planes.canonical_pose`,
  probe face at the origin, beam along -z). For these uniform fans the poses in the files equal
  the fan prior (``--poses fan --span 120``) exactly; ``meta["pose_frame"] = "own"`` says that the
  poses of different files are not in one tracker frame.

The record (``truth.json``) holds what a sensorless method cannot know: each sweep's
``frame_to_world`` (own frame to phantom RAS mm) and true world poses, and ``b_to_a``, the transform
from b's frame to a's (``to_first`` lists it per sweep, identity for a).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sono3d.errors import InputError
from sono3d.geometry.fan import rotate_about
from sono3d.geometry.planes import canonical_pose
from sono3d.geometry.transforms import invert_rigid, rigid
from sono3d.io import write_sweep, write_volume
from sono3d.io.atomic import atomic_path
from sono3d.simulate.sweeps import (
    ProbePlacement,
    SweepConfig,
    frame_geometry,
    probe_base_pose,
    probe_placement,
    simulate_sweep,
)
from sono3d.types import Sweep, Volume

__all__ = ["SweepPairConfig", "SweepPair", "random_displacement", "simulate_sweep_pair", "write_sweep_pair"]


@dataclass(frozen=True)
class SweepPairConfig:
    """How to make a sweep pair.

    Attributes
    ----------
    frames : int
        Frames per sweep.
    size_px : int
        Frames are ``size_px x size_px`` pixels.
    span_deg : float
        Fan span of both sweeps (120: -60..+60 degrees).
    offset_mm, offset_deg : float
        Bounds of b's displacement from the nominal orthogonal placement (translation of the
        probe, rotation about its tip).
    exact_offset : bool
        Displace by exactly the bounds (random directions) instead of uniform magnitudes.
    appearance : ``"labels"`` or ``"bmode"``
    depth_mm, sector_angle_deg : float
        The probe's sector.
    seed : int
        Seeds the displacement and (B-mode) the speckle.
    """

    frames: int = 100
    size_px: int = 256
    span_deg: float = 120.0
    offset_mm: float = 20.0
    offset_deg: float = 30.0
    exact_offset: bool = False
    appearance: Literal["labels", "bmode"] = "labels"
    depth_mm: float = 100.0
    sector_angle_deg: float = 90.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.offset_mm) and self.offset_mm >= 0):
            raise InputError(f"--offset-mm must be a non-negative distance, got {self.offset_mm}")
        if not (np.isfinite(self.offset_deg) and 0 <= self.offset_deg <= 180):
            raise InputError(f"--offset-deg must be in [0, 180] degrees, got {self.offset_deg}")
        # the per-sweep options are checked by SweepConfig
        self.sweep_config("sagittal")

    def sweep_config(self, direction: str) -> SweepConfig:
        return SweepConfig(kind="fan", direction=direction, frames=self.frames, span_deg=self.span_deg,  # type: ignore[arg-type]
                           size_px=self.size_px, depth_mm=self.depth_mm, sector_angle_deg=self.sector_angle_deg,
                           appearance=self.appearance, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SweepPair:
    """What :func:`simulate_sweep_pair` returns.

    Attributes
    ----------
    a, b : Sweep
        The sagittal and the transversal sweep, each with poses in its own frame.
    truth : Volume
        The volume both were sampled from (phantom RAS mm).
    record : dict
        ``b_to_a`` (4x4), ``to_first`` (one 4x4 per sweep, a's first), ``frame_to_world`` (one per
        sweep: its own frame to the phantom's), ``sweeps`` (per sweep:
        ``direction``, ``frame_to_world``, ``poses_world``), ``offset`` (``rotation_deg``,
        ``axis``, ``translation_mm``, ``vector_mm``) and ``config``.
    """

    a: Sweep
    b: Sweep
    truth: Volume
    record: dict[str, Any]


def random_displacement(rng: np.random.Generator, pivot: np.ndarray, max_mm: float, max_deg: float,
                        exact: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """A rigid displacement (4x4): a rotation about ``pivot`` then a translation, with random directions.

    The magnitudes are uniform in ``[0, max]`` (or exactly ``max`` with ``exact``); the rotation axis
    and the translation direction are uniform on the sphere.
    """
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    angle = float(max_deg if exact else rng.uniform(0.0, max_deg))
    dist = float(max_mm if exact else rng.uniform(0.0, max_mm))
    D = rigid(None, dist * direction) @ rotate_about(np.eye(4), axis, pivot, np.deg2rad(angle))
    return D, {"rotation_deg": angle, "axis": axis.tolist(), "translation_mm": dist,
               "vector_mm": (dist * direction).tolist()}


def _own_frame(sweep: Sweep, base_world: np.ndarray, part: str) -> tuple[Sweep, np.ndarray]:
    """The sweep with poses in its own frame, and that frame's ``frame_to_world`` (4x4, rigid)."""
    F = base_world @ np.linalg.inv(canonical_pose(sweep.shape, sweep.spacing_mm))
    F[3] = [0.0, 0.0, 0.0, 1.0]
    own = invert_rigid(F)[None] @ np.asarray(sweep.image_to_world)
    meta = {
        "source": "sono3d.simulate sweep-pair",
        "simulated": True,
        "pair": part,
        "appearance": sweep.meta.get("appearance"),
        "direction": sweep.meta.get("direction"),
        "frame_times_s": sweep.meta.get("frame_times_s"),
        # poses in the sweep's own frame: not one tracker frame with the other sweep of the pair
        "pose_frame": "own",
    }
    return Sweep(sweep.frames, own, sweep.spacing_mm, sweep.sector, meta), F


def simulate_sweep_pair(source: Any, config: SweepPairConfig = SweepPairConfig()) -> SweepPair:
    """Simulate a sagittal and a displaced transversal fan of a phantom (see the module notes).

    Parameters
    ----------
    source : Phantom or Volume
        As :func:`~sono3d.simulate.sweeps.simulate_sweep` takes it.
    config : SweepPairConfig

    Returns
    -------
    SweepPair
    """
    rng = np.random.default_rng(config.seed)
    place = probe_placement(source)
    D, offset = random_displacement(rng, place.tip, config.offset_mm, config.offset_deg, config.exact_offset)
    R = D[:3, :3]
    moved = ProbePlacement(tip=(D @ np.append(place.tip, 1.0))[:3], target=(D @ np.append(place.target, 1.0))[:3],
                           right=R @ np.asarray(place.right, dtype=np.float64))
    shape, spacing, _ = frame_geometry(config.size_px, config.sector_angle_deg, config.depth_mm)
    made = []
    for part, direction, placement in (("a", "sagittal", place), ("b", "transversal", moved)):
        world, truth = simulate_sweep(source, config.sweep_config(direction), placement)
        own, F = _own_frame(world, probe_base_pose(placement, direction, shape, spacing), part)
        made.append((own, F, np.asarray(world.image_to_world)))
    (a, Fa, Pa), (b, Fb, Pb) = made
    b_to_a = invert_rigid(Fa) @ Fb
    record = {
        "b_to_a": b_to_a.tolist(),
        "to_first": [np.eye(4).tolist(), b_to_a.tolist()],
        "frame_to_world": [Fa.tolist(), Fb.tolist()],
        "sweeps": {
            "a": {"file": "a.seq.nrrd", "direction": "sagittal", "frame_to_world": Fa.tolist(),
                  "poses_world": Pa.tolist()},
            "b": {"file": "b.seq.nrrd", "direction": "transversal", "frame_to_world": Fb.tolist(),
                  "poses_world": Pb.tolist()},
        },
        "offset": offset,
        "config": config.to_dict(),
        "units": "mm; 4x4 matrices act on column vectors (p_a = b_to_a @ p_b); poses map (col, row, 0, 1) to mm",
    }
    return SweepPair(a, b, truth, record)


def write_sweep_pair(pair: SweepPair, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``a.seq.nrrd``, ``b.seq.nrrd``, ``truth.nii.gz`` (the sampled volume) and ``truth.json``.

    Each file is written atomically; ``truth.json`` comes last.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"a": write_sweep(out / "a.seq.nrrd", pair.a), "b": write_sweep(out / "b.seq.nrrd", pair.b),
             "truth_volume": write_volume(out / "truth.nii.gz", pair.truth)}
    dest = out / "truth.json"
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps({**pair.record, "truth_volume": "truth.nii.gz"}, indent=1) + "\n")
    files["truth"] = dest
    return files
