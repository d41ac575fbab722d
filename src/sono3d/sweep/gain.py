"""Per-frame gain compensation (beyond the paper): the scanner's gain and TGC may change during a sweep.

A recorded frame ``i`` is modelled as the rendering times a smooth positive gain::

    y_i(row, col) ~ g_i(row) * render_i(row, col),
    g_i(row) = exp(beta_i0 + sum_k beta_ik phi_k(depth)),

with ``phi_k`` cosine functions of the normalised depth ``t = row / (H - 1)`` (``cos(pi k t)``,
``k = 1..K``; ``K = 0``: one gain per frame, ``mode="frame"``; ``mode="depth"`` adds ``K`` depth
terms for a time-gain-compensation curve). The coefficients of training frames are learned with
the Gaussians. Two things are fixed by construction:

* the gauge: a global gain is indistinguishable from brighter Gaussians, and a gain drifting
  slowly along the sweep from anatomy that changes slowly along it. The coefficients are therefore
  made orthogonal, over the training frames, to polynomials of degree ``drift_degree`` (default 2)
  in the frame index before use: the mean log-gain is 0 and so are its linear and quadratic
  trends; what is compensated is the change from frame to frame (a step in the gain, flicker);
* held-out frames were never seen, so their coefficients are interpolated linearly in the frame
  index from the nearest training frames on either side (held constant beyond the ends).
"""

from __future__ import annotations

import numpy as np
import torch

from sono3d.errors import InputError

__all__ = ["GAIN_MODES", "FrameGain"]

GAIN_MODES = ("none", "frame", "depth")


class FrameGain(torch.nn.Module):
    """Learned per-frame (optionally depth-varying) gains; see the module notes.

    Parameters
    ----------
    n_frames : int
        Frames in the whole sweep.
    train_index : array of int
        Frames whose gains are learned.
    height : int
        Rows of a frame (the depth axis).
    mode : ``"frame"`` or ``"depth"``
    depth_terms : int
        ``K`` for ``mode="depth"``.
    drift_degree : int
        Degree of the polynomial trends (in the frame index) removed from the coefficients.
    """

    def __init__(self, n_frames: int, train_index: np.ndarray, height: int, mode: str = "frame",
                 depth_terms: int = 3, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", drift_degree: int = 2) -> None:
        super().__init__()
        if mode not in ("frame", "depth"):
            raise InputError(f"gain mode must be one of {', '.join(GAIN_MODES)}, got {mode!r}")
        train = np.asarray(train_index, dtype=np.int64)
        if train.size < 1:
            raise InputError("gain compensation needs at least one training frame")
        K = 1 + (int(depth_terms) if mode == "depth" else 0)
        t = np.linspace(0.0, 1.0, int(height))
        basis = np.stack([np.cos(np.pi * k * t) for k in range(K)], axis=1)  # (H, K); k = 0 is the constant
        self.register_buffer("basis", torch.as_tensor(basis, dtype=dtype, device=device))
        self.register_buffer("interp", torch.as_tensor(_interpolation(int(n_frames), train), dtype=dtype,
                                                       device=device))
        # projector removing polynomial trends in the frame index over the training frames
        t = (train - train.mean()) / max(float(np.ptp(train)), 1.0)
        V = np.stack([t**d for d in range(min(int(drift_degree), train.size - 1) + 1)], axis=1)
        Q, _ = np.linalg.qr(V)
        self.register_buffer("detrend", torch.as_tensor(np.eye(train.size) - Q @ Q.T, dtype=dtype, device=device))
        self.beta = torch.nn.Parameter(torch.zeros((train.size, K), dtype=dtype, device=device))
        self.mode = mode

    def coefficients(self) -> torch.Tensor:
        """Coefficients of every frame without their trends, ``(n_frames, K)`` (held-out ones interpolated)."""
        return self.interp @ (self.detrend @ self.beta)

    def gains(self, index: torch.Tensor) -> torch.Tensor:
        """Gain curves ``(B, H)`` of frames ``index``."""
        return torch.exp(self.coefficients()[index] @ self.basis.T)

    def forward(self, index: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """``images`` ``(B, H, W)`` of frames ``index`` times their gains."""
        return images * self.gains(index)[:, :, None]

    def summary(self) -> dict[str, object]:
        """Mode, each frame's mean gain over depth (``per_frame``) and their range."""
        with torch.no_grad():
            g = torch.exp(self.coefficients() @ self.basis.T).mean(dim=1)
        return {"mode": self.mode, "min": float(g.min()), "max": float(g.max()),
                "per_frame": [float(v) for v in g.cpu()]}


def _interpolation(n_frames: int, train: np.ndarray) -> np.ndarray:
    """``(n_frames, n_train)``: row ``i`` takes frame ``i``'s value from the training frames, linearly
    in the index between the nearest ones on either side (the value itself for a training frame)."""
    out = np.zeros((n_frames, train.size))
    order = np.argsort(train)
    tr = train[order]
    for i in range(n_frames):
        j = int(np.searchsorted(tr, i))
        if j < tr.size and tr[j] == i:
            out[i, order[j]] = 1.0
        elif j == 0:
            out[i, order[0]] = 1.0
        elif j == tr.size:
            out[i, order[-1]] = 1.0
        else:
            a, b = tr[j - 1], tr[j]
            f = (i - a) / (b - a)
            out[i, order[j - 1]] = 1.0 - f
            out[i, order[j]] = f
    return out
