"""Training data for S2MNet and the voxel baseline: six echo views of one phase and its target shape.

A sample is one phase (ED or ES) of one case, so a case gives two samples. Inputs are the six
pseudo-echo views ``[6, H, W]`` of ``views.npz`` (resized to the network's size when they differ).
Targets are

* **s2mnet**: the displacement ``[V, 3]`` (mm) of the template's vertices onto the case;
* **voxel**: occupancy ``[2, R, R, R]`` (float 0/1, indexed ``[z, y, x]``) over a common box:
  channel 0 the whole heart (:func:`sono3d.heart.occupancy.occupancy`), channel 1 the LV cavity.

The echo frame
--------------
The views are planned from the heart's own landmarks (``sono3d.simulate.echo_views``), so their
pixels say where the heart lies *relative to the probe*, not where the heart lies in the torso: the
placement's random shift (+-10 mm) and rotation (+-10 deg) cannot be seen in them. Targets are
therefore expressed in the **echo frame** of each phase: the frame of the A4C image
(``poses[phase, 0]``, image_to_world), with its origin at the image's pixel (0, 0), x along the
image columns, y along the rows (the beam) and z = x × y. ``p_echo = Rᵀ (p_world - o)``. The
template lives in that frame too; :func:`echo_frame` gives the rigid map back to the world when
the poses are known.

Where the targets come from
---------------------------
``targets="deformation"``: ``cases/<id>/deformation.npz`` written by ``sono3d heart correspond``
(template-vertex displacements ``ed``, ``es`` [V, 3]; the template is the case or mesh file named by
``template_id``, whose vertices plus the displacements give the target points in the world). ``targets="identity"``: the case's own ``ed.vtp``/``es.vtp`` vertices, which
for a generated cohort are already in the template's vertex order (the exact correspondence).
``"auto"`` takes deformations when every case has one and the identity otherwise.
In both cases the network's template is the mean, over the **training split**, of the targets in the
echo frame, so it is the same for every run with the same split.

Splits are 80/10/10 by case (both phases of a case stay in one split), drawn with
``np.random.default_rng(seed)``, and written into the run folder as ``split.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import FileFormatError, InputError
from sono3d.heart.cohort import DEFORMATION_EXPECTED, VIEWS_EXPECTED, read_case_mesh
from sono3d.heart.template import load_template
from sono3d.io.atomic import atomic_path
from sono3d.io.npz import read_npz
from sono3d.types import PHASES

__all__ = [
    "PHASES",
    "SPLITS",
    "CohortArrays",
    "HeartViewsDataset",
    "Augment",
    "split_cases",
    "write_split",
    "read_split",
    "echo_frame",
    "load_cohort_arrays",
    "load_views",
    "resize_views",
    "voxel_box",
    "drop_views",
]

SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------

def split_cases(ids: list[str], seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                ) -> dict[str, list[str]]:
    """Split case ids into train/val/test by case, reproducibly from ``seed``.

    Sizes are ``round(f * n)`` for val and test (at least 1 each when ``n >= 3``), the rest train.
    """
    ids = sorted(str(i) for i in ids)
    n = len(ids)
    if n < 1:
        raise InputError("the cohort has no complete cases")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    else:
        n_val = n_test = 0
    test = sorted(ids[i] for i in order[:n_test])
    val = sorted(ids[i] for i in order[n_test:n_test + n_val])
    train = sorted(ids[i] for i in order[n_test + n_val:])
    return {"train": train, "val": val, "test": test}


def write_split(run_dir: str | os.PathLike[str], split: dict[str, list[str]], seed: int) -> Path:
    path = Path(run_dir) / "split.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"seed": int(seed), **split}, indent=1) + "\n", encoding="utf-8")
    return path


def read_split(run_dir: str | os.PathLike[str]) -> dict[str, list[str]]:
    path = Path(run_dir) / "split.json"
    if not path.is_file():
        raise InputError(f"{run_dir}: no split.json (not a training run folder?)")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise FileFormatError(f"{path}: unreadable split") from None
    return {k: list(d.get(k, [])) for k in SPLITS}


# --------------------------------------------------------------------------------------------
# Views and frames
# --------------------------------------------------------------------------------------------

def echo_frame(pose: np.ndarray) -> np.ndarray:
    """The 4x4 world-from-echo rigid transform of an A4C image pose (image_to_world, 4x4).

    Rotation columns are the image's column and row directions (normalised, re-orthogonalised) and
    their cross product; the origin is the image's pixel (0, 0).
    """
    M = np.asarray(pose, dtype=np.float64)
    if M.shape != (4, 4) or not np.isfinite(M).all():
        raise InputError(f"a view pose must be a finite 4x4 matrix, got shape {M.shape}")
    x = M[:3, 0] / max(np.linalg.norm(M[:3, 0]), 1e-12)
    y = M[:3, 1] - x * (x @ M[:3, 1])
    ny = np.linalg.norm(y)
    if ny < 1e-9:
        raise InputError("a view pose has parallel image axes")
    y = y / ny
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, np.cross(x, y), M[:3, 3]
    return T


def to_frame(points: np.ndarray, world_from_frame: np.ndarray) -> np.ndarray:
    """Points ``[..., 3]`` (world mm) into the frame (``Rᵀ (p - o)``)."""
    T = np.asarray(world_from_frame, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) - T[:3, 3]) @ T[:3, :3]


def from_frame(points: np.ndarray, world_from_frame: np.ndarray) -> np.ndarray:
    """Points ``[..., 3]`` of the frame back into the world (``R p + o``)."""
    T = np.asarray(world_from_frame, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def resize_views(views: np.ndarray, size: int) -> np.ndarray:
    """Views ``[..., H, W]`` resized to ``size x size`` (area-averaging down, bilinear up), float32."""
    v = np.asarray(views, dtype=np.float32)
    if v.shape[-1] == size and v.shape[-2] == size:
        return v
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(v.reshape(-1, 1, *v.shape[-2:])))
    mode = "area" if v.shape[-1] >= size else "bilinear"
    out = F.interpolate(t, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return out.numpy().reshape(*v.shape[:-2], size, size)


def load_views(path: str | os.PathLike[str], n_views: int = 6) -> dict[str, Any]:
    """Read and check a ``views.npz`` for prediction.

    Accepts ``echo`` of shape ``[2, 6, H, W]`` (ED, ES) or ``[6, H, W]`` (one phase), and an optional
    ``present [6]`` (bool; ``sono3d heart views`` writes it). A view is missing when ``present``
    says so or when it is blank (one value) in every phase; missing views are set to zero. Returns
    a dict with ``echo`` float32 ``[P, 6, H, W]``, ``present`` bool ``[6]`` and ``poses``
    ``[P, 6, 4, 4]`` or ``None``, and the views' sectors (``opening_deg``, ``depth_mm``,
    ``spacing_mm`` [6]) when the file has them.

    Raises :class:`InputError` for a missing file or array, a wrong shape, NaN or infinite pixels,
    no view at all, or a view blank in one phase but not the other; :class:`FileFormatError` for a
    file that is not a numpy archive or that holds pickled objects (never unpickled).
    """
    p = Path(path)
    data = read_npz(p, f"echo images [2, {n_views}, H, W] (ED, ES) or [{n_views}, H, W] in an .npz, 'poses' "
                       "and 'present' optional", "views")
    key = "echo" if "echo" in data else ("views" if "views" in data else None)
    if key is None:
        raise InputError(f"{p}: no 'echo' array (expected echo images [2, {n_views}, H, W] or [{n_views}, H, W])")
    echo = np.asarray(data[key])
    if echo.ndim == 3:
        echo = echo[None]
    if echo.ndim != 4 or echo.shape[0] not in (1, 2) or echo.shape[1] != n_views:
        raise InputError(f"{p}: echo views must have shape [2, {n_views}, H, W] or [{n_views}, H, W], "
                         f"got {list(np.asarray(data[key]).shape)}")
    if echo.shape[2] < 16 or echo.shape[3] < 16:
        raise InputError(f"{p}: views of {echo.shape[2]}x{echo.shape[3]} pixels are too small")
    if not np.issubdtype(echo.dtype, np.number):
        raise InputError(f"{p}: echo views must be numbers, got dtype {echo.dtype}")
    echo = echo.astype(np.float32)
    if not np.isfinite(echo).all():
        raise InputError(f"{p}: echo views contain NaN or infinite pixels")
    blank = np.array([[np.ptp(echo[ph, v]) == 0 for v in range(n_views)] for ph in range(echo.shape[0])])
    present = ~blank.all(0)
    if "present" in data:
        given = np.asarray(data["present"])
        if given.shape != (n_views,) or given.dtype != bool:
            raise InputError(f"{p}: 'present' must be {n_views} booleans, got {given.dtype} {list(given.shape)}")
        present &= given
    half = np.flatnonzero(blank.any(0) & present)
    if half.size:
        v = int(half[0])
        raise InputError(f"{p}: view {v} is blank in phase {PHASES[int(np.argmax(blank[:, v]))]} but not in the other")
    if not present.any():
        raise InputError(f"{p}: no views (every view is blank)")
    echo[:, ~present] = 0.0
    if echo.max() > 1.0 + 1e-6 or echo.min() < -1e-6:
        # 8-bit or arbitrary-range images: bring them to [0, 1] like the training views
        lo, hi = float(echo[:, present].min()), float(echo[:, present].max())
        echo = np.where(present[None, :, None, None], (echo - lo) / max(hi - lo, 1e-12), 0.0).astype(np.float32)
    sector = {k: np.asarray(data[k], dtype=np.float64) for k in ("opening_deg", "depth_mm", "spacing_mm")
              if k in data and np.shape(data[k]) == (n_views,)}
    poses = data.get("poses")
    if poses is not None:
        poses = np.asarray(poses, dtype=np.float64)
        if poses.ndim == 3:
            poses = poses[None]
        if poses.shape != (echo.shape[0], n_views, 4, 4) or not np.isfinite(poses).all():
            poses = None  # poses are optional: without usable ones the meshes stay in the echo frame
    return {"echo": echo, "present": present, "poses": poses, **sector}


# --------------------------------------------------------------------------------------------
# Cohort arrays
# --------------------------------------------------------------------------------------------

@dataclass
class CohortArrays:
    """A cohort's inputs and targets in memory.

    Attributes
    ----------
    ids : list of str
    echo : ndarray [N, 2, 6, S, S] float32
        Views at the network's size ``S``.
    points : ndarray [N, 2, V, 3] float32
        Target vertices in each phase's echo frame (mm), in the template's vertex order.
    frames : ndarray [N, 2, 4, 4] float64
        World-from-echo transforms.
    poses : ndarray [N, 2, 6, 4, 4] float64
        The views' image_to_world matrices (world mm, for the stored views' size ``view_size``).
    view_size : int
        Edge (pixels) of the views as stored in the cohort (before resizing to ``S``).
    source : str
        ``"deformation"`` or ``"identity"``.
    template_mesh : pyvista.PolyData
        A mesh with the template's connectivity and labels (points replaced by the caller).
    """

    ids: list[str]
    echo: np.ndarray
    points: np.ndarray
    frames: np.ndarray
    source: str
    template_mesh: Any
    poses: np.ndarray | None = None
    view_size: int = 0


def _deformation_targets(cohort: Path, cid: str, templates: dict[str, Any]) -> np.ndarray:
    """World points ``[2, V, 3]`` of a case from its ``deformation.npz`` (arrays ``ed``, ``es``: the
    displacements of the template's vertices, and ``template_id``: the case id or mesh path of the
    template, as ``sono3d heart correspond`` writes them). Loaded templates are cached in ``templates``."""
    path = cohort / "cases" / cid / "deformation.npz"
    d = read_npz(path, DEFORMATION_EXPECTED, "deformation")
    if not all(k in d for k in PHASES) or "template_id" not in d:
        raise FileFormatError(f"{path}: needs arrays 'ed', 'es' and 'template_id' (keys: {', '.join(d)})")
    tid = str(d["template_id"])
    if tid not in templates:
        templates[tid] = load_template(cohort, tid).mesh
    tpl = np.asarray(templates[tid].points, dtype=np.float64)
    disp = np.stack([np.asarray(d[k], dtype=np.float64) for k in PHASES])
    if disp.shape != (2, *tpl.shape):
        raise FileFormatError(f"{path}: displacements of shape {list(disp.shape)} do not fit the template "
                              f"{tid} ({len(tpl)} vertices)")
    return tpl[None] + disp


def load_cohort_arrays(cohort_dir: str | os.PathLike[str], ids: list[str], size: int,
                       targets: str = "auto", views_transform: Any = None) -> CohortArrays:
    """Load views and target vertices of ``ids`` (both phases), in each phase's echo frame.

    ``views_transform``, when given, maps each case's views (the ``views.npz`` arrays) to new echo
    images ``[2, 6, H, W]`` before they are resized: the style bridge (``heart train --style``).
    """
    cohort = Path(cohort_dir)
    if targets not in ("auto", "deformation", "identity"):
        raise InputError(f"targets must be 'auto', 'deformation' or 'identity', got {targets!r}")
    if targets == "auto":
        has = all((cohort / "cases" / c / "deformation.npz").is_file() for c in ids)
        targets = "deformation" if has and ids else "identity"
    echo, pts, frames, all_poses = [], [], [], []
    template_mesh = None
    templates: dict[str, Any] = {}
    n_vert = None
    for cid in ids:
        d = cohort / "cases" / cid
        if not d.is_dir():
            raise InputError(f"{cohort}: no complete case '{cid}'")
        z = read_npz(d / "views.npz", VIEWS_EXPECTED, "views")
        if "echo" not in z or "poses" not in z:
            raise InputError(f"{d / 'views.npz'}: case {cid} needs arrays 'echo' and 'poses' "
                             f"(it has: {', '.join(z) or 'none'})")
        e = np.asarray(z["echo"], dtype=np.float32)
        poses = np.asarray(z["poses"], dtype=np.float64)
        if e.ndim != 4 or e.shape[:2] != (2, 6) or poses.shape != (2, 6, 4, 4):
            raise InputError(f"{cohort}: case {cid}: echo views must be [2, 6, H, W] with poses [2, 6, 4, 4], "
                             f"got {list(e.shape)} and {list(poses.shape)}")
        if views_transform is not None:  # style bridge: the cohort's views in the real style
            e = np.asarray(views_transform(z), dtype=np.float32)
        T = np.stack([echo_frame(poses[p, 0]) for p in range(2)])
        if targets == "deformation":
            world = _deformation_targets(cohort, cid, templates)
            if template_mesh is None:
                template_mesh = next(iter(templates.values()))
        else:
            meshes = [_read_mesh(d / f"{ph}.vtp") for ph in PHASES]
            world = np.stack([np.asarray(m.points, dtype=np.float64) for m in meshes])
            if template_mesh is None:
                template_mesh = meshes[0]
        if n_vert is None:
            n_vert = world.shape[1]
        elif world.shape[1] != n_vert:
            raise InputError(f"{cohort}: case {cid} has {world.shape[1]} vertices, others {n_vert}: "
                             "run 'sono3d heart correspond' to put every case in the template's vertex order")
        echo.append(resize_views(e, size))
        pts.append(np.stack([to_frame(world[p], T[p]) for p in range(2)]).astype(np.float32))
        frames.append(T)
        all_poses.append(poses)
    if template_mesh is None:
        raise InputError(f"{cohort}: no cases to load")
    return CohortArrays(list(ids), np.stack(echo), np.stack(pts), np.stack(frames), targets, template_mesh,
                        np.stack(all_poses), int(e.shape[-1]))


def _read_mesh(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path.parent}: case lacks {path.name}")
    return read_case_mesh(path)


def voxel_box(points: np.ndarray, pad_mm: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half-size (mm) of the box around all ``points [..., 3]``, padded, as a cube.

    A cube keeps the voxels isotropic.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    lo, hi = p.min(0) - pad_mm, p.max(0) + pad_mm
    centre = (lo + hi) / 2
    half = np.full(3, float((hi - lo).max() / 2))
    return centre, half


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Augment:
    """Seeded view augmentation (training only).

    Per view: a gain in ``gain``, a gamma in ``gamma``, Gaussian noise of std ``noise_std``, and an
    integer in-plane shift of up to ``shift_px`` pixels (zeros shifted in). ``enabled=False`` turns
    everything off.
    """

    enabled: bool = True
    gain: tuple[float, float] = (0.85, 1.15)
    gamma: tuple[float, float] = (0.85, 1.15)
    noise_std: float = 0.02
    shift_px: int = 1


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(img)
    H, W = img.shape
    ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
    xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
    out[yd, xd] = img[ys, xs]
    return out


def augment_views(views: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """Augmented copy of views ``[6, H, W]`` in [0, 1]."""
    if not aug.enabled:
        return views
    out = np.empty_like(views)
    for v in range(views.shape[0]):
        img = views[v]
        if aug.shift_px > 0:
            dy, dx = rng.integers(-aug.shift_px, aug.shift_px + 1, size=2)
            img = _shift(img, int(dy), int(dx))
        g = rng.uniform(*aug.gamma)
        img = np.clip(img, 0, 1) ** g * rng.uniform(*aug.gain)
        if aug.noise_std > 0:
            img = img + rng.normal(0.0, aug.noise_std, img.shape).astype(np.float32)
        out[v] = np.clip(img, 0.0, 1.0)
    return out


def drop_views(rng: np.random.Generator, n_views: int, p: float) -> np.ndarray:
    """Presence flags ``[n_views]`` (bool) of one training sample under view dropout.

    With probability ``p`` the sample loses views: each view is kept with probability 1/2 (so
    every non-empty subset is equally likely; an empty draw keeps one view at random); otherwise
    all views are present.
    """
    keep = np.ones(n_views, dtype=bool)
    if p > 0 and rng.random() < p:
        keep = rng.random(n_views) < 0.5
        if not keep.any():
            keep[rng.integers(n_views)] = True
    return keep


class HeartViewsDataset:
    """A map-style ``torch`` dataset of (views ``[6, S, S]``, target, presence ``[6]``) triples, two per case.

    Parameters
    ----------
    arrays : CohortArrays
    kind : {"s2mnet", "voxel"}
    template : ndarray [V, 3]
        For ``s2mnet``: targets are ``points - template`` (mm).
    occupancy : ndarray [N, 2, 2, R, R, R] bool, optional
        For ``voxel``: precomputed occupancy per case and phase (heart, LV cavity).
    augment : Augment, optional
    seed : int
        Augmentation draws use ``default_rng([seed, epoch, index])``, so they do not depend on the
        number of workers or on a restart; call :meth:`set_epoch` before each epoch.
    view_dropout : float
        Probability that a sample loses views (:func:`drop_views`, drawn from
        ``default_rng([seed, epoch, index, 1])``); dropped views are blanked (zeros) and flagged 0.
    """

    def __init__(self, arrays: CohortArrays, kind: str, template: np.ndarray | None = None,
                 occupancy: np.ndarray | None = None, augment: Augment | None = None, seed: int = 0,
                 view_dropout: float = 0.0) -> None:
        self.arrays = arrays
        self.kind = kind
        self.template = None if template is None else np.asarray(template, dtype=np.float32)
        self.occupancy = occupancy
        self.augment = augment or Augment(enabled=False)
        self.seed = int(seed)
        self.view_dropout = float(view_dropout)
        self.epoch = 0
        if kind == "s2mnet" and self.template is None:
            raise InputError("an s2mnet dataset needs the template points")
        if kind == "voxel" and occupancy is None:
            raise InputError("a voxel dataset needs occupancy grids")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return 2 * len(self.arrays.ids)

    def __getitem__(self, index: int) -> tuple[Any, Any, Any]:
        import torch

        c, p = divmod(int(index), 2)
        views = self.arrays.echo[c, p]
        if self.augment.enabled:
            views = augment_views(views, np.random.default_rng([self.seed, self.epoch, int(index)]), self.augment)
        present = drop_views(np.random.default_rng([self.seed, self.epoch, int(index), 1]), views.shape[0],
                             self.view_dropout)
        if not present.all():
            views = views * present[:, None, None]
        x = torch.from_numpy(np.ascontiguousarray(views, dtype=np.float32))
        if self.kind == "s2mnet":
            y = torch.from_numpy(self.arrays.points[c, p] - self.template)
        else:
            y = torch.from_numpy(self.occupancy[c, p].astype(np.float32))
        return x, y, torch.from_numpy(present)
