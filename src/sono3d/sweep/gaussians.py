"""The Gaussian model of the sweep engine: N anisotropic 3D Gaussians in world millimetres.

Each Gaussian ``g`` has a mean ``mu_g`` (mm), log standard deviations along its own axes
(``log_scales``, natural log of mm), a rotation quaternion ``(w, x, y, z)`` taking those axes into
the world, an opacity logit (opacity = sigmoid) and an intensity (unbounded; negative values let
the model subtract). Its covariance is ``Sigma = R diag(s)^2 R^T`` -- the paper's
``(S R)^T (S R)`` written for column vectors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from sono3d.errors import FileFormatError, InputError
from sono3d.io.atomic import atomic_path

__all__ = ["Gaussians", "quat_to_rotmat", "covariance", "inverse_covariance", "save_ply", "load_ply", "PLY_FIELDS",
           "render_comment", "ply_render_settings"]


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


# --------------------------------------------------------------------------------------------
# .ply files

#: Vertex properties of a Gaussians .ply, in file order (the 3D Gaussian splatting names, minus
#: colour: one scalar ``intensity`` replaces the spherical harmonics).
PLY_FIELDS = ("x", "y", "z", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
              "opacity", "intensity")

_PLY_COMMENT = (
    "sono3d Gaussians; x y z: mean in world RAS mm; scale_0..2: natural log of the standard deviations (mm) "
    "along the Gaussian's own axes; rot_0..3: quaternion (w, x, y, z) taking those axes to the world "
    "(unnormalised allowed); covariance = R diag(exp(2 scale)) R^T; opacity: logit (opacity = sigmoid); "
    "intensity: grey level added per unit weight (may be negative)"
)

# PLY scalar type names -> little-endian NumPy codes (both the old and the sized spellings).
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def save_ply(path: "str | os.PathLike[str]", gaussians: Gaussians, comments: tuple[str, ...] = ()) -> Path:
    """Write Gaussians as a binary little-endian ``.ply`` (float32 vertex properties, atomically).

    Parameters
    ----------
    path : path-like
        Destination ``.ply`` file.
    gaussians : Gaussians
        The model; tensors are detached and moved to the CPU.
    comments : tuple of str
        Extra one-line header comments (for example the command that made the file).

    Returns
    -------
    Path
    """
    g = gaussians.detach().to("cpu", torch.float32)
    n = len(g)
    columns = [g.means, g.log_scales, g.quats, g.opacity_logits[:, None], g.intensities[:, None]]
    table = torch.cat(columns, dim=1).numpy().astype("<f4")
    header = ["ply", "format binary_little_endian 1.0", f"comment {_PLY_COMMENT}"]
    header += [f"comment {' '.join(str(c).split())}" for c in comments]
    header += [f"element vertex {n}"] + [f"property float {name}" for name in PLY_FIELDS] + ["end_header"]
    dest = Path(path)
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(np.ascontiguousarray(table).tobytes())
    return dest


#: header comment word of the rendering settings a model was trained with (see :func:`render_comment`)
_RENDER_WORD = "render"


def render_comment(blended: bool, elevation_sigma_mm: float) -> str:
    """The ``.ply`` comment recording how a model renders: blended (normalised) or additive, and the
    elevation profile's standard deviation (mm) it was trained with (:func:`ply_render_settings`)."""
    return f"{_RENDER_WORD} blended={int(bool(blended))} elevation_sigma_mm={float(elevation_sigma_mm):.9g}"


def ply_render_settings(path: "str | os.PathLike[str]") -> dict[str, float | bool]:
    """``{"blended", "elevation_sigma_mm"}`` from a ``.ply`` header's :func:`render_comment`
    (additive thin planes when it has none, as the paper's model renders)."""
    settings: dict[str, float | bool] = {"blended": False, "elevation_sigma_mm": 0.0}
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    end = head.find(b"end_header")
    for line in head[:end if end >= 0 else len(head)].decode("ascii", errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "comment" and parts[1] == _RENDER_WORD:
            for item in parts[2:]:
                key, _, value = item.partition("=")
                try:
                    if key == "blended":
                        settings["blended"] = bool(int(value))
                    elif key == "elevation_sigma_mm":
                        settings["elevation_sigma_mm"] = max(float(value), 0.0)
                except ValueError:
                    raise FileFormatError(f"{path}: bad render comment {line!r}") from None
    return settings


def load_ply(path: "str | os.PathLike[str]", dtype: torch.dtype = torch.float32) -> Gaussians:
    """Read a Gaussians ``.ply`` written by :func:`save_ply` (or any PLY with the same vertex fields).

    Binary little- and big-endian and ASCII PLY are read; extra vertex properties and extra
    elements after the vertices are ignored.

    Raises
    ------
    FileFormatError
        Not a PLY file, a truncated one, or vertices lacking any of :data:`PLY_FIELDS`.
    """
    p = Path(path)
    raw = p.read_bytes()
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise FileFormatError(f"{p}: not a PLY file (no 'ply' magic or no 'end_header')")
    nl = raw.find(b"\n", end)
    body = raw[nl + 1:] if nl >= 0 else b""
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    fmt = None
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in lines[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format" and len(parts) >= 2:
            fmt = parts[1]
        elif parts[0] == "element" and len(parts) == 3:
            try:
                elements.append((parts[1], int(parts[2]), []))
            except ValueError:
                raise FileFormatError(f"{p}: bad element line {line!r}") from None
        elif parts[0] == "property" and elements:
            if parts[1] == "list":
                raise FileFormatError(f"{p}: list properties are not supported in a Gaussians PLY")
            if len(parts) != 3 or parts[1] not in _PLY_TYPES:
                raise FileFormatError(f"{p}: bad property line {line!r}")
            elements[-1][2].append((parts[2], parts[1]))
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise FileFormatError(f"{p}: unsupported PLY format {fmt!r}")
    if not elements or elements[0][0] != "vertex":
        raise FileFormatError(f"{p}: PLY has no vertex element before other elements")
    _, n, props = elements[0]
    names = [name for name, _ in props]
    missing = [f for f in PLY_FIELDS if f not in names]
    if missing:
        raise FileFormatError(f"{p}: not a Gaussians PLY: vertex properties missing: {' '.join(missing)}")
    if fmt == "ascii":
        rows = body.decode("ascii", errors="replace").split("\n")[:n]
        try:
            table = np.array([[float(v) for v in r.split()[: len(names)]] for r in rows], dtype=np.float64)
        except ValueError:
            raise FileFormatError(f"{p}: bad number in the ASCII vertex data") from None
        if table.shape != (n, len(names)):
            raise FileFormatError(f"{p}: truncated PLY: expected {n} vertices of {len(names)} values")
        cols = {name: table[:, i] for i, name in enumerate(names)}
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        dt = np.dtype([(name, order + _PLY_TYPES[t]) for name, t in props])
        if len(body) < n * dt.itemsize:
            raise FileFormatError(f"{p}: truncated PLY: {n} vertices need {n * dt.itemsize} bytes, found {len(body)}")
        rec = np.frombuffer(body, dtype=dt, count=n)
        cols = {name: rec[name].astype(np.float64) for name in names}
    data = np.stack([cols[f] for f in PLY_FIELDS], axis=1) if n else np.zeros((0, len(PLY_FIELDS)))
    if not np.all(np.isfinite(data)):
        raise FileFormatError(f"{p}: Gaussians PLY contains NaN or infinite values")
    t = torch.as_tensor(data, dtype=dtype)
    return Gaussians(means=t[:, 0:3].contiguous(), log_scales=t[:, 3:6].contiguous(), quats=t[:, 6:10].contiguous(),
                     opacity_logits=t[:, 10].contiguous(), intensities=t[:, 11].contiguous())
