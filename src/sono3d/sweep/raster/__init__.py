"""Slice rasterizers behind one function, chosen by ``backend=``.

Every backend computes the same forward model (see :mod:`.reference`) with the same ``cutoff``
rule and returns gradients for all five Gaussian tensors and for ``image_to_world`` (needed by pose
refinement). Backends register themselves in :data:`BACKENDS`; tests hold each equal to the
reference, forward and backward. Every backend takes the same eight arguments, ``cutoff`` included
and required; its default (3) lives only in :func:`render_slices`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from sono3d.errors import InputError
from sono3d.sweep.raster.reference import pixel_positions, render_slices_reference

__all__ = ["BACKENDS", "DEFAULT_CUTOFF", "render_slices", "register_backend", "available_backends", "choose_backend",
           "pixel_positions"]

RenderFn = Callable[..., torch.Tensor]

#: name -> callable(means, log_scales, quats, opacity_logits, intensities, image_to_world, shape, cutoff,
#: elevation_sigma=0.0)
BACKENDS: dict[str, RenderFn] = {"reference": render_slices_reference}

#: optional backends: name -> module that registers it on import
_LAZY = {
    "culled": "sono3d.sweep.raster.culled",
    "numba": "sono3d.sweep.raster.numba_cpu",
    "triton": "sono3d.sweep.raster.triton_gpu",
}

#: Mahalanobis radius beyond which a Gaussian contributes nothing, when the caller gives none.
DEFAULT_CUTOFF = 3.0

# Fastest first. "auto" takes the first one that imports here (and suits the device).
_PREFERENCE = {"cpu": ("numba", "culled", "reference"), "cuda": ("triton", "culled", "reference")}


def register_backend(name: str, fn: RenderFn) -> None:
    BACKENDS[name] = fn


def available_backends() -> list[str]:
    """Names of the backends that import on this machine."""
    names = []
    for name in list(BACKENDS) + [n for n in _LAZY if n not in BACKENDS]:
        try:
            _get(name)
            names.append(name)
        except InputError:
            pass
    return names


def _get(name: str) -> RenderFn:
    if name not in BACKENDS and name in _LAZY:
        try:
            importlib.import_module(_LAZY[name])
        except ImportError as exc:
            raise InputError(f"rasterizer backend '{name}' is not available here: {exc}") from None
    if name not in BACKENDS:
        raise InputError(f"unknown rasterizer backend '{name}' (known: {', '.join(sorted(set(BACKENDS) | set(_LAZY)))})")
    return BACKENDS[name]


def render_slices(
    means: torch.Tensor,
    log_scales: torch.Tensor,
    quats: torch.Tensor,
    opacity_logits: torch.Tensor,
    intensities: torch.Tensor,
    image_to_world: torch.Tensor,
    shape: tuple[int, int],
    backend: str = "reference",
    cutoff: float | None = DEFAULT_CUTOFF,
    elevation_sigma: float = 0.0,
) -> torch.Tensor:
    """Render ``B`` slices ``(B, H, W)`` of Gaussians with the chosen backend.

    See :func:`~sono3d.sweep.raster.reference.render_slices_reference` for the arguments;
    ``elevation_sigma`` (mm) integrates each slice over a Gaussian elevation profile (0: thin plane).
    """
    fn = _get(backend)
    if elevation_sigma:
        return fn(means, log_scales, quats, opacity_logits, intensities, image_to_world, shape, cutoff,
                  elevation_sigma=float(elevation_sigma))
    return fn(means, log_scales, quats, opacity_logits, intensities, image_to_world, shape, cutoff)


def choose_backend(name: str, device: str) -> str:
    """Resolve ``"auto"`` to the fastest rasterizer that imports here for ``device`` (``"cpu"`` or
    ``"cuda"``); check an explicit name (an unknown or unavailable one raises :class:`InputError`)."""
    avail = available_backends()
    if name == "auto":
        for cand in _PREFERENCE[device]:
            if cand in avail:
                return cand
        return "reference"
    if name not in avail:
        _get(name)  # raises the InputError naming what is wrong
    return name
