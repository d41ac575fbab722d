"""Reconstruct a sweep with 3D Gaussians: the paper's training loop, with its defaults and units.

(This module was ``sono3d.sweep.train``; that name remains as a deprecated alias for one release.)

:func:`reconstruct_sweep` takes a :class:`~sono3d.types.Sweep` and a :class:`ReconstructConfig` and
returns a :class:`ReconstructResult`: poses (tracked or the fan prior, optionally refined), initial
Gaussians on the training slices, Adam with one learning rate per parameter, the loss
``0.8 L1 + 0.2 (1 - SSIM)`` over slice batches (inside the sector when the sweep has one), optional
density control, then metrics on the training and held-out frames and, with a ground-truth volume,
on the volume.

Learning rates and units (see ``docs/sweep.md``). The paper's Table 2 gives means 0.20, opacity
0.03, scale 0.01, intensity 0.008. Its frames are 256 x 256 pixels and its Gaussians live in that
pixel frame (the initial scale exp(0.5) = 1.65 only makes sense in pixels), so the means' rate is
0.20 *pixels* per Adam step; here means are in mm, and the rate becomes
``0.20 * paper_pixel_mm`` with ``paper_pixel_mm = max(H dy, W dx) / 256`` (the frame's longer side
spans 256 paper pixels). Scales are optimised as logs and opacity as a logit, both unit-free, and
intensity is a grey level in both, so those three rates carry over unchanged. The paper gives no
rotation rate; 0.001 (3D Gaussian splatting's) is used.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from tqdm.auto import tqdm

from sono3d.errors import InputError
from sono3d.sweep.blend import render_blended
from sono3d.sweep.budget import plan_config
from sono3d.sweep.density import DensityControl, DensityState, control_step
from sono3d.sweep.evaluate import frame_metrics, holdout_split, swept_region, volume_metrics
from sono3d.sweep.gain import GAIN_MODES, FrameGain
from sono3d.sweep.gaussians import Gaussians
from sono3d.sweep.initialise import (
    default_gaussians,
    frame_mask,
    on_slice_means,
    paper_pixel_mm,
    sweep_bounds,
    uniform_means,
)
from sono3d.sweep.loss import hybrid_loss
from sono3d.sweep.poses import POSE_MODES, PoseRefinement, resolve_poses
from sono3d.sweep.raster import DEFAULT_CUTOFF, choose_backend, render_slices
from sono3d.sweep.render import render_frames, sample_volume
from sono3d.sweep.seed import faint_intensity, frame_seeded_model, residual_footprint
from sono3d.sweep.strategy import Densify, DensifyState, densify_step
from sono3d.types import Sweep, Volume

__all__ = ["PRESETS", "ReconstructConfig", "ReconstructResult", "reconstruct_sweep", "check_sweep", "epoch_bar",
           "gaussian_visibility"]

INIT_MODES = ("on-slice", "uniform", "frames")
#: FWHM of a Gaussian profile over its standard deviation
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class ReconstructConfig:
    """Every option of a sweep reconstruction. Build one with :meth:`preset`.

    Attributes
    ----------
    preset_name : str
        Name of the preset this config started from (``"preset"`` in the report).
    poses : ``"tracked"`` or ``"fan"``
        Where the frames lie (see :mod:`sono3d.sweep.poses`).
    span_deg, fan_axis, pivot_offset_mm
        The fan prior: total sweep angle, ``"lateral"`` (tilt) or ``"axial"`` (spin), and the
        pivot's distance above the probe face (mm).
    refine_poses : bool
        Learn a smooth per-frame pose correction (:class:`~sono3d.sweep.poses.PoseRefinement`).
    pose_basis : int
        Cosine basis functions of the correction.
    lr_pose_rot : float
        Adam rate of the correction's rotation coefficients, radians per step. Rates 5x higher
        (1e-3, with 4 basis functions) let the poses drift by up to 19 degrees on a jittered
        64-pixel sweep and cut the held-out SSIM from 0.96 to 0.86.
    lr_pose_trans_px : float
        Adam rate of its translation coefficients, in paper pixels per step (converted to mm like
        the means' rate).
    gaussians_per_slice : int
        Initial Gaussians per training slice (the total stays constant during training).
    init : ``"on-slice"`` or ``"uniform"``
        A grid on each training slice inside the sector, or uniform in the sweep's bounding box
        (the same total count).
    init_log_scale_px, init_opacity_logit, init_intensity : float
        The paper's initial values: log-scale 0.5 in paper pixels, opacity logit 1, intensity 0.5.
    epochs, batch : int
        Passes over the training frames and frames per Adam step.
    lr_means_px, lr_log_scales, lr_quats, lr_opacity, lr_intensity : float
        Adam rates (the means' in paper pixels per step; see the module notes).
    l1_weight : float
        Loss ``w L1 + (1 - w)(1 - SSIM)`` (the paper's "hybrid L1": 0.8).
    density_control : bool
        Prune and reinsert Gaussians (:mod:`sono3d.sweep.density`) on the ``density`` schedule.
        The paper found it no better than per-parameter rates alone and adopted the rates as its
        default; so do the presets.
    prune_unseen : bool
        After training, drop Gaussians that no training pixel sees (total weight over all
        training pixels below 0.01). They received no gradient, so nothing supports them; left
        in, they show up as spurious blobs on held-out planes and in the volume (beyond the paper).
    holdout : int
        Hold out every k-th frame from training for evaluation (0: none).
    dice_threshold : float
        Label threshold of the volume Dice (0.25 for label appearance).
    backend : str
        Rasterizer name, or ``"auto"`` for the fastest available.
    device : ``"cpu"`` or ``"cuda"``
    cutoff : float
        Mahalanobis radius beyond which a Gaussian contributes nothing.
    seed : int
        Seeds every random draw: initialisation, batch order, reinsertion.
    volume_spacing_mm : float or None
        Voxel size of the exported volume (None: the frame's larger pixel spacing, coarsened so
        the volume's longest side has at most 192 voxels).

    Beyond the paper (issue 13; the ``paper``, ``fast``, ``quick`` and ``small`` presets leave them off):

    l2_weight : float
        Adds ``l2_weight * MSE`` to the loss (0: the paper's loss). L1 is minimised by a median,
        the squared error (and so PSNR) by a mean; where speckle cannot be predicted the two differ.
    blend : bool
        Render weighted means of the intensities instead of their sum (:mod:`sono3d.sweep.blend`).
    slice_thickness_mm : float
        FWHM (mm) of the frames' Gaussian elevation profile: every frame integrates the volume over
        it (:mod:`sono3d.sweep.raster.reference`); 0 is the paper's thin plane.
    layer_mm : float or None
        ``init="frames"``: seed layers this far apart along the sweep (None: on every training frame).
    init_sigma_mm : (float, float) or None
        ``init="frames"``: initial standard deviations in the frame plane and along its normal (mm).
    init_fit_iterations : int
        ``init="frames"``: SIRT iterations fitting the initial intensities (:mod:`sono3d.sweep.seed`).
    faint_init : bool
        ``init="on-slice"`` or ``"uniform"``: instead of ``init_intensity``, the intensity that makes
        the initial rendering average the frames' mean grey level (:func:`sono3d.sweep.seed.faint_intensity`).
    min_scale_px : float
        Lower bound of every standard deviation, in pixels of the frame's finer spacing (0: none).
    min_scale_elev_mm : float
        Lower bound of the third standard deviation (mm; 0: none): for ``init="frames"`` the one along
        the seeded frame's normal, so that a Gaussian keeps reaching the neighbouring frames' gaps.
    gain : ``"none"``, ``"frame"`` or ``"depth"``
        Per-frame gain compensation (:mod:`sono3d.sweep.gain`).
    gain_depth_terms : int
        Depth terms of ``gain="depth"``.
    lr_gain : float
        Adam rate of the gain coefficients (natural log of the gain per step).
    lr_intensity_rel : float
        If positive, the intensity rate is this times the median ``|I|`` after initialisation
        (``lr_intensity`` is ignored): a rate in the intensities' own unit.
    densify : Densify or None
        Adaptive densification (:mod:`sono3d.sweep.strategy`).
    auto : bool
        Read the sweep and choose the fields not named in ``fixed`` (:mod:`sono3d.sweep.budget`).
    fixed : tuple of str
        Fields the user set explicitly; ``auto`` leaves them alone.
    """

    preset_name: str = "paper"
    poses: str = "tracked"
    span_deg: float = 120.0
    fan_axis: str = "lateral"
    pivot_offset_mm: float = 0.0
    refine_poses: bool = False
    pose_basis: int = 3
    lr_pose_rot: float = 2e-4
    lr_pose_trans_px: float = 0.01
    gaussians_per_slice: int = 120
    init: str = "on-slice"
    init_log_scale_px: float = 0.5
    init_opacity_logit: float = 1.0
    init_intensity: float = 0.5
    epochs: int = 60
    batch: int = 32
    lr_means_px: float = 0.20
    lr_log_scales: float = 0.01
    lr_quats: float = 0.001
    lr_opacity: float = 0.03
    lr_intensity: float = 0.008
    l1_weight: float = 0.8
    density_control: bool = False
    density: DensityControl = field(default_factory=DensityControl)
    prune_unseen: bool = True
    holdout: int = 5
    dice_threshold: float = 0.25
    backend: str = "auto"
    device: str = "cpu"
    cutoff: float = DEFAULT_CUTOFF
    seed: int = 0
    volume_spacing_mm: float | None = None
    l2_weight: float = 0.0
    blend: bool = False
    slice_thickness_mm: float = 0.0
    layer_mm: float | None = None
    init_sigma_mm: tuple[float, float] | None = None
    init_fit_iterations: int = 6
    faint_init: bool = False
    min_scale_px: float = 0.0
    min_scale_elev_mm: float = 0.0
    gain: str = "none"
    gain_depth_terms: int = 3
    lr_gain: float = 0.01
    lr_intensity_rel: float = 0.0
    densify: Densify | None = None
    auto: bool = False
    fixed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.poses not in POSE_MODES:
            raise InputError(f"poses must be one of {', '.join(POSE_MODES)}, got {self.poses!r}")
        if self.init not in INIT_MODES:
            raise InputError(f"init must be one of {', '.join(INIT_MODES)}, got {self.init!r}")
        if self.fan_axis not in ("lateral", "axial"):
            raise InputError(f"fan axis must be 'lateral' or 'axial', got {self.fan_axis!r}")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        for name in ("epochs", "batch", "gaussians_per_slice"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if self.holdout < 0 or self.holdout == 1:
            raise InputError(f"holdout must be 0 (none) or at least 2, got {self.holdout}")
        for f in fields(self):
            if f.name.startswith("lr_"):
                v = getattr(self, f.name)
                if not (math.isfinite(v) and v >= 0):
                    raise InputError(f"learning rate {f.name} must be >= 0, got {v}")
        if not 0.0 <= self.l1_weight <= 1.0:
            raise InputError(f"l1_weight must be in [0, 1], got {self.l1_weight}")
        if not (math.isfinite(self.l2_weight) and self.l2_weight >= 0):
            raise InputError(f"l2_weight must be >= 0, got {self.l2_weight}")
        if not (self.cutoff > 0):
            raise InputError(f"cutoff must be positive, got {self.cutoff}")
        if self.pose_basis < 0:
            raise InputError(f"pose basis must be >= 0, got {self.pose_basis}")
        if not (math.isfinite(self.slice_thickness_mm) and self.slice_thickness_mm >= 0):
            raise InputError(f"slice thickness must be >= 0 mm, got {self.slice_thickness_mm}")
        if self.gain not in GAIN_MODES:
            raise InputError(f"gain must be one of {', '.join(GAIN_MODES)}, got {self.gain!r}")
        if ((self.layer_mm is not None and not self.layer_mm > 0) or self.init_fit_iterations < 0 or self.min_scale_px < 0
                or not self.min_scale_elev_mm >= 0):
            raise InputError(f"bad initialisation options: layer_mm={self.layer_mm}, "
                             f"init_fit_iterations={self.init_fit_iterations}, min_scale_px={self.min_scale_px}, "
                             f"min_scale_elev_mm={self.min_scale_elev_mm}")
        if self.init_sigma_mm is not None and not all(v > 0 for v in self.init_sigma_mm):
            raise InputError(f"initial standard deviations must be positive, got {self.init_sigma_mm} mm")

    @classmethod
    def preset(cls, name: str = "paper", **overrides: Any) -> "ReconstructConfig":
        """A named configuration of :data:`PRESETS` (``auto``, ``paper``, ``fast``, ``quick`` or ``small``)
        with some fields replaced.

        ``None`` values in ``overrides`` are ignored, so CLI options left unset keep the preset's.
        """
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
        known = {f.name for f in fields(cls)}
        bad = [k for k in overrides if k not in known]
        if bad:
            raise InputError(f"unknown reconstruction option(s): {', '.join(bad)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        base = PRESETS[name]
        if base.auto:  # what the user set, the sweep-reading defaults must not change
            given["fixed"] = tuple(sorted(set(base.fixed) | (set(given) - {"seed", "backend", "device", "fixed"})))
        return replace(base, **given)

    @property
    def elevation_sigma_mm(self) -> float:
        """Standard deviation of the elevation profile (``slice_thickness_mm`` is its FWHM)."""
        return self.slice_thickness_mm / FWHM_PER_SIGMA

    @classmethod
    def from_preset(cls, name: str = "paper", **overrides: Any) -> "ReconstructConfig":
        """Deprecated alias of :meth:`preset` (the one preset constructor of every config), kept for one release."""
        return cls.preset(name, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, as ``report.json`` stores them (the preset's name under ``"preset"``)."""
        return {("preset" if k == "preset_name" else k): v for k, v in asdict(self).items()}


#: Named configurations. ``paper``: Table 2 with about 120 Gaussians per slice (the issue's figure;
#: the paper's section 5.3.1 runs used 276). ``auto``: the CLI default; ``fast`` until the sweep is read,
#: then made concrete by :func:`sono3d.sweep.budget.plan_config` (``fast`` as it is for a dense sweep,
#: the frame-seeded blended recipe for a sparse one). ``fast``: the demo default, tuned for held-out
#: frames (a 4x lower means rate so Gaussians stay on the slices, a 3x wider start so they span the
#: gap between neighbouring frames, batches of 8 for 4x more steps; see ``docs/sweep.md``) on the
#: fastest backend (100 frames 256²: about 25 s on two cores, train SSIM 0.987). ``quick``: ``fast``
#: stopped at 40 epochs (two thirds of the time, train SSIM 0.978). ``small``: a few seconds, for tests.
PRESETS: dict[str, ReconstructConfig] = {
    "paper": ReconstructConfig(preset_name="paper"),
    "fast": ReconstructConfig(preset_name="fast", batch=8, init_log_scale_px=1.6, lr_means_px=0.05),
    "quick": ReconstructConfig(preset_name="quick", batch=8, init_log_scale_px=1.6, lr_means_px=0.05, epochs=40),
    "small": ReconstructConfig(preset_name="small", gaussians_per_slice=40, epochs=20, batch=4),
    "auto": ReconstructConfig(preset_name="auto", batch=8, init_log_scale_px=1.6, lr_means_px=0.05, auto=True),
}


@dataclass
class ReconstructResult:
    """What :func:`reconstruct_sweep` returns.

    Attributes
    ----------
    gaussians : Gaussians
        The trained model (detached, CPU, float32).
    poses : ndarray, shape (N, 4, 4)
        Poses of all frames as finally used (prior plus learned correction).
    prior_poses : ndarray, shape (N, 4, 4)
        Poses before refinement (tracked or the fan prior).
    train_index, holdout_index : ndarray of int
    rendered : ndarray, shape (N, H, W)
        Every frame re-rendered at its final pose, clipped to [0, 1].
    frame_mask : ndarray of bool, shape (H, W)
        Pixels the loss and metrics count.
    history : list of dict
        Per epoch: ``epoch``, ``loss``, ``l1``, ``ssim`` (training batch means), ``seconds``, ``gaussians``.
    report : dict
        ``train``, ``holdout`` (``l1 l2 ssim psnr ncc frames``), ``seconds``, ``gaussians``, ``epochs``,
        ``backend``, ``config``, ``timings``, ``density``, ``pose_refinement``, ``volume`` (with truth).
    timings : dict
        Seconds spent in ``setup``, ``train``, ``evaluate``, ``volume`` and ``total``.
    """

    gaussians: Gaussians
    poses: np.ndarray
    prior_poses: np.ndarray
    train_index: np.ndarray
    holdout_index: np.ndarray
    rendered: np.ndarray
    frame_mask: np.ndarray
    history: list[dict[str, float]]
    report: dict[str, Any]
    timings: dict[str, float]


def check_sweep(sweep: Sweep) -> None:
    """Raise :class:`InputError` for a sweep no reconstruction can use (one line each)."""
    if sweep.n_frames < 2:
        raise InputError(f"a reconstruction needs at least 2 frames, the sweep has {sweep.n_frames}")
    H, W = sweep.shape
    if min(H, W) < 11:
        raise InputError(f"frames of {H}x{W} pixels are too small: the SSIM loss needs at least 11x11")
    if float(np.max(sweep.frames)) <= 0.0:
        raise InputError("every frame is black (all zeros): there is nothing to reconstruct")


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(name)


def _initial_gaussians(cfg: ReconstructConfig, poses: np.ndarray, mask: np.ndarray, scale_mm: float,
                       rng: np.random.Generator, device: torch.device) -> Gaussians:
    if cfg.init == "on-slice":
        means = on_slice_means(poses, mask, cfg.gaussians_per_slice, rng)
    else:
        lo, hi = sweep_bounds(poses, mask)
        means = uniform_means(lo, hi, cfg.gaussians_per_slice * len(poses), rng)
    return default_gaussians(means, scale_mm, cfg.init_opacity_logit, cfg.init_intensity, device=device)


def gaussian_visibility(model: Gaussians, poses: torch.Tensor, shape: tuple[int, int], mask: torch.Tensor | None,
                        backend: str, cutoff: float, batch: int = 16, elevation_sigma: float = 0.0) -> torch.Tensor:
    """Total weight ``sum_p sigmoid(o_g) exp(-d^T Sigma^-1 d / 2)`` of each Gaussian over the pixels of ``poses``.

    Computed as the gradient of the summed rendering with respect to the intensities (the
    rendering is linear in them), so any backend gives it. Shape ``(G,)``, in pixels.
    """
    inten = model.intensities.detach().clone().requires_grad_(True)
    for s in range(0, poses.shape[0], batch):
        img = render_slices(model.means.detach(), model.log_scales.detach(), model.quats.detach(),
                            model.opacity_logits.detach(), inten, poses[s:s + batch], shape, backend=backend,
                            cutoff=cutoff, elevation_sigma=elevation_sigma)
        (img if mask is None else img * mask).sum().backward()
    assert inten.grad is not None
    return inten.grad.detach()


@contextlib.contextmanager
def epoch_bar(epochs: int, desc: str, progress: bool) -> Iterator[Callable[[np.ndarray], None]]:
    """A progress bar over the training epochs (none without ``progress``), closed however training
    ends; yields ``tick(sums)``: one epoch done, ``sums`` its mean (loss, L1, SSIM)."""
    bar = tqdm(total=epochs, desc=desc, unit="epoch", leave=False, dynamic_ncols=True) if progress else None

    def tick(sums: np.ndarray) -> None:
        if bar is not None:
            bar.set_postfix(loss=f"{sums[0]:.4f}", ssim=f"{sums[2]:.3f}")
            bar.update(1)

    try:
        yield tick
    finally:
        if bar is not None:
            bar.close()


class _Deterministic:
    """Turn on deterministic algorithms for a block, restoring the previous setting afterwards."""

    def __enter__(self) -> None:
        self.prev = torch.are_deterministic_algorithms_enabled()
        self.prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)

    def __exit__(self, *exc: object) -> None:
        torch.use_deterministic_algorithms(self.prev, warn_only=self.prev_warn)


def reconstruct_sweep(sweep: Sweep, config: ReconstructConfig | None = None, truth: Volume | None = None,
                      progress: bool = True, mask: np.ndarray | None = None,
                      prior_poses: np.ndarray | None = None) -> ReconstructResult:
    """Fit 3D Gaussians to a sweep and evaluate them (the paper's method end to end).

    Parameters
    ----------
    sweep : Sweep
        Frames ``(N, H, W)`` in [0, 1]; poses are used when ``config.poses == "tracked"``.
    config : ReconstructConfig, optional
        Defaults to the ``fast`` preset.
    truth : Volume, optional
        Ground-truth volume in the same world frame; adds ``report["volume"]`` (PSNR, NCC, Dice).
    progress : bool
        Show a progress bar with the loss (on stderr).
    mask : ndarray of bool, shape (H, W), optional
        Pixels the loss and the metrics count (e.g. a PLUS clip rectangle); default: the sweep's
        sector, or every pixel without one.
    prior_poses : ndarray, shape (N, 4, 4), optional
        Poses to use instead of resolving ``config.poses`` (e.g. a fan whose span was estimated).

    Returns
    -------
    ReconstructResult

    Raises
    ------
    InputError
        Fewer than 2 frames (or training frames), frames under 11 pixels, all-black frames,
        missing or non-rigid poses, a bad fan option, an unavailable backend or device.
    """
    cfg = config if config is not None else PRESETS["fast"]
    t0 = time.perf_counter()
    check_sweep(sweep)
    device = _device(cfg.device)
    backend = choose_backend(cfg.backend, cfg.device)
    prior = (resolve_poses(sweep, cfg.poses, cfg.span_deg, cfg.fan_axis, cfg.pivot_offset_mm)
             if prior_poses is None else np.asarray(prior_poses, dtype=np.float64))
    train_idx, hold_idx = holdout_split(sweep.n_frames, cfg.holdout)
    shape = sweep.shape
    mask_np = frame_mask(shape, sweep.spacing_mm, sweep.sector) if mask is None else np.asarray(mask, dtype=bool)
    if mask_np.shape != shape or not mask_np.any():
        raise InputError(f"the pixel mask must be a non-empty boolean {shape[0]}x{shape[1]} array")
    use_mask = sweep.sector is not None or mask is not None
    plan = None
    if cfg.auto:  # read the sweep and choose the defaults (sono3d.sweep.budget)
        cfg, plan = plan_config(cfg, sweep, prior, train_idx, mask_np)
    esig = cfg.elevation_sigma_mm
    px_mm = paper_pixel_mm(shape, sweep.spacing_mm)
    # At least one real pixel: on frames much smaller than 256 pixels the paper's scale is below a
    # pixel, and a Gaussian between pixel centres would be invisible and get no gradient.
    scale_mm = max(math.exp(cfg.init_log_scale_px) * px_mm, max(sweep.spacing_mm))

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    dtype = torch.float32

    with _Deterministic():
        seed_info = None
        if cfg.init == "frames":
            sig = cfg.init_sigma_mm or (scale_mm, scale_mm)
            init, seed_info = frame_seeded_model(prior[train_idx], sweep.frames[train_idx], mask_np,
                                                 cfg.gaussians_per_slice, cfg.layer_mm, sig, cfg.init_opacity_logit,
                                                 cfg.init_fit_iterations, backend, cfg.cutoff, esig, rng, dtype,
                                                 device, blended=cfg.blend)
        else:
            init = _initial_gaussians(cfg, prior[train_idx], mask_np, scale_mm, rng, device)
        init_intensity = cfg.init_intensity
        if cfg.faint_init and cfg.init != "frames":
            init_intensity = faint_intensity(
                init, torch.as_tensor(prior[train_idx], dtype=dtype, device=device),
                torch.as_tensor(sweep.frames[train_idx], dtype=dtype, device=device),
                torch.as_tensor(mask_np, dtype=dtype, device=device), backend, cfg.cutoff, esig)
            init.intensities = torch.full_like(init.intensities, init_intensity)
            seed_info = {"faint_intensity": init_intensity}
        params = {k: torch.nn.Parameter(v.clone()) for k, v in init.tensors().items()}
        lr_int = cfg.lr_intensity
        if cfg.lr_intensity_rel > 0:
            lr_int = cfg.lr_intensity_rel * max(float(init.intensities.abs().median()), 1e-6)
        rates = {"means": cfg.lr_means_px * px_mm, "log_scales": cfg.lr_log_scales, "quats": cfg.lr_quats,
                 "opacity_logits": cfg.lr_opacity, "intensities": lr_int}
        groups = [{"params": [params[k]], "lr": rates[k], "name": k} for k in params]
        floor_px = cfg.min_scale_px * min(sweep.spacing_mm)
        floor = (floor_px, floor_px, max(floor_px, cfg.min_scale_elev_mm))
        min_log_scale = torch.log(torch.tensor(floor, dtype=dtype, device=device)) if max(floor) > 0 else None
        gain = None
        if cfg.gain != "none":
            gain = FrameGain(sweep.n_frames, train_idx, shape[0], cfg.gain, cfg.gain_depth_terms, dtype, device)
            groups.append({"params": [gain.beta], "lr": cfg.lr_gain, "name": "gain"})
        refine = None
        if cfg.refine_poses and cfg.pose_basis > 0:
            lo, hi = sweep_bounds(prior, mask_np)
            refine = PoseRefinement(sweep.n_frames, cfg.pose_basis, (lo + hi) / 2.0, dtype, device)
            groups += [{"params": [refine.rot], "lr": cfg.lr_pose_rot, "name": "pose_rot"},
                       {"params": [refine.trans], "lr": cfg.lr_pose_trans_px * px_mm, "name": "pose_trans"}]
        # the fused (single-kernel) Adam: a step over the five tensors in one call instead of ~70 small ops
        opt = torch.optim.Adam(groups, eps=1e-15)

        # Frames stay in their stored dtype (float16 for large sweeps); a batch is converted when used.
        frames = torch.as_tensor(sweep.frames, device=device)
        poses_t = torch.as_tensor(prior, dtype=dtype, device=device)
        mask_t = torch.as_tensor(mask_np, dtype=dtype, device=device) if use_mask else None
        train_t = torch.as_tensor(train_idx, dtype=torch.long)
        density_state = DensityState.create(len(init), device)
        densify_state = DensifyState.create(len(init), device)
        total_steps = cfg.epochs * math.ceil(len(train_idx) / cfg.batch)
        step = 0

        def make_new(means: torch.Tensor) -> dict[str, torch.Tensor]:
            return default_gaussians(means.detach().cpu().numpy(), scale_mm, cfg.init_opacity_logit,
                                     init_intensity, dtype=dtype, device=device).tensors()

        def poses_of(index: torch.Tensor) -> torch.Tensor:
            base = poses_t[index.to(device)]
            return base if refine is None else refine(index.to(device), base)

        draw = render_blended if cfg.blend else render_slices

        def residual_score(p: dict[str, torch.Tensor]) -> torch.Tensor:
            """Densification's score: the training frames' mean absolute residual under each Gaussian."""
            g = Gaussians(**{k: v.detach() for k, v in p.items()})
            idx = train_t.to(device)
            gains = None if gain is None else gain.gains(idx).detach()
            return residual_footprint(g, poses_of(idx).detach(), frames[idx].to(dtype), mask_t, backend, cfg.cutoff,
                                      esig, cfg.blend, gains)

        t_setup = time.perf_counter()
        history: list[dict[str, float]] = []
        with epoch_bar(cfg.epochs, "reconstruct", progress) as tick:
            for epoch in range(cfg.epochs):
                te = time.perf_counter()
                order = train_t[torch.randperm(len(train_t), generator=gen)]
                sums = np.zeros(3)
                for s in range(0, len(order), cfg.batch):
                    idx = order[s:s + cfg.batch]
                    M = poses_of(idx)
                    img = draw(params["means"], params["log_scales"], params["quats"], params["opacity_logits"],
                               params["intensities"], M, shape, backend=backend, cutoff=cfg.cutoff,
                               elevation_sigma=esig)
                    if gain is not None:
                        img = gain(idx.to(device), img)
                    target = frames[idx.to(device)].to(dtype)
                    loss, l1, ssim = hybrid_loss(img, target, mask_t, cfg.l1_weight)
                    if cfg.l2_weight > 0:
                        sq = (img - target) ** 2 if mask_t is None else (img - target) ** 2 * mask_t
                        n_px = img.numel() if mask_t is None else float(mask_t.sum()) * img.shape[0]
                        loss = loss + cfg.l2_weight * sq.sum() / n_px
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.densify is not None:
                        densify_state.accumulate(params["means"].grad)
                    opt.step()
                    step += 1
                    if min_log_scale is not None:
                        with torch.no_grad():
                            params["log_scales"].clamp_(min=min_log_scale)
                    if cfg.densify is not None:
                        params = densify_step(cfg.densify, densify_state, params, opt, step, total_steps, gen,
                                              residual_score)
                    sums += np.array([loss.item(), l1.item(), ssim.item()]) * len(idx)
                sums /= len(order)
                if cfg.density_control:
                    params = control_step(cfg.density, density_state, params, opt, epoch + 1, make_new, gen)
                history.append({"epoch": epoch + 1, "loss": float(sums[0]), "l1": float(sums[1]),
                                "ssim": float(sums[2]), "seconds": time.perf_counter() - te,
                                "gaussians": int(params["means"].shape[0])})
                tick(sums)
        t_train = time.perf_counter()

        model = Gaussians(**{k: v.detach() for k, v in params.items()})
        with torch.no_grad():
            all_idx = torch.arange(sweep.n_frames)
            final_poses = poses_of(all_idx).detach().cpu().numpy().astype(np.float64)
        unseen = 0
        if cfg.prune_unseen:
            M_train = torch.as_tensor(final_poses[train_idx], dtype=dtype, device=device)
            vis = gaussian_visibility(model, M_train, shape, mask_t, backend, cfg.cutoff, elevation_sigma=esig)
            seen = vis >= 0.01
            unseen = int((~seen).sum())
            if unseen:
                model = model.select(seen)
        # Frames are grey levels in [0, 1]: the rendering is clipped as every exported image is.
        rendered = render_frames(model, final_poses, shape, backend=backend, cutoff=cfg.cutoff, elevation_sigma=esig,
                                 blended=cfg.blend)
        if gain is not None:
            with torch.no_grad():
                g = gain.gains(torch.arange(sweep.n_frames, device=device)).cpu().numpy()
            rendered *= g[:, :, None].astype(np.float32)
        np.clip(rendered, 0.0, 1.0, out=rendered)  # in place: a large sweep's rendering is not copied
        mmask = mask_np if use_mask else None
        report: dict[str, Any] = {
            "train": frame_metrics(rendered, sweep.frames, mmask, index=train_idx),
            "holdout": frame_metrics(rendered, sweep.frames, mmask, index=hold_idx),
        }
        t_eval = time.perf_counter()
        if truth is not None:
            # Score on every s-th voxel of the truth so that at most ~2M voxels are rendered.
            s = max(1, math.ceil((truth.array.size / 2e6) ** (1 / 3)))
            tv = Volume(np.asarray(truth.array, dtype=np.float32)[::s, ::s, ::s],
                        truth.affine @ np.diag([s, s, s, 1.0]))
            region = swept_region(tv.affine, tv.shape, final_poses, mask_np)
            recon = _sample_in_region(model, tv, region, backend, cfg.cutoff)
            report["volume"] = {**volume_metrics(recon, tv.array, region, cfg.dice_threshold), "stride": s}
        t_vol = time.perf_counter()

    timings = {"setup": t_setup - t0, "train": t_train - t_setup, "evaluate": t_eval - t_train,
               "volume": t_vol - t_eval, "total": t_vol - t0}
    report.update({
        "seconds": timings["total"],
        "gaussians": len(model),
        "epochs": cfg.epochs,
        "frames": {"total": sweep.n_frames, "train": int(train_idx.size), "holdout": int(hold_idx.size),
                   "shape": list(shape)},
        "backend": backend,
        "poses": cfg.poses,
        "paper_pixel_mm": px_mm,
        "learning_rates": {g["name"]: g["lr"] for g in opt.param_groups},
        "final_loss": history[-1]["loss"] if history else None,
        "timings": timings,
        "density": density_state.log,
        "unseen_pruned": unseen,
        "pose_refinement": refine.summary() if refine is not None else None,
        "config": cfg.to_dict(),
        "slice_thickness_mm": cfg.slice_thickness_mm,
        "seed": seed_info,
        "gain": gain.summary() if gain is not None else None,
        "densify": densify_state.log,
        "plan": plan,
    })
    return ReconstructResult(
        gaussians=model.to("cpu", torch.float32), poses=final_poses, prior_poses=prior, train_index=train_idx,
        holdout_index=hold_idx, rendered=rendered, frame_mask=mask_np, history=history, report=report,
        timings=timings,
    )


def _sample_in_region(model: Gaussians, truth: Volume, region: np.ndarray, backend: str,
                      cutoff: float) -> np.ndarray:
    """The model on the truth's grid, rendered only over the bounding box of ``region`` (zeros elsewhere)."""
    out = np.zeros(truth.shape, dtype=np.float32)
    if not region.any():
        return out
    nz = np.nonzero(region)
    lo = [int(v.min()) for v in nz]
    hi = [int(v.max()) + 1 for v in nz]
    shift = np.eye(4)
    shift[:3, 3] = lo
    sub = sample_volume(model, truth.affine @ shift, tuple(h - l for l, h in zip(lo, hi)), backend=backend,
                        cutoff=cutoff)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = sub.array
    return out
