"""Density control (paper section 4.5 and appendix .3): prune inactive Gaussians, reinsert fresh ones.

A Gaussian's activity is ``m_g = |I_g * sigmoid(o_g)|``. At the end of every ``every``-th epoch
within ``[start, stop)`` (the paper: threshold 0.05, every 10 epochs from 10 to 50, i.e. after
epochs 10, 20, 30 and 40 of 60), Gaussians with ``m_g < threshold`` are removed and as many new
ones are inserted, uniform in the bounding box of the surviving means, with the initial values.
New Gaussians can be spared for ``grace`` control steps so they are not pruned before they learn.

The strategy (:class:`DensityControl`, options only) is kept apart from its state
(:class:`DensityState`), as gsplat does. Because the parameter tensors change size or content, the
optimiser's per-parameter state is sliced for survivors and zeroed for newcomers
(:func:`replace_rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sono3d.errors import InputError

__all__ = ["DensityControl", "DensityState", "activity", "replace_rows", "control_step"]


def activity(opacity_logits: torch.Tensor, intensities: torch.Tensor) -> torch.Tensor:
    """The paper's activity metric ``|I_g * sigmoid(o_g)|``, shape ``(G,)``."""
    return (intensities * torch.sigmoid(opacity_logits)).abs()


@dataclass(frozen=True)
class DensityControl:
    """When and how to prune and reinsert (defaults: the paper's best schedule, section 5.2.2).

    Attributes
    ----------
    threshold : float
        Prune Gaussians whose activity ``|I sigmoid(o)|`` is below this.
    every : int
        Epochs between control steps.
    start, stop : int
        A step runs after epoch ``e`` (1-based count of finished epochs) when
        ``start <= e < stop`` and ``(e - start) % every == 0``.
    grace : int
        Number of control steps a newly inserted Gaussian is exempt from pruning (0: none).
    """

    threshold: float = 0.05
    every: int = 10
    start: int = 10
    stop: int = 50
    grace: int = 1

    def __post_init__(self) -> None:
        if self.every < 1 or self.start < 1 or self.stop < self.start or self.threshold < 0 or self.grace < 0:
            raise InputError(
                f"bad density control schedule: threshold={self.threshold}, every={self.every}, "
                f"start={self.start}, stop={self.stop}, grace={self.grace}"
            )

    def due(self, epochs_done: int) -> bool:
        """Whether a control step runs after ``epochs_done`` finished epochs."""
        e = epochs_done
        return self.start <= e < self.stop and (e - self.start) % self.every == 0


@dataclass
class DensityState:
    """What density control remembers between steps.

    Attributes
    ----------
    spared : Tensor, shape (G,), int
        Remaining control steps each Gaussian is exempt from pruning.
    log : list of dict
        One entry per step: ``epoch``, ``pruned``, ``gaussians``.
    """

    spared: torch.Tensor
    log: list[dict] = field(default_factory=list)

    @classmethod
    def create(cls, n: int, device: torch.device | str = "cpu") -> "DensityState":
        return cls(spared=torch.zeros(n, dtype=torch.long, device=device))


def replace_rows(
    optimizer: torch.optim.Optimizer,
    params: dict[str, torch.nn.Parameter],
    keep: torch.Tensor,
    new_rows: dict[str, torch.Tensor],
) -> dict[str, torch.nn.Parameter]:
    """Keep some rows of every parameter, append new rows, and carry the optimiser state along.

    Survivors keep their Adam moments (sliced); appended rows start with zero moments. The
    optimiser's param groups are updated to the new tensors in place.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Holds (some of) ``params``; state tensors shaped like a parameter are sliced, others
        (Adam's scalar ``step``) are kept.
    params : dict name -> Parameter
        Tensors sharing their first dimension ``G``.
    keep : Tensor of bool, shape (G,)
    new_rows : dict name -> Tensor
        Rows to append, shape ``(K, ...)`` per parameter (same keys as ``params``).

    Returns
    -------
    dict name -> Parameter
        The new parameters (also installed in ``optimizer``).
    """
    out: dict[str, torch.nn.Parameter] = {}
    for name, old in params.items():
        add = new_rows[name].to(dtype=old.dtype, device=old.device)
        new = torch.nn.Parameter(torch.cat([old.detach()[keep], add], dim=0))
        state = optimizer.state.pop(old, None)
        if state is not None:
            moved = {}
            for key, val in state.items():
                if isinstance(val, torch.Tensor) and val.shape == old.shape:
                    moved[key] = torch.cat([val[keep], torch.zeros_like(add)], dim=0)
                else:
                    moved[key] = val
            optimizer.state[new] = moved
        for group in optimizer.param_groups:
            group["params"] = [new if p is old else p for p in group["params"]]
        out[name] = new
    return out


def control_step(
    control: DensityControl,
    state: DensityState,
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    epochs_done: int,
    make_new: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    generator: torch.Generator,
) -> dict[str, torch.nn.Parameter]:
    """Run one pruning and reinsertion step if it is due after ``epochs_done`` epochs.

    Parameters
    ----------
    params : dict name -> Parameter
        ``means``, ``log_scales``, ``quats``, ``opacity_logits``, ``intensities`` (and nothing else).
    make_new : callable
        ``make_new(means (K, 3)) -> dict name -> Tensor``: fresh Gaussians with the initial values.
    generator : torch.Generator
        Draws the new means (CPU generator; reproducible with the run's seed).

    Returns
    -------
    dict name -> Parameter
        The (possibly new) parameter tensors; the Gaussian count is unchanged.
    """
    if not control.due(epochs_done):
        return params
    with torch.no_grad():
        act = activity(params["opacity_logits"], params["intensities"])
        prune = (act < control.threshold) & (state.spared == 0)
        state.spared = (state.spared - 1).clamp_min(0)
        k = int(prune.sum())
        state.log.append({"epoch": int(epochs_done), "pruned": k, "gaussians": int(prune.numel())})
        if k == 0:
            return params
        keep = ~prune
        survivors = params["means"][keep] if bool(keep.any()) else params["means"]
        lo, hi = survivors.min(dim=0).values, survivors.max(dim=0).values
        u = torch.rand((k, 3), generator=generator, dtype=torch.float64).to(lo.device, lo.dtype)
        new = make_new(lo + (hi - lo) * u)
    params = replace_rows(optimizer, params, keep, new)
    state.spared = torch.cat([state.spared[keep], torch.full((k,), control.grace, dtype=torch.long,
                                                             device=state.spared.device)])
    return params
