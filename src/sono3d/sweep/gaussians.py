"""The Gaussian model of the sweep engine: N anisotropic 3D Gaussians in world millimetres.

Each Gaussian ``g`` has a mean ``mu_g`` (mm), log standard deviations along its own axes
(``log_scales``, natural log of mm), a rotation quaternion ``(w, x, y, z)`` taking those axes into
the world, an opacity logit (opacity = sigmoid) and an intensity (unbounded; negative values let
the model subtract). Its covariance is ``Sigma = R diag(s)^2 R^T`` -- the paper's
``(S R)^T (S R)`` written for column vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from sono3d.errors import InputError

__all__ = ["Gaussians", "quat_to_rotmat", "covariance", "inverse_covariance"]


@dataclass
class Gaussians:
    """A set of ``G`` Gaussians as tensors (float32 by default, one device).

    Attributes
    ----------
    means : Tensor, shape (G, 3)
        Centres in world mm.
    log_scales : Tensor, shape (G, 3)
        ``log`` of the standard deviations (mm) along the Gaussian's own axes.
    quats : Tensor, shape (G, 4)
        Rotations ``(w, x, y, z)``; need not be normalised (normalised where used).
    opacity_logits : Tensor, shape (G,)
        Opacity before the sigmoid.
    intensities : Tensor, shape (G,)
        Grey-level contribution (may be negative).
    """

    means: torch.Tensor
    log_scales: torch.Tensor
    quats: torch.Tensor
    opacity_logits: torch.Tensor
    intensities: torch.Tensor

    def __post_init__(self) -> None:
        G = self.means.shape[0] if self.means.ndim == 2 else -1
        expected = {"means": (G, 3), "log_scales": (G, 3), "quats": (G, 4), "opacity_logits": (G,),
                    "intensities": (G,)}
        for name, shape in expected.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise InputError(f"Gaussians.{name} must have shape {shape}, got {got}")

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Name -> tensor, in field order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Gaussians":
        return Gaussians(**{k: v.to(device=device, dtype=dtype) for k, v in self.tensors().items()})

    def detach(self) -> "Gaussians":
        return Gaussians(**{k: v.detach().clone() for k, v in self.tensors().items()})

    def select(self, index: torch.Tensor) -> "Gaussians":
        """A subset (boolean mask or indices)."""
        return Gaussians(**{k: v[index] for k, v in self.tensors().items()})

    @staticmethod
    def cat(parts: list["Gaussians"]) -> "Gaussians":
        names = [f.name for f in fields(Gaussians)]
        return Gaussians(**{n: torch.cat([getattr(p, n) for p in parts]) for n in names})


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(G, 3, 3)`` from quaternions ``(G, 4)`` ``(w, x, y, z)`` (normalised here)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def covariance(log_scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """``Sigma = R diag(exp(2 log_scales)) R^T``, shape ``(G, 3, 3)`` in mm²."""
    R = quat_to_rotmat(quats)
    s2 = torch.exp(2.0 * log_scales)
    return (R * s2[..., None, :]) @ R.transpose(-1, -2)


def inverse_covariance(log_scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """``Sigma^-1 = R diag(exp(-2 log_scales)) R^T``, shape ``(G, 3, 3)`` in mm⁻² (no matrix inverse)."""
    R = quat_to_rotmat(quats)
    inv_s2 = torch.exp(-2.0 * log_scales)
    return (R * inv_s2[..., None, :]) @ R.transpose(-1, -2)
