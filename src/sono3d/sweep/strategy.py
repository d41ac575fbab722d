"""Adaptive densification (beyond the paper): grow Gaussians where the residual needs them, prune idle ones.

The paper keeps the Gaussian count fixed (about 120 per training slice) and only reinserts inactive
Gaussians (:mod:`sono3d.sweep.density`). A fixed count per slice spends as many Gaussians on a flat
region as on a textured one. Here, as in 3D Gaussian splatting's adaptive density control (and
gsplat's ``DefaultStrategy``, which keeps the strategy's options apart from its state), the model
starts coarse and grows where the loss keeps pulling Gaussians:

* every ``every`` steps in ``[start, stop_fraction * total)``, each Gaussian gets a score and the
  highest-scoring ones (the top ``grow_fraction`` of the current count, at most up to
  ``max_gaussians``) are densified: small ones (largest standard deviation at most ``split_mm``)
  are *cloned* (a copy half a standard deviation away, drawn from the Gaussian's own distribution;
  both carry half the intensity, so the rendering barely changes), large ones are *split* into two
  children drawn from the parent's distribution, with standard deviations divided by 1.6 and
  intensity ``1.6^2 / 2`` times the parent's (the in-plane integral of the pair equals the
  parent's);
* the score (``criterion``): ``"residual"`` (default), the mean absolute residual of the training
  frames under the Gaussian's footprint, ``sum_p w_gp |r_p| / sum_p w_gp`` -- where the frames are
  still badly reproduced; ``"gradient"``, 3D-GS's mean positional gradient norm ``|dL/dmu|``,
  accumulated after every optimiser step over the steps in which it was not zero. The positional
  gradient of a Gaussian wider than a fine texture averages out over its footprint (measured on a
  scene half flat, half a checkerboard of 2-pixel squares: the gradient grew more Gaussians on the
  flat half), the residual does not;
* Gaussians whose activity ``|sigmoid(o) I|`` fell below ``prune_activity`` or whose largest
  standard deviation exceeds ``prune_mm`` are removed;
* the accumulators then restart from zero.

The model is additive (no alpha compositing), hence the intensity bookkeeping above. Rather than a
gradient threshold in loss units (3D-GS uses 2e-4 in normalised screen units), a fixed fraction is
grown per step: the loss's scale changes with the image content and the batch, a rank does not.

The strategy (:class:`Densify`, options only) is kept apart from its state
(:class:`DensifyState`), whose per-Gaussian tensors are sliced and extended with the parameters
(and Adam's moments, :func:`~sono3d.sweep.density.replace_rows`) at every change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sono3d.errors import InputError
from sono3d.sweep.density import activity, replace_rows
from sono3d.sweep.gaussians import quat_to_rotmat

__all__ = ["Densify", "DensifyState", "densify_step", "grow", "prune"]

_SPLIT_FACTOR = 1.6


@dataclass(frozen=True)
class Densify:
    """Options of adaptive densification (see the module notes).

    Attributes
    ----------
    every : int
        Optimiser steps between refinements.
    start : int
        No refinement before this many steps.
    stop_fraction : float
        No refinement after this fraction of the run's steps (the model settles afterwards).
    grow_fraction : float
        At most this fraction of the current Gaussians is densified per refinement.
    max_gaussians : int
        The budget: growth stops here.
    split_mm : float
        Gaussians whose largest standard deviation exceeds this are split, the others cloned (mm).
    prune_activity : float
        Remove Gaussians with ``|sigmoid(o) I|`` below this (grey levels; 0: never).
    prune_mm : float
        Remove Gaussians whose largest standard deviation exceeds this (mm; inf: never).
    criterion : ``"residual"`` or ``"gradient"``
        The score that picks the Gaussians to densify.
    """

    every: int = 100
    start: int = 100
    stop_fraction: float = 0.6
    grow_fraction: float = 0.25
    max_gaussians: int = 100_000
    split_mm: float = 1.0
    prune_activity: float = 0.0
    prune_mm: float = math.inf
    criterion: str = "residual"

    def __post_init__(self) -> None:
        if self.criterion not in ("residual", "gradient"):
            raise InputError(f"densification criterion must be 'residual' or 'gradient', got {self.criterion!r}")
        if self.every < 1 or self.start < 0 or not 0 < self.stop_fraction <= 1 or not 0 < self.grow_fraction <= 1:
            raise InputError(f"bad densification schedule: every={self.every}, start={self.start}, "
                             f"stop_fraction={self.stop_fraction}, grow_fraction={self.grow_fraction}")
        if self.max_gaussians < 1 or not self.split_mm > 0 or self.prune_activity < 0 or not self.prune_mm > 0:
            raise InputError(f"bad densification limits: max_gaussians={self.max_gaussians}, split_mm={self.split_mm}, "
                             f"prune_activity={self.prune_activity}, prune_mm={self.prune_mm}")

    def due(self, step: int, total_steps: int) -> bool:
        """Whether a refinement runs after optimiser step ``step`` (1-based) of ``total_steps``."""
        return step >= self.start and step < self.stop_fraction * total_steps and step % self.every == 0


@dataclass
class DensifyState:
    """What densification remembers between refinements.

    Attributes
    ----------
    grad : Tensor, shape (G,)
        Sum over steps of ``|dL/dmu_g|`` (loss per mm).
    count : Tensor, shape (G,)
        Steps in which Gaussian ``g`` had a non-zero positional gradient.
    log : list of dict
        One entry per refinement: ``step``, ``cloned``, ``split``, ``pruned``, ``gaussians``.
    """

    grad: torch.Tensor
    count: torch.Tensor
    log: list[dict] = field(default_factory=list)

    @classmethod
    def create(cls, n: int, device: torch.device | str = "cpu") -> "DensifyState":
        return cls(grad=torch.zeros(n, dtype=torch.float64, device=device),
                   count=torch.zeros(n, dtype=torch.long, device=device))

    def accumulate(self, means_grad: torch.Tensor | None) -> None:
        """Add one step's positional gradients ``(G, 3)``."""
        if means_grad is None:
            return
        norm = means_grad.detach().norm(dim=-1).to(self.grad.dtype)
        self.grad += norm
        self.count += (norm > 0).long()

    def select(self, keep: torch.Tensor) -> None:
        self.grad, self.count = self.grad[keep], self.count[keep]

    def extend(self, k: int) -> None:
        self.grad = torch.cat([self.grad, self.grad.new_zeros(k)])
        self.count = torch.cat([self.count, self.count.new_zeros(k)])

    def reset(self) -> None:
        self.grad.zero_()
        self.count.zero_()


def prune(control: Densify, state: DensifyState, params: dict[str, torch.nn.Parameter],
          optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.nn.Parameter], int]:
    """Remove idle or oversized Gaussians (rows of ``params``, Adam's moments and ``state``)."""
    with torch.no_grad():
        act = activity(params["opacity_logits"], params["intensities"])
        big = params["log_scales"].max(dim=-1).values > math.log(control.prune_mm)
        drop = (act < control.prune_activity) | big
        if bool(drop.all()):  # never remove the last Gaussian
            drop[int(torch.argmax(act))] = False
        k = int(drop.sum())
        if k == 0:
            return params, 0
        keep = ~drop
        empty = {n: p.detach()[:0] for n, p in params.items()}
    params = replace_rows(optimizer, params, keep, empty)
    state.select(keep)
    return params, k


def grow(control: Densify, state: DensifyState, params: dict[str, torch.nn.Parameter],
         optimizer: torch.optim.Optimizer, generator: torch.Generator,
         score: torch.Tensor | None = None) -> tuple[dict[str, torch.nn.Parameter], int, int]:
    """Clone or split the highest-scoring Gaussians; returns (params, cloned, split).

    ``score`` ``(G,)``: larger is more in need (negative: never); default the mean accumulated
    positional gradient of ``state``.
    """
    G = params["means"].shape[0]
    room = control.max_gaussians - G
    with torch.no_grad():
        if score is None:
            seen = state.count > 0
            score = torch.where(seen, state.grad / state.count.clamp_min(1), torch.full_like(state.grad, -1.0))
        score = score.to(state.grad.device, torch.float64)
        k = min(int(control.grow_fraction * G), room, int((score >= 0).sum()))
        if k <= 0:
            return params, 0, 0
        chosen = torch.topk(score, k).indices
        pick = torch.zeros(G, dtype=torch.bool, device=score.device)
        pick[chosen] = True
        big = params["log_scales"].max(dim=-1).values > math.log(control.split_mm)
        clone, split = pick & ~big, pick & big
        p = {n: t.detach() for n, t in params.items()}

        def draw(sel: torch.Tensor, spread: float) -> torch.Tensor:
            """Points from the selected Gaussians' own distributions, ``spread`` standard deviations wide."""
            ls = p["log_scales"][sel]
            z = torch.randn(ls.shape, generator=generator, dtype=torch.float64).to(ls.device, ls.dtype)
            return p["means"][sel] + (quat_to_rotmat(p["quats"][sel]) @ (spread * z * torch.exp(ls))[..., None])[..., 0]

        # clones: the original keeps half its intensity, its copy (nearby, so the two can separate) the other half
        params["intensities"].data[clone] *= 0.5
        new = {n: [t[clone].clone()] for n, t in p.items()}
        new["means"][0] = draw(clone, 0.5)
        if bool(split.any()):
            ls, q = p["log_scales"][split], p["quats"][split]
            for _ in range(2):
                new["means"].append(draw(split, 1.0))
                new["log_scales"].append(ls - math.log(_SPLIT_FACTOR))
                new["quats"].append(q.clone())
                new["opacity_logits"].append(p["opacity_logits"][split].clone())
                new["intensities"].append(p["intensities"][split] * (_SPLIT_FACTOR ** 2 / 2.0))
        rows = {n: torch.cat(v) for n, v in new.items()}
        keep = ~split
    params = replace_rows(optimizer, params, keep, rows)
    state.select(keep)
    state.extend(rows["means"].shape[0])
    return params, int(clone.sum()), int(split.sum())


def densify_step(control: Densify, state: DensifyState, params: dict[str, torch.nn.Parameter],
                 optimizer: torch.optim.Optimizer, step: int, total_steps: int, generator: torch.Generator,
                 residual_score: Callable[[dict[str, torch.nn.Parameter]], torch.Tensor] | None = None
                 ) -> dict[str, torch.nn.Parameter]:
    """Prune, then grow, then reset the accumulators, when a refinement is due after ``step``.

    ``residual_score(params) -> (G,)`` gives the ``"residual"`` criterion's scores (the caller
    renders its frames); the ``"gradient"`` criterion uses the accumulators.
    """
    if not control.due(step, total_steps):
        return params
    params, pruned = prune(control, state, params, optimizer)
    score = None
    if control.criterion == "residual":
        if residual_score is None:
            raise InputError("the residual densification criterion needs a residual_score function")
        score = residual_score(params)
    params, cloned, split = grow(control, state, params, optimizer, generator, score)
    state.reset()
    state.log.append({"step": int(step), "cloned": cloned, "split": split, "pruned": pruned,
                      "gaussians": int(params["means"].shape[0])})
    return params
