"""Sweep-to-sweep rigid registration, for reconstructing several sweeps as one volume (beyond the paper).

The paper's discussion (its sections 5.3.2 and 6) names the open problem: a sagittal and a
transversal sweep of one patient do not line up, so training on both at once fails, although with
known poses the combined volume is the most complete. Every sweep after the first therefore gets a
rigid transform ``T`` taking its own frame to the first sweep's (``p_first = T @ p_own``, mm), found
in three steps:

1. **Coarse volumes** (:func:`coarse_volume`): each sweep compounded on its own axis-aligned grid
   of coarse voxels with the compounding baseline's splatting and hole filling
   (:mod:`sono3d.sweep.compound`), then smoothed inside what it imaged.
2. **Global search** (:func:`global_search`): over a grid of rotations -- a full turn about the
   first sweep's probe axis times tilts of the probe axis up to ``max_tilt_deg`` -- the moving
   volume is rotated and the masked normalised cross-correlation (NCC over the voxels both sweeps
   imaged, Padfield's FFT form, :func:`masked_ncc`) gives the best translation for every rotation
   at once; translations farther than ``max_shift_mm`` from the one that puts the probe tips
   together are not considered. The probe axis is the central beam of each sweep's middle frame,
   so the search needs no hint about how the sweeps were oriented (sagittal, transversal, ...).
3. **Local refinement** (:func:`refine`): the best few rotations, on finer volumes, NCC maximised
   by L-BFGS over a rotation vector about the moving sweep's centre and a translation (torch
   ``grid_sample``, differentiable).

The joint training (:mod:`sono3d.sweep.joint`) then learns the transform further with the
Gaussians (:class:`SweepTransform`, a rotation vector and a translation on top of the search's
result). A search whose best NCC or overlap is too small says the sweeps do not image the same
anatomy (:attr:`Registration.ok` is False).

Errors against a known transform (:func:`transform_error`): the rotation angle of ``T_est^-1 T_true``
and the distance between where the two transforms put the moving sweep's centre.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import fft as sfft
from scipy import ndimage
from scipy.spatial.transform import Rotation

from sono3d.errors import InputError
from sono3d.geometry.transforms import rigid
from sono3d.sweep.compound import CompoundConfig, fill_holes, splat_frames
from sono3d.sweep.initialise import sweep_bounds
from sono3d.sweep.poses import skew_matrix
from sono3d.sweep.render import grid_for_bounds

__all__ = ["SearchConfig", "CoarseVolume", "Candidate", "Registration", "coarse_volume", "probe_axis",
           "rotation_grid", "masked_ncc", "masked_ncc_reference", "global_search", "refine", "register_sweeps",
           "SweepTransform", "transform_error", "rotvec_of", "sweep_centre"]


@dataclass(frozen=True)
class SearchConfig:
    """Options of the coarse-to-fine registration of one sweep to another.

    Attributes
    ----------
    coarse_voxel_mm : float
        Voxel edge of the volumes of the global search.
    medium_voxel_mm, fine_voxel_mm : float
        Voxel edges of the volumes of the two local refinements: the first, smoothed by
        ``blur_voxels``, widens the basin; the second, smoothed by half as much, tells apart
        candidates that the smoother volumes score alike (a pear-shaped organ turned half a turn
        about the probe axis) and sets the final transform.
    roll_step_deg : float
        Step of the full turn about the fixed sweep's probe axis.
    max_tilt_deg, tilt_step_deg : float
        The moving probe axis is tilted up to ``max_tilt_deg`` away from the fixed one, in rings
        ``tilt_step_deg`` apart.
    max_shift_mm : float
        Largest distance between the probe tips considered (about the translation that puts the
        moving sweep's probe tip on the fixed one's).
    candidates : int
        Best distinct rotations of the global search refined locally.
    refine_iterations : int
        L-BFGS iterations of the refinement of each candidate on the medium volumes; the best two
        distinct results get half as many on the fine volumes.
    refine_points : int
        Voxels of the fixed volume the fine refinement's NCC is taken over (a fixed random subset;
        half as many on the medium volumes).
    blur_voxels : float
        Gaussian smoothing (voxels) of the coarse volumes inside what they imaged; it widens the
        basin of the NCC.
    min_overlap : float
        Smallest overlap accepted, as a fraction of the smaller sweep's imaged volume.
    min_ncc : float
        Smallest NCC of a registration taken as a match; below it the sweeps are reported as not
        overlapping.
    """

    coarse_voxel_mm: float = 8.0
    medium_voxel_mm: float = 4.0
    fine_voxel_mm: float = 2.0
    roll_step_deg: float = 30.0
    max_tilt_deg: float = 45.0
    tilt_step_deg: float = 22.5
    max_shift_mm: float = 40.0
    candidates: int = 3
    refine_iterations: int = 30
    refine_points: int = 20_000
    blur_voxels: float = 1.0
    min_overlap: float = 0.2
    min_ncc: float = 0.5

    def __post_init__(self) -> None:
        for name in ("coarse_voxel_mm", "medium_voxel_mm", "fine_voxel_mm", "roll_step_deg", "tilt_step_deg"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise InputError(f"registration {name} must be positive, got {v}")
        if not (0 <= self.max_tilt_deg <= 180):
            raise InputError(f"registration max_tilt_deg must be in [0, 180], got {self.max_tilt_deg}")
        if not (self.max_shift_mm > 0):
            raise InputError(f"registration max_shift_mm must be positive, got {self.max_shift_mm}")
        if self.candidates < 1 or self.refine_iterations < 0 or self.refine_points < 100:
            raise InputError("registration needs at least one candidate and a non-negative iteration count")
        if not (0 < self.min_overlap <= 1):
            raise InputError(f"registration min_overlap must be in (0, 1], got {self.min_overlap}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ volumes


@dataclass
class CoarseVolume:
    """A sweep compounded on an axis-aligned grid of its own frame.

    Attributes
    ----------
    values : ndarray, float32, shape (X, Y, Z)
        Grey levels, 0 outside ``mask``.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels the sweep imaged (recorded or hole-filled).
    origin : ndarray, shape (3,)
        Centre of voxel (0, 0, 0), mm.
    voxel_mm : float
    """

    values: np.ndarray
    mask: np.ndarray
    origin: np.ndarray
    voxel_mm: float

    @property
    def affine(self) -> np.ndarray:
        A = np.diag([self.voxel_mm] * 3 + [1.0])
        A[:3, 3] = self.origin
        return A


def coarse_volume(frames: np.ndarray, poses: np.ndarray, mask: np.ndarray, voxel_mm: float,
                  blur_voxels: float = 1.0) -> CoarseVolume:
    """Compound frames on a grid of ``voxel_mm`` voxels covering them, and smooth inside the mask.

    Parameters
    ----------
    frames : ndarray, shape (N, H, W)
    poses : ndarray, shape (N, 4, 4)
        ``image_to_world`` in the sweep's own frame.
    mask : ndarray of bool, shape (H, W)
        Imaged pixels.
    voxel_mm : float
    blur_voxels : float
        Standard deviation of the smoothing, voxels (0: none). Smoothing is normalised by the
        smoothed mask, so the border of the imaged region does not darken.
    """
    lo, hi = sweep_bounds(poses, mask)
    affine, shape = grid_for_bounds(lo, hi, voxel_mm)
    A = np.linalg.inv(affine) @ np.asarray(poses, dtype=np.float64)
    values, acc, _ = splat_frames(frames, A, mask, shape, "linear", "mean")
    recorded = acc > 0
    # What the sweep imaged: the recorded voxels with the gaps between frames closed. (Hole filling
    # alone would also extrapolate into the unimaged corners of the box.)
    imaged = ndimage.binary_closing(np.pad(recorded, 2), iterations=2)[2:-2, 2:-2, 2:-2] | recorded
    values, filled = fill_holes(values, recorded, CompoundConfig().kernels, voxel_mm, accumulation=acc)
    filled &= imaged
    values = np.where(filled, values, 0.0)
    if blur_voxels > 0:
        w = ndimage.gaussian_filter(filled.astype(np.float32), blur_voxels)
        v = ndimage.gaussian_filter(np.where(filled, values, 0).astype(np.float32), blur_voxels)
        values = np.where(filled, v / np.maximum(w, 1e-6), 0).astype(np.float32)
    return CoarseVolume(values.astype(np.float32), filled, affine[:3, 3].copy(), float(voxel_mm))


def probe_axis(poses: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Probe tip (top-centre pixel, mm) and unit beam direction (rows) of the sweep's middle frame."""
    M = np.asarray(poses, dtype=np.float64)[len(poses) // 2]
    W = shape[1]
    tip = M[:3, 3] + (W - 1) / 2.0 * M[:3, 0]
    return tip, M[:3, 1] / np.linalg.norm(M[:3, 1])


def sweep_centre(poses: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Centre (mm) of the box of a sweep's imaged pixels."""
    lo, hi = sweep_bounds(poses, mask)
    return (lo + hi) / 2.0


# ------------------------------------------------------------------------------------------------ rotations


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``a`` to unit vector ``b`` (3x3)."""
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(np.dot(a, b))
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        return Rotation.from_rotvec(np.pi * perp / np.linalg.norm(perp)).as_matrix()
    return Rotation.from_rotvec(axis / s * math.atan2(s, c)).as_matrix()


def rotation_grid(beam_fixed: np.ndarray, beam_moving: np.ndarray, roll_step_deg: float = 20.0,
                  max_tilt_deg: float = 45.0, tilt_step_deg: float = 15.0) -> np.ndarray:
    """Rotations ``(K, 3, 3)`` of the moving frame to try: a full turn about the fixed probe axis
    times tilts of the axis up to ``max_tilt_deg``.

    Each is ``Rot(u, theta) @ Rot(beam_fixed, phi) @ Align(beam_moving -> beam_fixed)``: the moving
    beam is put on the fixed one, turned by ``phi`` (every ``roll_step_deg``) about it, then tilted
    by ``theta`` (rings every ``tilt_step_deg``, ``round(360 sin(theta) / tilt_step)`` directions per
    ring, so neighbouring axes are about one step apart) about an axis ``u`` across the beam.
    """
    bf = np.asarray(beam_fixed, dtype=np.float64)
    bf = bf / np.linalg.norm(bf)
    bm = np.asarray(beam_moving, dtype=np.float64)
    bm = bm / np.linalg.norm(bm)
    R0 = _align(bm, bf)
    e1 = np.cross(bf, [1.0, 0.0, 0.0] if abs(bf[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(bf, e1)
    rolls = np.deg2rad(np.arange(0.0, 360.0 - 1e-9, roll_step_deg))
    tilts: list[np.ndarray] = [np.eye(3)]
    n_rings = int(math.floor(max_tilt_deg / tilt_step_deg + 1e-9))
    for r in range(1, n_rings + 1):
        theta = math.radians(r * tilt_step_deg)
        n_az = max(3, int(round(360.0 * math.sin(theta) / tilt_step_deg)))
        for psi in np.arange(n_az) * 2 * np.pi / n_az:
            u = math.cos(psi) * e1 + math.sin(psi) * e2
            tilts.append(Rotation.from_rotvec(theta * u).as_matrix())
    roll_mats = Rotation.from_rotvec(rolls[:, None] * bf[None, :]).as_matrix()
    out = np.einsum("tij,rjk,kl->tril", np.stack(tilts), roll_mats, R0)
    return out.reshape(-1, 3, 3)


def rotvec_of(R: np.ndarray) -> np.ndarray:
    """Rotation vector (radians, ``(3,)``) of a 3x3 rotation."""
    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_rotvec()


# ------------------------------------------------------------------------------------------------ masked NCC


class MaskedNCC:
    """Masked normalised cross-correlation of one fixed volume with moving volumes of one shape (FFT).

    For a shift ``d``, moving voxel ``j`` lies on fixed voxel ``j + d``; the NCC is taken over the
    voxels inside both masks (Padfield, "Masked object registration in the Fourier domain", IEEE
    TIP 2012). The fixed volume's three transforms are computed once, so each moving volume costs
    three forward and six inverse real FFTs. scikit-image's masked phase correlation computes the
    same map but returns only the best shift; the search needs the peak's value to compare
    rotations, hence this version (checked against :func:`masked_ncc_reference`).

    Parameters
    ----------
    fixed, fixed_mask : ndarray, shape (F0, F1, F2)
    moving_shape : (M0, M1, M2)
    dtype : numpy dtype
        float32 halves the time of the coarse search; float64 for exact comparisons.
    """

    def __init__(self, fixed: np.ndarray, fixed_mask: np.ndarray, moving_shape: tuple[int, int, int],
                 dtype: Any = np.float64) -> None:
        self.dtype = dtype
        fm = np.asarray(fixed_mask, dtype=dtype)
        f = np.asarray(fixed, dtype=dtype) * fm
        self.out_shape = tuple(a + b - 1 for a, b in zip(f.shape, moving_shape))
        self.moving_shape = tuple(int(v) for v in moving_shape)
        self.fshape = [sfft.next_fast_len(s, real=True) for s in self.out_shape]
        self.Ff, self.Fff, self.Fm = self._fwd(f), self._fwd(f * f), self._fwd(fm)
        self.scale = float(np.abs(f).max(initial=0.0))

    def _fwd(self, a: np.ndarray) -> np.ndarray:
        return sfft.rfftn(a, self.fshape)

    def __call__(self, moving: np.ndarray, moving_mask: np.ndarray, min_overlap: float = 1.0,
                 at: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ncc, overlap)``: the NCC of shift ``d`` at index ``d + (M - 1)`` of arrays of shape
        ``F + M - 1``, or only at the indices ``at`` (``(K, 3)``, in bounds) as ``(K,)`` arrays. The
        NCC is 0 where fewer than ``min_overlap`` voxels overlap or either side is flat there."""
        if tuple(moving.shape) != self.moving_shape:
            raise InputError(f"moving volume {moving.shape} is not of the planned shape {self.moving_shape}")
        mm = np.asarray(moving_mask, dtype=self.dtype)
        m = np.asarray(moving, dtype=self.dtype) * mm
        flip = (slice(None, None, -1),) * 3
        Gm, Gmm, G1 = self._fwd(m[flip]), self._fwd((m * m)[flip]), self._fwd(mm[flip])
        prods = np.stack([self.Fm * G1, self.Ff * G1, self.Fm * Gm, self.Fff * G1, self.Fm * Gmm, self.Ff * Gm])
        full = sfft.irfftn(prods, self.fshape, axes=(1, 2, 3))
        if at is None:
            stats = full[(slice(None),) + tuple(slice(0, s) for s in self.out_shape)]
        else:
            idx = np.asarray(at, dtype=np.intp)
            stats = full[:, idx[:, 0], idx[:, 1], idx[:, 2]]
        n, sf, sm, sff, smm, sfm = stats.astype(np.float64)
        n = np.round(n)
        safe = np.maximum(n, 1.0)
        vf = sff - sf * sf / safe
        vm = smm - sm * sm / safe
        cov = sfm - sf * sm / safe
        # flat overlaps (variance ~ 0 up to FFT round-off) have no defined NCC
        eps = 1e-5 if self.dtype == np.float32 else 1e-10
        tol = eps * max(self.scale, float(np.abs(m).max(initial=0.0)), 1e-30) ** 2
        ok = (n >= max(min_overlap, 2.0)) & (vf > tol * safe) & (vm > tol * safe)
        ncc = np.zeros(n.shape)
        ncc[ok] = cov[ok] / np.sqrt(vf[ok] * vm[ok])
        return np.clip(ncc, -1.0, 1.0), n


def masked_ncc(fixed: np.ndarray, fixed_mask: np.ndarray, moving: np.ndarray, moving_mask: np.ndarray,
               min_overlap: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Masked NCC of two volumes for every integer shift (see :class:`MaskedNCC`), float64.

    Returns
    -------
    ncc : ndarray, shape (F0 + M0 - 1, F1 + M1 - 1, F2 + M2 - 1)
        NCC at index ``d + (M - 1)`` (``M`` the moving shape), for moving voxel ``j`` on fixed
        voxel ``j + d``; 0 where the overlap has fewer than ``min_overlap`` voxels or either side is
        flat there.
    overlap : ndarray, same shape
        Voxels in both masks for each shift.
    """
    return MaskedNCC(fixed, fixed_mask, np.shape(moving))(moving, moving_mask, min_overlap)


def masked_ncc_reference(fixed: np.ndarray, fixed_mask: np.ndarray, moving: np.ndarray, moving_mask: np.ndarray,
                         min_overlap: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`masked_ncc` by direct sums over every shift (slow; the reference for tests)."""
    f = np.asarray(fixed, dtype=np.float64)
    m = np.asarray(moving, dtype=np.float64)
    fm = np.asarray(fixed_mask, dtype=bool)
    mm = np.asarray(moving_mask, dtype=bool)
    out_shape = tuple(a + b - 1 for a, b in zip(f.shape, m.shape))
    ncc = np.zeros(out_shape)
    n_out = np.zeros(out_shape)
    for idx in np.ndindex(*out_shape):
        d = np.asarray(idx) - (np.asarray(m.shape) - 1)
        lo_f = np.maximum(d, 0)
        hi_f = np.minimum(np.asarray(f.shape), np.asarray(m.shape) + d)
        if np.any(hi_f <= lo_f):
            continue
        sl_f = tuple(slice(a, b) for a, b in zip(lo_f, hi_f))
        sl_m = tuple(slice(a - s, b - s) for a, b, s in zip(lo_f, hi_f, d))
        both = fm[sl_f] & mm[sl_m]
        n = int(both.sum())
        n_out[idx] = n
        if n < max(min_overlap, 2.0):
            continue
        a, b = f[sl_f][both], m[sl_m][both]
        a, b = a - a.mean(), b - b.mean()
        den = math.sqrt(float((a * a).sum() * (b * b).sum()))
        if den > 1e-9 * n:
            ncc[idx] = float((a * b).sum()) / den
    return ncc, n_out


# ------------------------------------------------------------------------------------------------ search


@dataclass
class Candidate:
    """One pose of the moving sweep in the fixed frame: ``transform`` (4x4) and its score."""

    transform: np.ndarray
    ncc: float
    overlap: float

    def to_dict(self) -> dict[str, Any]:
        return {"transform": self.transform.tolist(), "ncc": self.ncc, "overlap": self.overlap}


def _rotate_volume(vol: CoarseVolume, R: np.ndarray, box: tuple[int, int, int]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The volume turned by ``R`` about the origin, resampled on an axis-aligned grid of ``box``
    voxels of the same size centred on the turned volume's centre (one shape for every ``R``):
    values, mask and the grid's origin (mm)."""
    s = vol.voxel_mm
    half = (np.asarray(vol.values.shape) - 1) / 2.0
    centre = vol.origin + s * half
    new_origin = R @ centre - s * (np.asarray(box) - 1) / 2.0
    # voxel j of the grid is y = new_origin + s j in the turned frame; p = R^T y in the volume's frame
    matrix = R.T
    offset = (R.T @ new_origin - vol.origin) / s
    vals = ndimage.affine_transform(vol.values, matrix, offset, output_shape=box, order=1, cval=0.0,
                                    prefilter=False)
    msk = ndimage.affine_transform(vol.mask.astype(np.float32), matrix, offset, output_shape=box, order=1,
                                   cval=0.0, prefilter=False) > 0.5
    return vals, msk, new_origin


def global_search(fixed: CoarseVolume, moving: CoarseVolume, fixed_probe: tuple[np.ndarray, np.ndarray],
                  moving_probe: tuple[np.ndarray, np.ndarray], config: SearchConfig = SearchConfig()
                  ) -> list[Candidate]:
    """The best distinct poses of ``moving`` in ``fixed``'s frame over the rotation grid (see module notes).

    Parameters
    ----------
    fixed, moving : CoarseVolume
        Same voxel size.
    fixed_probe, moving_probe : (tip, beam)
        :func:`probe_axis` of each sweep in its own frame.

    Returns
    -------
    list of Candidate
        Up to ``config.candidates``, best NCC first, rotations at least ``roll_step_deg`` apart.
    """
    if not math.isclose(fixed.voxel_mm, moving.voxel_mm):
        raise InputError("the global search needs volumes of the same voxel size")
    s = fixed.voxel_mm
    tip_f, beam_f = fixed_probe
    tip_m, beam_m = moving_probe
    rotations = rotation_grid(beam_f, beam_m, config.roll_step_deg, config.max_tilt_deg, config.tilt_step_deg)
    n_small = max(min(int(fixed.mask.sum()), int(moving.mask.sum())), 1)
    # one box that holds the moving volume under every rotation of the grid (the FFTs need one shape)
    corners = np.array(np.meshgrid(*[[0, k - 1] for k in moving.values.shape], indexing="ij")).reshape(3, -1)
    extent = np.einsum("rij,jc->ric", rotations, corners.astype(np.float64))
    box = tuple(int(v) for v in np.ceil((extent.max(axis=2) - extent.min(axis=2)).max(axis=0)) + 1)
    ncc_of = MaskedNCC(fixed.values, fixed.mask, box, dtype=np.float32)
    # shifts d (voxels) within max_shift_mm of a given point: a ball of offsets, the same for every rotation
    r = int(math.ceil(config.max_shift_mm / s))
    ball = np.argwhere(np.ones((2 * r + 1,) * 3, dtype=bool)) - r
    ball = ball[np.linalg.norm(ball, axis=1) * s <= config.max_shift_mm + 0.5 * s * math.sqrt(3)]
    scored: list[tuple[float, float, np.ndarray]] = []
    for R in rotations:
        vals, msk, o_r = _rotate_volume(moving, R, box)
        if not msk.any():
            continue
        # translation of shift d: t = o_fixed - o_r + s d; the probe tips meet at t0 = tip_f - R tip_m
        d0 = np.rint((tip_f - R @ tip_m - fixed.origin + o_r) / s).astype(int)
        k = ball + d0 + (np.asarray(box) - 1)
        k = k[np.all((k >= 0) & (k < np.asarray(ncc_of.out_shape)), axis=1)]
        if not len(k):
            continue
        vals_k, n_k = ncc_of(vals, msk, config.min_overlap * n_small, at=k)
        best = int(np.argmax(vals_k))
        if vals_k[best] <= 0:
            continue
        t = fixed.origin - o_r + s * (k[best] - (np.asarray(box) - 1))
        scored.append((float(vals_k[best]), float(n_k[best]) / n_small, rigid(R, t)))
    scored.sort(key=lambda c: -c[0])
    picked: list[Candidate] = []
    for ncc_v, ov, T in scored:
        if all(np.degrees(np.linalg.norm(rotvec_of(T[:3, :3] @ p.transform[:3, :3].T))) >= config.roll_step_deg
               for p in picked):
            picked.append(Candidate(T, ncc_v, ov))
        if len(picked) >= config.candidates:
            break
    return picked


# ------------------------------------------------------------------------------------------------ refinement


def rigid_torch(rotvec: torch.Tensor, trans: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """4x4 rigid matrix: rotation ``exp([rotvec]x)`` about ``centre`` (mm), then ``trans`` (mm)."""
    R = torch.linalg.matrix_exp(skew_matrix(rotvec))
    top = torch.cat([R, (centre - R @ centre + trans)[:, None]], dim=1)
    bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=rotvec.dtype, device=rotvec.device)
    return torch.cat([top, bottom], dim=0)


def _weighted_ncc(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    sw = w.sum().clamp_min(1e-9)
    ma, mb = (w * a).sum() / sw, (w * b).sum() / sw
    da, db = a - ma, b - mb
    cov = (w * da * db).sum()
    return cov / torch.sqrt((w * da * da).sum() * (w * db * db).sum()).clamp_min(1e-12)


def refine(fixed: CoarseVolume, moving: CoarseVolume, start: np.ndarray, centre_mm: np.ndarray,
           iterations: int = 20, max_points: int = 40_000) -> Candidate:
    """Maximise the masked NCC of ``moving`` (turned by a transform) and ``fixed`` from ``start``.

    The transform is ``Rigid(rotvec about T0(centre), trans) @ start``; the moving volume and its
    mask are sampled trilinearly (``grid_sample``) at the fixed mask's voxels (at most
    ``max_points`` of them, a fixed pseudo-random subset), the NCC weighted by the sampled mask, and
    L-BFGS (strong Wolfe line search) runs ``iterations`` steps.

    Returns
    -------
    Candidate
        The refined transform, its NCC and the overlap (fraction of the smaller imaged volume).
    """
    dtype = torch.float64
    T0 = torch.as_tensor(np.asarray(start, dtype=np.float64), dtype=dtype)
    c = torch.as_tensor((np.asarray(start) @ np.append(centre_mm, 1.0))[:3], dtype=dtype)
    idx = np.argwhere(fixed.mask)
    if len(idx) > max_points:  # the NCC of a large random subset is the NCC, at a fraction of the cost
        idx = idx[np.sort(np.random.default_rng(0).choice(len(idx), max_points, replace=False))]
    pts = torch.as_tensor(fixed.origin + fixed.voxel_mm * idx, dtype=dtype)  # (P, 3) in the fixed frame
    fvals = torch.as_tensor(fixed.values[tuple(idx.T)], dtype=dtype)
    vol = torch.as_tensor(np.stack([moving.values, moving.mask.astype(np.float32)])[None], dtype=dtype)
    size = torch.as_tensor(moving.values.shape, dtype=dtype)
    m_origin = torch.as_tensor(moving.origin, dtype=dtype)
    rot = torch.zeros(3, dtype=dtype, requires_grad=True)
    trans = torch.zeros(3, dtype=dtype, requires_grad=True)
    n_small = float(min(fixed.mask.sum(), moving.mask.sum()))

    def sample(T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        Ti = torch.linalg.inv(T)
        p = pts @ Ti[:3, :3].T + Ti[:3, 3]
        ijk = (p - m_origin) / moving.voxel_mm
        g = 2.0 * ijk / (size - 1).clamp_min(1) - 1.0
        grid = g.flip(-1).reshape(1, -1, 1, 1, 3)  # grid_sample wants (k, j, i) order
        out = torch.nn.functional.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out = out.reshape(2, -1)
        return out[0], out[1]

    def objective() -> torch.Tensor:
        T = rigid_torch(rot, trans, c) @ T0
        mv, w = sample(T)
        return -_weighted_ncc(fvals, mv, w)

    if iterations > 0:
        opt = torch.optim.LBFGS([rot, trans], lr=1.0, max_iter=iterations, max_eval=3 * iterations,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        T = rigid_torch(rot, trans, c) @ T0
        mv, w = sample(T)
        score = float(_weighted_ncc(fvals, mv, w))
        # the sampled points stand for all of the fixed mask's voxels
        overlap = float((w > 0.5).double().mean()) * float(fixed.mask.sum()) / max(n_small, 1.0)
    return Candidate(T.numpy().astype(np.float64), score, overlap)


@dataclass
class Registration:
    """Result of registering one sweep to the first.

    Attributes
    ----------
    transform : ndarray, shape (4, 4)
        Moving frame to fixed frame (mm).
    ncc, overlap : float
        The refined match's NCC and overlap (fraction of the smaller sweep's imaged volume).
    ok : bool
        ``ncc >= min_ncc`` and ``overlap >= min_overlap``: the sweeps image the same anatomy.
    candidates : list of dict
        The global search's candidates and their refined scores.
    seconds : float
    """

    transform: np.ndarray
    ncc: float
    overlap: float
    ok: bool
    candidates: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"transform": self.transform.tolist(), "ncc": self.ncc, "overlap": self.overlap, "ok": self.ok,
                "seconds": self.seconds, "candidates": self.candidates}


def register_sweeps(fixed: tuple[np.ndarray, np.ndarray, np.ndarray], moving: tuple[np.ndarray, np.ndarray, np.ndarray],
                    config: SearchConfig = SearchConfig(), start: np.ndarray | None = None,
                    local: bool = True) -> Registration:
    """Register a sweep to another: coarse volumes, global search (or ``start``), local refinement.

    Parameters
    ----------
    fixed, moving : (frames (N, H, W), poses (N, 4, 4), mask (H, W))
        Each sweep in its own frame.
    config : SearchConfig
    start : ndarray, shape (4, 4), optional
        A known approximate transform: no global search, only the local refinement from it.
    local : bool
        Refine locally. Without it a ``start`` is only scored (sweeps in one tracker frame: the
        tracker is more precise than the volumes' NCC, whose optimum moves by a degree or two with
        the way each sweep samples the volume; the joint training refines the transform instead).
    """
    t0 = time.perf_counter()
    (ff, pf, mf), (fm, pm, mm) = fixed, moving
    centre = sweep_centre(pm, mm)

    def volumes(voxel: float, blur: float) -> tuple[CoarseVolume, CoarseVolume]:
        return coarse_volume(ff, pf, mf, voxel, blur), coarse_volume(fm, pm, mm, voxel, blur)

    if start is not None:
        starts = [Candidate(np.asarray(start, dtype=np.float64), math.nan, math.nan)]
    else:
        cf, cm = volumes(config.coarse_voxel_mm, config.blur_voxels)
        starts = global_search(cf, cm, probe_axis(pf, mf.shape), probe_axis(pm, mm.shape), config)
    if not starts:
        return Registration(np.eye(4), 0.0, 0.0, False, [], time.perf_counter() - t0)
    if local:
        coarse = starts
        if start is None:  # on the search's volumes first: the widest basin
            coarse = [refine(cf, cm, c.transform, centre, config.refine_iterations, config.refine_points)
                      for c in starts]
        mf_, mm_ = volumes(config.medium_voxel_mm, config.blur_voxels)
        medium = [refine(mf_, mm_, c.transform, centre, config.refine_iterations, config.refine_points // 2)
                  for c in coarse]
        # the best two distinct results go on to the fine volumes
        order = sorted(range(len(medium)), key=lambda i: -medium[i].ncc)
        keep: list[int] = []
        for i in order:
            if all(transform_error(medium[i].transform, medium[j].transform, centre)["rotation_deg"] > 5.0
                   for j in keep):
                keep.append(i)
        keep = keep[:2]
    else:
        coarse, medium, keep = starts, starts, list(range(len(starts)))
    ff_, fm_ = volumes(config.fine_voxel_mm, config.blur_voxels / 2)
    fine = {i: refine(ff_, fm_, medium[i].transform, centre, config.refine_iterations // 2 if local else 0,
                      config.refine_points) for i in keep}
    enough = [r for r in fine.values() if r.overlap >= config.min_overlap]
    best = max(enough or list(fine.values()), key=lambda r: r.ncc)
    cands = [{"search": s.to_dict(), "coarse": c.to_dict(), "medium": m.to_dict(),
              **({"fine": fine[i].to_dict()} if i in fine else {})}
             for i, (s, c, m) in enumerate(zip(starts, coarse, medium))]
    ok = best.ncc >= config.min_ncc and best.overlap >= config.min_overlap
    return Registration(best.transform, best.ncc, best.overlap, ok, cands, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ learning


class SweepTransform(torch.nn.Module):
    """A sweep's rigid transform to the first sweep's frame, learned with the Gaussians.

    ``T = Rigid(rot about centre, trans) @ start``: ``start`` (4x4, fixed) is the search's result,
    ``rot`` a rotation vector (radians) about ``centre_mm`` (the sweep's centre in the first frame)
    and ``trans`` a translation (mm), both starting at 0.
    """

    def __init__(self, start: np.ndarray, centre_mm: np.ndarray, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.register_buffer("start", torch.as_tensor(np.asarray(start, dtype=np.float64), dtype=dtype, device=device))
        self.register_buffer("centre", torch.as_tensor(np.asarray(centre_mm, dtype=np.float64), dtype=dtype,
                                                       device=device))
        self.rot = torch.nn.Parameter(torch.zeros(3, dtype=dtype, device=device))
        self.trans = torch.nn.Parameter(torch.zeros(3, dtype=dtype, device=device))

    def matrix(self) -> torch.Tensor:
        """The current transform (4x4)."""
        return rigid_torch(self.rot, self.trans, self.centre) @ self.start

    def forward(self, image_to_world: torch.Tensor) -> torch.Tensor:
        """Poses ``(B, 4, 4)`` of the sweep's own frame carried into the first sweep's frame."""
        return self.matrix()[None] @ image_to_world

    def transform(self) -> np.ndarray:
        """The current transform as float64 NumPy (4x4)."""
        with torch.no_grad():
            T = rigid_torch(self.rot.double(), self.trans.double(), self.centre.double()) @ self.start.double()
        return T.cpu().numpy()

    def learned_change(self) -> dict[str, float]:
        """How far training moved the transform from the search's result: degrees and mm (at the centre)."""
        with torch.no_grad():
            return {"rotation_deg": float(torch.rad2deg(self.rot.norm())), "translation_mm": float(self.trans.norm())}


def transform_error(estimate: np.ndarray, truth: np.ndarray, centre_mm: np.ndarray) -> dict[str, float]:
    """Rotation error (degrees) and translation error (mm) of an estimated rigid transform.

    The rotation error is the angle of ``R_est^T R_true``; the translation error is the distance
    between ``T_est(c)`` and ``T_true(c)`` for ``c = centre_mm`` (the moving sweep's centre in its
    own frame), so that it does not depend on where the coordinate origin happens to lie.
    """
    E = np.asarray(estimate, dtype=np.float64)
    T = np.asarray(truth, dtype=np.float64)
    dR = E[:3, :3].T @ T[:3, :3]
    angle = float(np.degrees(np.linalg.norm(rotvec_of(dR))))
    c = np.append(np.asarray(centre_mm, dtype=np.float64), 1.0)
    return {"rotation_deg": angle, "translation_mm": float(np.linalg.norm((E @ c - T @ c)[:3]))}

