"""Where each frame lies: tracked poses, the sensorless fan prior, and learned smooth corrections.

* ``tracked``: the sweep's own ``image_to_world`` (from the file, or a PLUS calibration applied by
  the reader), checked to map pixels rigidly up to a small calibration shear.
* ``fan``: the paper's sensorless assumption -- temporally ordered frames at uniform angular spacing
  over ``span_deg`` about a pivot. ``fan_axis="lateral"`` tilts the probe about the lateral (column)
  direction at the probe face (planes open like the pages of a book); ``"axial"`` spins it about the
  central beam. The pivot sits ``pivot_offset_mm`` above the centre of the top row along the beam.
  The middle frame is placed in a canonical pose (:func:`canonical_pose`).
* :class:`PoseRefinement` (beyond the paper): a smooth per-frame rigid correction, a few cosine
  (DCT-II) basis functions of the frame index times learned rotation vectors (radians) and
  translations (mm), applied on the left of ``image_to_world``. Frames not trained on (held out)
  get the correction interpolated by the same basis. The constant basis function is left out: a
  rigid motion of the whole sweep is not observable from the frames alone (the Gaussians would
  follow it), so it only adds a useless direction to the optimisation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from sono3d.errors import InputError
from sono3d.geometry.fan import fan_sweep_in_image
from sono3d.geometry.planes import canonical_pose, require_affine_poses
from sono3d.types import Sweep

__all__ = ["POSE_MODES", "canonical_pose", "fan_prior_poses", "resolve_poses", "check_tracked_poses",
           "PoseRefinement", "dct_basis", "skew_matrix"]

POSE_MODES = ("tracked", "fan")


def fan_prior_poses(
    n: int,
    shape: tuple[int, int],
    spacing_mm: tuple[float, float],
    span_deg: float,
    fan_axis: Literal["lateral", "axial"] = "lateral",
    pivot_offset_mm: float = 0.0,
) -> np.ndarray:
    """Poses ``(n, 4, 4)`` of ``n`` frames at uniform angles over ``span_deg`` (the paper's prior).

    Raises
    ------
    InputError
        ``span_deg`` not positive, ``n < 1``, an unknown ``fan_axis`` or a negative pivot offset.
    """
    if not np.isfinite(pivot_offset_mm) or pivot_offset_mm < 0:
        raise InputError(f"pivot offset must be a non-negative distance in mm, got {pivot_offset_mm}")
    if not np.isfinite(span_deg) or span_deg <= 0 or span_deg > 360:
        raise InputError(f"fan span must be in (0, 360] degrees, got {span_deg}")
    base = canonical_pose(shape, spacing_mm)
    return fan_sweep_in_image(base, shape, n, span_deg, fan_axis=fan_axis, pivot_offset_mm=pivot_offset_mm)


def resolve_poses(
    sweep: Sweep,
    mode: str = "tracked",
    span_deg: float = 120.0,
    fan_axis: str = "lateral",
    pivot_offset_mm: float = 0.0,
) -> np.ndarray:
    """The poses ``(N, 4, 4)`` a reconstruction uses for ``sweep``.

    Parameters
    ----------
    mode : ``"tracked"`` or ``"fan"``
        Use the sweep's poses, or assume a uniform fan (see the module notes).
    span_deg, fan_axis, pivot_offset_mm
        The fan prior's options (ignored for ``tracked``).

    Raises
    ------
    InputError
        ``tracked`` on an untracked sweep; poses with NaN, strong shear or a scale that does not
        match the pixel spacing (:func:`check_tracked_poses`); a bad fan option.
    """
    if mode == "tracked":
        if sweep.image_to_world is None:
            raise InputError("the sweep has no poses: use --poses fan (sensorless) or give a PLUS configuration")
        poses = np.asarray(sweep.image_to_world, dtype=np.float64)
        check_tracked_poses(poses, sweep.spacing_mm)
        return poses
    if mode == "fan":
        if fan_axis not in ("lateral", "axial"):
            raise InputError(f"fan axis must be 'lateral' or 'axial', got {fan_axis!r}")
        return fan_prior_poses(sweep.n_frames, sweep.shape, sweep.spacing_mm, span_deg,
                               fan_axis, pivot_offset_mm)  # type: ignore[arg-type]
    raise InputError(f"pose mode must be one of {', '.join(POSE_MODES)}, got {mode!r}")


def check_tracked_poses(poses: np.ndarray, spacing_mm: tuple[float, float], max_shear_deg: float = 5.0,
                        rtol: float = 0.05) -> None:
    """Raise :class:`InputError` unless every pose maps pixels rigidly (up to calibration error).

    The rasterizers only use where pixels land, i.e. the column and row steps and the origin, so
    a pose is accepted when those steps have the pixel spacing (within ``rtol``) and are
    perpendicular within ``max_shear_deg``. Real PLUS calibrations are affine fits with a small
    shear (the spine phantom's: 2.7 degrees), which :func:`validate_image_to_world`'s strict
    check would refuse.
    """
    M = require_affine_poses(poses)
    dy, dx = spacing_mm
    col, row = M[:, :3, 0], M[:, :3, 1]
    lc, lr = np.linalg.norm(col, axis=1), np.linalg.norm(row, axis=1)
    bad = np.flatnonzero((np.abs(lc - dx) > rtol * dx) | (np.abs(lr - dy) > rtol * dy))
    if bad.size:
        n = int(bad[0])
        raise InputError(f"pose of frame {n} is not rigid: it scales pixels by ({lr[n]:.4g}, {lc[n]:.4g}) mm, "
                         f"not the spacing ({dy:.4g}, {dx:.4g}) mm")
    cos = np.abs(np.sum(col * row, axis=1)) / np.maximum(lc * lr, 1e-300)
    shear = 90.0 - np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))
    bad = np.flatnonzero(shear > max_shear_deg)
    if bad.size:
        n = int(bad[0])
        raise InputError(f"pose of frame {n} is not rigid: its pixel axes are sheared by {shear[n]:.1f} degrees")


def dct_basis(n_frames: int, n_basis: int) -> np.ndarray:
    """Cosine basis ``(n_frames, n_basis)``: column ``k`` is ``cos(pi (k + 1) (i + 0.5) / n_frames)``.

    Frequencies 1..n_basis of the DCT-II (the constant is left out, see the module notes); each
    column has values in [-1, 1] and varies smoothly with the frame index ``i``.
    """
    i = np.arange(n_frames, dtype=np.float64)[:, None] + 0.5
    k = np.arange(1, n_basis + 1, dtype=np.float64)[None, :]
    return np.cos(np.pi * k * i / n_frames)


def skew_matrix(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices ``(..., 3, 3)`` of vectors ``(..., 3)``: ``skew_matrix(v) @ u = v x u``."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v.unbind(-1)
    return torch.stack([z, -w, y, w, z, -x, -y, x, z], dim=-1).reshape(v.shape[:-1] + (3, 3))


class PoseRefinement(torch.nn.Module):
    """A smooth rigid correction of every frame's pose, learned with the Gaussians.

    For frame ``i`` with basis row ``b_i`` (``(K,)``, :func:`dct_basis`), the rotation vector is
    ``omega_i = b_i @ rot`` (radians) and the translation ``t_i = b_i @ trans`` (mm); the corrected
    pose is ``T_i @ M_i`` with ``T_i`` the rotation ``exp([omega_i]x)`` about ``centre_mm``
    followed by ``t_i``. All coefficients start at 0 (no correction).

    Parameters
    ----------
    n_frames : int
        Frames in the whole sweep (training and held out).
    n_basis : int
        Cosine basis functions (``K``); 0 disables the correction.
    centre_mm : array, shape (3,)
        Centre of the corrective rotations (the middle of the sweep), so that a small rotation
        does not swing distant frames far.
    """

    def __init__(self, n_frames: int, n_basis: int, centre_mm: np.ndarray,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        super().__init__()
        if n_basis < 0:
            raise InputError(f"pose basis size must be >= 0, got {n_basis}")
        self.register_buffer("basis", torch.as_tensor(dct_basis(n_frames, n_basis), dtype=dtype, device=device))
        self.register_buffer("centre", torch.as_tensor(np.asarray(centre_mm, dtype=np.float64), dtype=dtype,
                                                       device=device))
        self.rot = torch.nn.Parameter(torch.zeros((n_basis, 3), dtype=dtype, device=device))
        self.trans = torch.nn.Parameter(torch.zeros((n_basis, 3), dtype=dtype, device=device))

    def deltas(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation vectors (rad) and translations (mm) of frames ``index``, each ``(B, 3)``."""
        b = self.basis[index]
        return b @ self.rot, b @ self.trans

    def forward(self, index: torch.Tensor, image_to_world: torch.Tensor) -> torch.Tensor:
        """Corrected poses ``(B, 4, 4)`` of frames ``index`` whose prior poses are ``image_to_world``."""
        omega, t = self.deltas(index)
        R = torch.linalg.matrix_exp(skew_matrix(omega))  # (B, 3, 3)
        c = self.centre
        shift = c - R @ c + t
        lin = R @ image_to_world[:, :3, :3]
        off = (R @ image_to_world[:, :3, 3:4])[..., 0] + shift
        top = torch.cat([lin, off[..., None]], dim=-1)
        return torch.cat([top, image_to_world[:, 3:4, :]], dim=1)

    def summary(self) -> dict[str, float]:
        """Largest correction over all frames: ``max_rotation_deg`` and ``max_translation_mm``."""
        with torch.no_grad():
            omega, t = self.basis @ self.rot, self.basis @ self.trans
            if omega.numel() == 0:
                return {"max_rotation_deg": 0.0, "max_translation_mm": 0.0}
            return {
                "max_rotation_deg": float(torch.rad2deg(omega.norm(dim=-1).max())),
                "max_translation_mm": float(t.norm(dim=-1).max()),
            }
