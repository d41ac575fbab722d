"""Several sweeps, one volume: joint Gaussian reconstruction with sweep-to-sweep registration (beyond the paper).

:func:`reconstruct_sweeps` fits one set of 3D Gaussians to the frames of several sweeps. The first
sweep's frame is the reconstruction's frame; every other sweep reaches it through a rigid
transform:

* sweeps in one tracker frame (both tracked, neither marked ``meta["pose_frame"] == "own"``) keep
  the identity, unless :attr:`JointConfig.register_tracked` (``--register``) asks for a transform,
  which then starts at the identity (local refinement only);
* every other sweep (sensorless fan poses, or a tracked sweep with a sensorless first one) is
  registered with a coarse global search and local refinement
  (:func:`sono3d.sweep.register.register_sweeps`) on its training frames;
* the transforms of registered sweeps are then learned with the Gaussians
  (:class:`~sono3d.sweep.register.SweepTransform`: a rotation vector about the sweep's centre and a
  translation, Adam, their own rates).

A sweep whose registration fails (its best match is too weak or too small: the sweeps do not image
the same anatomy) is left out of the joint model and reported (``status: "failed"``).

Training is the single-sweep loop of :mod:`sono3d.sweep.reconstruct` over the union of the
sweeps' training frames: each step renders a batch of frames of one sweep (its own frame size,
pixel spacing and sector), batches of all sweeps in one shuffled order per epoch. Gaussians start
on the first sweep's training slices as in the single-sweep case and on the other sweeps' slices
only where no earlier sweep imaged (:attr:`JointConfig.seeding`), so the density is one sweep's
everywhere and a later sweep's frames must be explained by Gaussians placed by the first.

:func:`score_frames` renders a model on frames placed through a registration and scores them: the
paper's cross-view protocol (train on one sweep, score on the other's frames) and the joint model's
held-out frames use it alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from sono3d.errors import InputError
from sono3d.sweep.density import DensityState, control_step
from sono3d.geometry.transforms import invert_rigid
from sono3d.sweep.evaluate import frame_metrics, holdout_split, in_swept_region, swept_region, volume_metrics
from sono3d.sweep.gaussians import Gaussians
from sono3d.sweep.initialise import default_gaussians, frame_mask, on_slice_means, paper_pixel_mm, sweep_bounds
from sono3d.sweep.loss import hybrid_loss
from sono3d.sweep.poses import POSE_MODES, PoseRefinement, resolve_poses
from sono3d.sweep.raster import choose_backend, render_slices
from sono3d.sweep.reconstruct import (
    PRESETS,
    ReconstructConfig,
    ReconstructResult,
    _Deterministic,
    _device,
    _sample_in_region,
    check_sweep,
    epoch_bar,
    gaussian_visibility,
    reconstruct_sweep,
)
from sono3d.sweep.register import (
    SearchConfig,
    SweepTransform,
    register_sweeps,
    rotvec_of,
    sweep_centre,
    transform_error,
)
from sono3d.sweep.render import render_frames
from sono3d.types import Sweep, Volume

__all__ = ["REGISTER_MODES", "SweepOptions", "JointConfig", "SweepFit", "JointResult", "reconstruct_sweeps",
           "registration_mode", "score_frames", "cross_view_protocol"]

#: How a sweep reaches the first sweep's frame: ``auto`` (see :func:`registration_mode`), ``none``
#: (identity), ``refine`` (learned from the identity, local refinement only) or ``search`` (global
#: search, local refinement, learned).
REGISTER_MODES = ("auto", "none", "refine", "search")


@dataclass(frozen=True)
class SweepOptions:
    """Per-sweep options of a joint reconstruction (one entry of a plan file).

    ``None`` keeps the value of the run's :class:`~sono3d.sweep.reconstruct.ReconstructConfig`.

    Attributes
    ----------
    poses : ``"tracked"`` or ``"fan"`` or None
    span_deg, fan_axis, pivot_offset_mm
        The fan prior of this sweep.
    register : str
        One of :data:`REGISTER_MODES`.
    """

    poses: str | None = None
    span_deg: float | None = None
    fan_axis: str | None = None
    pivot_offset_mm: float | None = None
    register: str = "auto"

    def __post_init__(self) -> None:
        if self.poses is not None and self.poses not in POSE_MODES:
            raise InputError(f"poses must be one of {', '.join(POSE_MODES)}, got {self.poses!r}")
        if self.register not in REGISTER_MODES:
            raise InputError(f"register must be one of {', '.join(REGISTER_MODES)}, got {self.register!r}")

    def config_for(self, config: ReconstructConfig) -> ReconstructConfig:
        """``config`` with this sweep's pose options put in."""
        return replace(config, **{k: v for k, v in (("poses", self.poses), ("span_deg", self.span_deg),
                                                    ("fan_axis", self.fan_axis),
                                                    ("pivot_offset_mm", self.pivot_offset_mm)) if v is not None})


@dataclass(frozen=True)
class JointConfig:
    """Options of a joint reconstruction beyond the single-sweep :class:`ReconstructConfig`.

    Attributes
    ----------
    search : SearchConfig
        The registration's global search and refinement.
    register_tracked : bool
        Learn a transform (from the identity) for tracked sweeps in one tracker frame too.
    lr_register_rot : float
        Adam rate of the learned rotation vectors, radians per step.
    lr_register_trans_px : float
        Adam rate of the learned translations, paper pixels per step (as the means' rate).
    refine_rate : float
        Factor of both registration rates for sweeps refined from the identity (``refine``: tracked
        sweeps with ``--register``). They start at the tracker's placement and have no offset to
        travel, while full-rate steps let the transform wander as long as the model is coarse:
        measured on a tiny tracked pair (tests/test_register.py), the full rates drifted 1.3 degrees
        from the true identity over 12 epochs, a fifth of them 0.24 degrees.
    register_warmup : float
        Fraction of the epochs (at least one, and never all) trained on the frames of the sweeps that are not
        being registered (the first, and any kept at the identity) before the others join: their
        learned transforms then follow the gradient of a model that a misregistration has not yet
        blurred, which is smooth and points the right way; measured on a seed whose search ended
        1.7 degrees off, with every sweep from the start the transform wandered up to 4 degrees in
        the first epochs. After the warm-up the registration rates fall along a cosine from their
        value to a tenth of it.
    seeding : ``"first"`` or ``"all"``
        Where the Gaussians start. ``all``: on every training slice of every sweep,
        ``gaussians_per_slice * gaussian_fraction`` per slice. ``first``: on the first sweep's
        training slices (``gaussians_per_slice`` each), and on the other sweeps' slices only outside
        the regions the sweeps before them imaged (the same density). With ``first`` every frame of a
        later sweep that crosses the first sweep's region must be explained by Gaussians placed by
        the first sweep, so a misregistration cannot be absorbed by Gaussians seeded at the wrong
        place, and the learned transform converges faster.
    gaussian_fraction : float or None
        ``seeding="all"``: initial Gaussians per training slice are ``gaussians_per_slice *
        gaussian_fraction`` (None: ``1 / number of sweeps``, the same total as one sweep).
    """

    search: SearchConfig = field(default_factory=SearchConfig)
    register_tracked: bool = False
    lr_register_rot: float = 1e-3
    lr_register_trans_px: float = 0.05
    refine_rate: float = 0.2
    register_warmup: float = 0.2
    seeding: str = "first"
    gaussian_fraction: float | None = None

    def __post_init__(self) -> None:
        for name in ("lr_register_rot", "lr_register_trans_px", "refine_rate"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be >= 0, got {v}")
        if not (0 <= self.register_warmup < 1):
            raise InputError(f"register_warmup must be in [0, 1), got {self.register_warmup}")
        if self.seeding not in ("first", "all"):
            raise InputError(f"seeding must be 'first' or 'all', got {self.seeding!r}")
        if self.gaussian_fraction is not None and not (0 < self.gaussian_fraction <= 1):
            raise InputError(f"gaussian_fraction must be in (0, 1], got {self.gaussian_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SweepFit:
    """One sweep of a joint reconstruction.

    Attributes
    ----------
    name : str
    prior_poses : ndarray, shape (N, 4, 4)
        Poses in the sweep's own frame (tracked or the fan prior).
    poses : ndarray, shape (N, 4, 4)
        Final poses in the first sweep's frame (transform, and per-frame correction if refined).
    transform : ndarray, shape (4, 4)
        The sweep's own frame to the first sweep's frame.
    train_index, holdout_index : ndarray of int
    frame_mask : ndarray of bool, shape (H, W)
    rendered : ndarray, shape (N, H, W) or None
        The joint model on every frame (None for a sweep left out).
    registration : dict
        ``mode``, ``status`` (``reference``, ``identity``, ``registered`` or ``failed``), the
        search's summary, the learned change and (with a true transform) the errors.
    """

    name: str
    prior_poses: np.ndarray
    poses: np.ndarray
    transform: np.ndarray
    train_index: np.ndarray
    holdout_index: np.ndarray
    frame_mask: np.ndarray
    rendered: np.ndarray | None
    registration: dict[str, Any]

    @property
    def joined(self) -> bool:
        return self.registration["status"] != "failed"


@dataclass
class JointResult:
    """What :func:`reconstruct_sweeps` returns: the model (first sweep's frame), the sweeps, the report."""

    gaussians: Gaussians
    sweeps: list[SweepFit]
    history: list[dict[str, float]]
    report: dict[str, Any]
    timings: dict[str, float]

    @property
    def failed(self) -> list[SweepFit]:
        return [s for s in self.sweeps if not s.joined]


def registration_mode(first: Sweep, sweep: Sweep, first_poses: str, poses: str, option: str,
                      register_tracked: bool) -> str:
    """The registration a sweep gets: ``none``, ``refine`` or ``search`` (``option`` unless ``auto``).

    ``auto``: both sweeps tracked in one tracker frame (neither marked ``meta["pose_frame"] ==
    "own"``) -> ``none``, or ``refine`` with ``register_tracked``; otherwise ``search``.
    """
    if option != "auto":
        return option
    shared = (first_poses == "tracked" and poses == "tracked" and first.meta.get("pose_frame") != "own"
              and sweep.meta.get("pose_frame") != "own")
    if shared:
        return "refine" if register_tracked else "none"
    return "search"


def score_frames(model: Gaussians, frames: np.ndarray, poses: np.ndarray, mask: np.ndarray | None,
                 backend: str = "auto", cutoff: float = 3.0) -> dict[str, float]:
    """Frame metrics (:func:`~sono3d.sweep.evaluate.frame_metrics`) of a model rendered at ``poses``.

    Parameters
    ----------
    model : Gaussians
    frames : ndarray, shape (n, H, W)
        Recorded frames.
    poses : ndarray, shape (n, 4, 4)
        Their poses in the model's frame (e.g. a registration times their own poses).
    mask : ndarray of bool, shape (H, W), optional
        Pixels that count.
    """
    shape = tuple(np.shape(frames)[1:])
    rendered = np.clip(render_frames(model, poses, shape, backend=choose_backend(backend, "cpu"), cutoff=cutoff),
                       0.0, 1.0)
    return frame_metrics(rendered, frames, mask)


def _register_rate(epoch: int, epochs: int, warmup: int) -> float:
    """Factor of the registration rates in ``epoch``: 0 while the Gaussians settle, then a cosine
    from 1 down to 0.1 (large early steps to travel, small late ones to settle precisely)."""
    if epoch < warmup:
        return 0.0
    span = max(epochs - warmup, 1)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / span))


def _weighted_mean(parts: list[dict[str, float]]) -> dict[str, float]:
    n = sum(int(p["frames"]) for p in parts)
    if n == 0:
        return dict(parts[0]) if parts else {}
    out: dict[str, float] = {}
    for key in parts[0]:
        if key == "frames":
            continue
        vals = [(p[key], p["frames"]) for p in parts if p["frames"] and p[key] is not None and np.isfinite(p[key])]
        out[key] = float(sum(v * w for v, w in vals) / sum(w for _, w in vals)) if vals else math.nan
    out["frames"] = n
    return out


@dataclass
class _Prepared:
    sweep: Sweep
    name: str
    cfg: ReconstructConfig
    prior: np.ndarray
    train: np.ndarray
    hold: np.ndarray
    mask: np.ndarray
    use_mask: bool
    mode: str


def _prepare(sweeps: list[Sweep], names: list[str], config: ReconstructConfig, options: list[SweepOptions],
             joint: JointConfig, masks: list[np.ndarray | None]) -> list[_Prepared]:
    out = []
    first_cfg = options[0].config_for(config)
    for k, (sweep, name, opt, m) in enumerate(zip(sweeps, names, options, masks)):
        try:
            check_sweep(sweep)
            cfg = opt.config_for(config)
            prior = resolve_poses(sweep, cfg.poses, cfg.span_deg, cfg.fan_axis, cfg.pivot_offset_mm)
            train, hold = holdout_split(sweep.n_frames, cfg.holdout)
            mask = frame_mask(sweep.shape, sweep.spacing_mm, sweep.sector) if m is None else np.asarray(m, bool)
        except InputError as exc:
            raise InputError(f"sweep {name}: {exc}") from None
        if mask.shape != sweep.shape or not mask.any():
            raise InputError(f"sweep {name}: the pixel mask must be a non-empty boolean {sweep.shape} array")
        mode = "reference" if k == 0 else registration_mode(sweeps[0], sweep, first_cfg.poses, cfg.poses,
                                                            opt.register, joint.register_tracked)
        out.append(_Prepared(sweep, name, cfg, prior, train, hold, mask, sweep.sector is not None or m is not None,
                             mode))
    return out


def reconstruct_sweeps(
    sweeps: list[Sweep],
    config: ReconstructConfig | None = None,
    options: list[SweepOptions] | None = None,
    joint: JointConfig | None = None,
    truth: Volume | None = None,
    truth_transforms: list[np.ndarray] | None = None,
    names: list[str] | None = None,
    masks: list[np.ndarray | None] | None = None,
    progress: bool = True,
) -> JointResult:
    """Register several sweeps and fit one set of 3D Gaussians to all their frames.

    Parameters
    ----------
    sweeps : list of Sweep
        At least one; the first sets the reconstruction's frame.
    config : ReconstructConfig, optional
        Training options (defaults to the ``fast`` preset); its pose options apply to every sweep
        unless ``options`` changes them.
    options : list of SweepOptions, optional
        One per sweep.
    joint : JointConfig, optional
    truth : Volume, optional
        Ground truth in the first sweep's frame: adds ``report["volume"]`` over the union of the
        joined sweeps' swept regions.
    truth_transforms : list of ndarray (4, 4), optional
        True transforms of every sweep to the first's frame: adds each registration's error.
    names : list of str, optional
        Sweep names for messages and the report (default ``sweep 1``, ``sweep 2``, ...).
    masks : list of (ndarray of bool (H, W) or None), optional
        Pixels each sweep's loss and metrics count (default: its sector).
    progress : bool

    Returns
    -------
    JointResult

    Raises
    ------
    InputError
        No sweep, option lists of the wrong length, anything :func:`reconstruct_sweep` refuses in any
        sweep (named), an unavailable backend or device.
    """
    if not sweeps:
        raise InputError("a joint reconstruction needs at least one sweep")
    n = len(sweeps)
    cfg = config if config is not None else PRESETS["fast"]
    # The joint loop trains the paper's model (additive thin-plane Gaussians seeded on the slices);
    # the ``auto`` preset's base is ``fast``'s, its per-sweep choices are not made here.
    unsupported = [name for name, on in (("blend", cfg.blend), ("init='frames'", cfg.init == "frames"),
                                         ("slice_thickness_mm", cfg.slice_thickness_mm > 0),
                                         ("faint_init", cfg.faint_init)) if on]
    if unsupported:
        raise InputError(f"a joint reconstruction of several sweeps does not support {', '.join(unsupported)} "
                         "(single-sweep options)")
    jcfg = joint if joint is not None else JointConfig()
    names = list(names) if names is not None else [f"sweep {k + 1}" for k in range(n)]
    options = list(options) if options is not None else [SweepOptions()] * n
    masks = list(masks) if masks is not None else [None] * n
    for what, lst in (("names", names), ("options", options), ("masks", masks)):
        if len(lst) != n:
            raise InputError(f"{len(lst)} {what} given for {n} sweeps")
    if truth_transforms is not None and len(truth_transforms) != n:
        raise InputError(f"{len(truth_transforms)} true transforms given for {n} sweeps")
    t0 = time.perf_counter()
    device = _device(cfg.device)
    backend = choose_backend(cfg.backend, cfg.device)
    prep = _prepare(sweeps, names, cfg, options, jcfg, masks)

    # ---- registration (training frames only: held-out frames must not inform the model)
    regs: list[dict[str, Any]] = []
    starts: list[np.ndarray] = []
    ref = prep[0]
    ref_data = (ref.sweep.frames[ref.train], ref.prior[ref.train], ref.mask)
    for p in prep:
        rec: dict[str, Any] = {"sweep": p.name, "mode": p.mode}
        if p.mode in ("reference", "none"):
            rec["status"] = "reference" if p.mode == "reference" else "identity"
            starts.append(np.eye(4))
        else:
            reg = register_sweeps(ref_data, (p.sweep.frames[p.train], p.prior[p.train], p.mask), jcfg.search,
                                  start=np.eye(4) if p.mode == "refine" else None, local=p.mode == "search")
            rec.update({"status": "registered" if reg.ok else "failed", "search": reg.summary()})
            starts.append(reg.transform)
        regs.append(rec)
    t_reg = time.perf_counter()
    joined = [k for k, r in enumerate(regs) if r["status"] != "failed"]

    # ---- model and optimiser
    px_mm = paper_pixel_mm(ref.sweep.shape, ref.sweep.spacing_mm)
    if jcfg.seeding == "all":
        fraction = jcfg.gaussian_fraction if jcfg.gaussian_fraction is not None else 1.0 / len(joined)
    else:
        fraction = 1.0
    per_slice = max(1, int(round(cfg.gaussians_per_slice * fraction)))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    dtype = torch.float32
    with _Deterministic():
        transforms: dict[int, SweepTransform] = {}
        refiners: dict[int, PoseRefinement] = {}
        parts = []
        scales = []
        seeded: list[tuple[np.ndarray, np.ndarray]] = []  # (poses, mask) of the sweeps seeded so far
        for k in joined:
            p = prep[k]
            own_centre = sweep_centre(p.prior, p.mask)
            if p.mode in ("refine", "search"):
                centre = (starts[k] @ np.append(own_centre, 1.0))[:3]
                transforms[k] = SweepTransform(starts[k], centre, dtype, device)
            if cfg.refine_poses and cfg.pose_basis > 0:
                refiners[k] = PoseRefinement(p.sweep.n_frames, cfg.pose_basis, own_centre, dtype, device)
            seed_poses = starts[k][None] @ p.prior[p.train]
            scale = max(math.exp(cfg.init_log_scale_px) * paper_pixel_mm(p.sweep.shape, p.sweep.spacing_mm),
                        max(p.sweep.spacing_mm))
            scales.append(scale)
            means = on_slice_means(seed_poses, p.mask, per_slice, rng)
            if jcfg.seeding == "first" and seeded:
                covered = np.zeros(len(means), dtype=bool)
                for P, m in seeded:
                    covered |= in_swept_region(means, P, m)
                means = means[~covered]
            seeded.append((seed_poses, p.mask))
            if not len(means):
                continue
            parts.append(default_gaussians(means, scale, cfg.init_opacity_logit, cfg.init_intensity,
                                           device=device).tensors())
        init = {key: torch.cat([q[key] for q in parts]) for key in parts[0]}
        params = {key: torch.nn.Parameter(v.clone()) for key, v in init.items()}
        rates = {"means": cfg.lr_means_px * px_mm, "log_scales": cfg.lr_log_scales, "quats": cfg.lr_quats,
                 "opacity_logits": cfg.lr_opacity, "intensities": cfg.lr_intensity}
        groups = [{"params": [params[key]], "lr": rates[key], "name": key} for key in params]
        reg_groups = []
        for k, T in transforms.items():
            f = jcfg.refine_rate if prep[k].mode == "refine" else 1.0
            reg_groups += [{"params": [T.rot], "lr": f * jcfg.lr_register_rot, "name": f"register_rot_{k}"},
                           {"params": [T.trans], "lr": f * jcfg.lr_register_trans_px * px_mm,
                            "name": f"register_trans_{k}"}]
        for k, R in refiners.items():
            groups += [{"params": [R.rot], "lr": cfg.lr_pose_rot, "name": f"pose_rot_{k}"},
                       {"params": [R.trans], "lr": cfg.lr_pose_trans_px * px_mm, "name": f"pose_trans_{k}"}]
        opt = torch.optim.Adam(groups + reg_groups, eps=1e-15)
        reg_lrs = [g["lr"] for g in reg_groups]

        data = {k: torch.as_tensor(prep[k].sweep.frames, dtype=dtype, device=device) for k in joined}
        prior_t = {k: torch.as_tensor(prep[k].prior, dtype=dtype, device=device) for k in joined}
        mask_t = {k: (torch.as_tensor(prep[k].mask, dtype=dtype, device=device) if prep[k].use_mask else None)
                  for k in joined}
        density_state = DensityState.create(int(init["means"].shape[0]), device)

        def make_new(means: torch.Tensor) -> dict[str, torch.Tensor]:
            return default_gaussians(means.detach().cpu().numpy(), scales[0], cfg.init_opacity_logit,
                                     cfg.init_intensity, dtype=dtype, device=device).tensors()

        def poses_of(k: int, index: torch.Tensor) -> torch.Tensor:
            idx = index.to(device)
            M = prior_t[k][idx]
            if k in refiners:
                M = refiners[k](idx, M)
            if k in transforms:
                return transforms[k](M)
            if np.allclose(starts[k], np.eye(4)):
                return M
            return torch.as_tensor(starts[k], dtype=dtype, device=device)[None] @ M

        batches: list[tuple[int, torch.Tensor]] = []
        t_setup = time.perf_counter()
        history: list[dict[str, float]] = []
        with epoch_bar(cfg.epochs, "reconstruct (joint)", progress) as tick:
            warmup = min(max(1, int(round(jcfg.register_warmup * cfg.epochs))), cfg.epochs - 1) if transforms else 0
            for epoch in range(cfg.epochs):
                te = time.perf_counter()
                for g, lr in zip(reg_groups, reg_lrs):
                    g["lr"] = lr * _register_rate(epoch, cfg.epochs, warmup)
                batches = []
                for k in joined:
                    if epoch < warmup and k in transforms:
                        continue  # registered sweeps join after the warm-up
                    tr = torch.as_tensor(prep[k].train, dtype=torch.long)
                    order = tr[torch.randperm(len(tr), generator=gen)]
                    batches += [(k, order[s:s + cfg.batch]) for s in range(0, len(order), cfg.batch)]
                perm = torch.randperm(len(batches), generator=gen).tolist()
                sums = np.zeros(3)
                count = 0
                for b in perm:
                    k, idx = batches[b]
                    M = poses_of(k, idx)
                    img = render_slices(params["means"], params["log_scales"], params["quats"],
                                        params["opacity_logits"], params["intensities"], M, prep[k].sweep.shape,
                                        backend=backend, cutoff=cfg.cutoff)
                    loss, l1, ssim = hybrid_loss(img, data[k][idx.to(device)], mask_t[k], cfg.l1_weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sums += np.array([loss.item(), l1.item(), ssim.item()]) * len(idx)
                    count += len(idx)
                sums /= max(count, 1)
                if cfg.density_control:
                    params = control_step(cfg.density, density_state, params, opt, epoch + 1, make_new, gen)
                entry = {"epoch": epoch + 1, "loss": float(sums[0]), "l1": float(sums[1]), "ssim": float(sums[2]),
                         "seconds": time.perf_counter() - te, "gaussians": int(params["means"].shape[0])}
                for k, T in transforms.items():  # how the registrations move (and, with the truth, their error)
                    entry[f"register_{k}"] = T.learned_change()
                    if truth_transforms is not None:
                        entry[f"register_{k}"]["error"] = transform_error(
                            T.transform(), np.asarray(truth_transforms[k], dtype=np.float64),
                            sweep_centre(prep[k].prior, prep[k].mask))
                history.append(entry)
                tick(sums)
        t_train = time.perf_counter()

        model = Gaussians(**{key: v.detach() for key, v in params.items()})
        final: dict[int, np.ndarray] = {}
        with torch.no_grad():
            for k in joined:
                final[k] = poses_of(k, torch.arange(prep[k].sweep.n_frames)).cpu().numpy().astype(np.float64)
        unseen = 0
        if cfg.prune_unseen:
            vis = None
            for k in joined:
                Mt = torch.as_tensor(final[k][prep[k].train], dtype=dtype, device=device)
                v = gaussian_visibility(model, Mt, prep[k].sweep.shape, mask_t[k], backend, cfg.cutoff)
                vis = v if vis is None else vis + v
            assert vis is not None
            seen = vis >= 0.01
            unseen = int((~seen).sum())
            if unseen:
                model = model.select(seen)

        fits: list[SweepFit] = []
        per_train, per_hold = [], []
        sweep_reports = []
        for k, p in enumerate(prep):
            rec = regs[k]
            if k in transforms:
                T = transforms[k].transform()
                rec["learned_change"] = transforms[k].learned_change()
            else:
                T = starts[k]
            rec["transform"] = T.tolist()
            rotvec = rotvec_of(T[:3, :3])
            rec["rotation_vector_rad"] = rotvec.tolist()
            rec["rotation_deg"] = float(np.degrees(np.linalg.norm(rotvec)))
            rec["translation_mm"] = T[:3, 3].tolist()
            if truth_transforms is not None:
                rec["error"] = transform_error(T, np.asarray(truth_transforms[k], dtype=np.float64),
                                               sweep_centre(p.prior, p.mask))
            rendered = None
            entry: dict[str, Any] = {"sweep": p.name, "frames": p.sweep.n_frames, "shape": list(p.sweep.shape),
                                     "spacing_mm": list(p.sweep.spacing_mm), "poses": p.cfg.poses,
                                     "status": rec["status"]}
            if k in final:
                rendered = np.clip(render_frames(model, final[k], p.sweep.shape, backend=backend, cutoff=cfg.cutoff),
                                   0.0, 1.0)
                mm = p.mask if p.use_mask else None
                tr = frame_metrics(rendered[p.train], p.sweep.frames[p.train], mm)
                ho = frame_metrics(rendered[p.hold], p.sweep.frames[p.hold], mm)
                per_train.append(tr)
                per_hold.append(ho)
                entry.update({"train": tr, "holdout": ho})
            sweep_reports.append(entry)
            fits.append(SweepFit(p.name, p.prior, final.get(k, starts[k][None] @ p.prior), T, p.train, p.hold,
                                 p.mask, rendered, rec))
        report: dict[str, Any] = {"train": _weighted_mean(per_train), "holdout": _weighted_mean(per_hold)}
        t_eval = time.perf_counter()
        if truth is not None:
            s = max(1, math.ceil((truth.array.size / 2e6) ** (1 / 3)))
            tv = Volume(np.asarray(truth.array, dtype=np.float32)[::s, ::s, ::s],
                        truth.affine @ np.diag([s, s, s, 1.0]))
            region = np.zeros(tv.shape, dtype=bool)
            for k in joined:
                region |= swept_region(tv.affine, tv.shape, final[k], prep[k].mask)
            recon = _sample_in_region(model, tv, region, backend, cfg.cutoff)
            report["volume"] = {**volume_metrics(recon, tv.array, region, cfg.dice_threshold), "stride": s}
        t_vol = time.perf_counter()

    timings = {"register": t_reg - t0, "setup": t_setup - t0, "train": t_train - t_setup,
               "evaluate": t_eval - t_train, "volume": t_vol - t_eval, "total": t_vol - t0}
    report.update({
        "seconds": timings["total"],
        "gaussians": len(model),
        "epochs": cfg.epochs,
        "sweeps": sweep_reports,
        "registration": [f.registration for f in fits],
        "frames": {"total": sum(p.sweep.n_frames for p in prep),
                   "train": int(sum(prep[k].train.size for k in joined)),
                   "holdout": int(sum(prep[k].hold.size for k in joined))},
        "backend": backend,
        "poses": [p.cfg.poses for p in prep],
        "paper_pixel_mm": px_mm,
        "gaussians_per_slice": per_slice,
        "initial_gaussians": int(init["means"].shape[0]),
        "learning_rates": {g["name"]: g["lr"] for g in groups} | {g["name"]: lr for g, lr in zip(reg_groups, reg_lrs)},
        "final_loss": history[-1]["loss"] if history else None,
        "timings": timings,
        "density": density_state.log,
        "unseen_pruned": unseen,
        "config": cfg.to_dict(),
        "joint": jcfg.to_dict(),
    })
    return JointResult(model.to("cpu", torch.float32), fits, history, report, timings)



def cross_view_protocol(result: JointResult, sweeps: list[Sweep], config: ReconstructConfig | None = None,
                        options: list[SweepOptions] | None = None, masks: list[np.ndarray | None] | None = None,
                        progress: bool = False, singles: dict[int, ReconstructResult] | None = None,
                        ) -> tuple[list[dict[str, Any]], dict[int, ReconstructResult]]:
    """The paper's cross-view protocol (its section 5.3.2) through a joint run's registration.

    Every joined sweep ``i`` is reconstructed alone (its own options, in its own frame); the single
    model is rendered on the held-out frames of every other joined sweep ``j``, placed in ``i``'s
    frame by the learned transforms (``inv(T_i) @ T_j @ own poses of j``), and scored there. The
    joint model's score on the same frames is put beside it. ``singles`` (index -> result) gives
    single-sweep reconstructions already made; the others are made here.

    Returns
    -------
    entries : list of dict
        ``trained_on``, ``scored_on`` (sweep names), ``frames``, ``single`` and ``joint`` (frame
        metrics on ``scored_on``'s held-out frames).
    singles : dict index -> ReconstructResult
        The single-sweep reconstructions.
    """
    cfg = config if config is not None else PRESETS["fast"]
    n = len(sweeps)
    options = list(options) if options is not None else [SweepOptions()] * n
    masks = list(masks) if masks is not None else [None] * n
    joined = [k for k, f in enumerate(result.sweeps) if f.joined]
    singles = dict(singles or {})
    for k in joined:
        if k not in singles:
            singles[k] = reconstruct_sweep(sweeps[k], options[k].config_for(cfg), progress=progress, mask=masks[k])
    entries = []
    for i in joined:
        Ti_inv = invert_rigid(result.sweeps[i].transform)
        model = singles[i].gaussians
        for j in joined:
            if i == j:
                continue
            fj = result.sweeps[j]
            hold = fj.holdout_index
            poses = Ti_inv[None] @ fj.transform[None] @ fj.prior_poses[hold]
            mask = fj.frame_mask if (sweeps[j].sector is not None or masks[j] is not None) else None
            single = score_frames(model, sweeps[j].frames[hold], poses, mask, singles[i].report["backend"], cfg.cutoff)
            joint = frame_metrics(fj.rendered[hold], sweeps[j].frames[hold], mask) if fj.rendered is not None else {}
            entries.append({"trained_on": result.sweeps[i].name, "scored_on": fj.name,
                            "frames": int(hold.size), "single": single, "joint": joint})
    return entries, singles
