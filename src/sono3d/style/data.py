"""Images for style transfer and the gap test: synthetic cohort views and views files, with their fans.

A views file (``views.npz``: ``echo`` ``[P, 6, H, W]`` or ``[6, H, W]``, and, from the cohort or the
intake, the sector of each view as ``opening_deg``, ``depth_mm`` and ``spacing_mm`` ``[6]``) gives
its images and exact fans (apex at the top centre, as every view in the cohort's geometry has).
A views file of the intake (``sono3d heart views``) also holds ``coverage`` ``[6, H, W]``, the pixels
that hold image data (a recording may show less than the target fan): that wins. Without either the
fan is the filled non-zero region of each image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from sono3d.errors import FileFormatError, InputError
from sono3d.geometry.sector import sector_for_probe, sector_mask
from sono3d.intake import ViewGeometry, intake_echo
from sono3d.io.npz import read_npz
from sono3d.style.cyclegan import Domain
from sono3d.types import PHASES

__all__ = ["read_views_file", "views_masks", "views_domain", "cohort_domain", "nonzero_fan", "resize_square", "real_domain",
           "VIEWS_SUFFIX", "cohort_info", "cohort_geometry",
           "views_geometry"]

VIEWS_SUFFIX = ".npz"


def read_views_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """All arrays of a ``views.npz`` (:func:`sono3d.io.npz.read_npz`: never unpickled), ``echo`` as
    ``[P, V, H, W]`` float32 in [0, 1] (8-bit and other ranges are scaled)."""
    p = Path(path)
    data = read_npz(p, "echo views [P, 6, H, W] or [6, H, W] in an .npz", "views")
    if "echo" not in data:
        raise InputError(f"{p}: no 'echo' array (expected echo views [P, 6, H, W] or [6, H, W])")
    echo = np.asarray(data["echo"])
    if echo.ndim == 3:
        echo = echo[None]
    if echo.ndim != 4 or not np.issubdtype(echo.dtype, np.number):
        raise InputError(f"{p}: echo views must be numbers of shape [P, V, H, W] or [V, H, W], "
                         f"got {list(np.asarray(data['echo']).shape)}")
    echo = echo.astype(np.float32)
    if not np.isfinite(echo).all():
        raise InputError(f"{p}: echo views contain NaN or infinite pixels")
    if echo.max() > 1.0 + 1e-6:
        echo = echo / (255.0 if echo.max() <= 255.0 else float(echo.max()))
    data["echo"] = echo
    return data


def nonzero_fan(image: np.ndarray) -> np.ndarray:
    """The fan of a view with black outside it: non-zero pixels, closed and filled."""
    m = np.asarray(image) > 0
    m = ndimage.binary_closing(m, iterations=2, border_value=0)
    return ndimage.binary_fill_holes(m)


def views_masks(data: dict[str, Any]) -> np.ndarray:
    """Fans ``[P, V, H, W]`` of a views file's ``echo``: the intake's ``coverage [V, H, W]`` (the
    pixels that hold image data, as ``sono3d heart views`` writes it), else the sectors of its
    ``opening_deg``/``depth_mm``/``spacing_mm``, else each image's non-zero region."""
    echo = data["echo"]
    P, V, H, W = echo.shape
    cov = data.get("coverage")
    if cov is not None and np.shape(cov) == (V, H, W):
        return np.broadcast_to(np.asarray(cov, dtype=bool)[None], echo.shape).copy()
    have = all(k in data and np.asarray(data[k]).shape == (V,) for k in ("opening_deg", "depth_mm", "spacing_mm"))
    out = np.zeros(echo.shape, dtype=bool)
    for v in range(V):
        if have:
            s = float(data["spacing_mm"][v])
            sec = sector_for_probe((H, W), (s, s), float(data["opening_deg"][v]), float(data["depth_mm"][v]))
            out[:, v] = sector_mask(sec, (H, W), (s, s))[None]
        else:
            for p in range(P):
                out[p, v] = nonzero_fan(echo[p, v])
    return out


def resize_square(images: np.ndarray, size: int, masks: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Images ``[N, H, W]`` (area averaging down, bilinear up) and masks (nearest) at ``size x size``."""
    im = np.asarray(images, dtype=np.float32)
    if im.shape[-2:] == (size, size):
        return im, masks
    t = torch.from_numpy(np.ascontiguousarray(im[:, None]))
    mode = "area" if im.shape[-1] >= size else "bilinear"
    out = F.interpolate(t, size=(size, size), mode=mode)[:, 0].numpy()
    if masks is None:
        return out, None
    m = F.interpolate(torch.from_numpy(np.asarray(masks, dtype=np.float32)[:, None]), size=(size, size),
                      mode="nearest")[:, 0].numpy() > 0.5
    return out * m, m


def views_domain(path: str | os.PathLike[str], views: tuple[int, ...] | None = None) -> Domain:
    """The images of a views file (every phase; ``views`` picks view indices) on their fans."""
    data = read_views_file(path)
    masks = views_masks(data)
    P, V = data["echo"].shape[:2]
    pairs = [(q, v) for q in range(P) for v in (views if views is not None else range(V))]
    if not pairs:
        raise InputError(f"{path}: no views selected")
    images = np.stack([data["echo"][q, v] * masks[q, v] for q, v in pairs])
    return Domain(images, np.stack([masks[q, v] for q, v in pairs]), [f"{Path(path).name}:{k}" for k in range(len(pairs))])


def cohort_domain(cohort_dir: str | os.PathLike[str], ids: list[str], size: int | None = None,
                  views: tuple[int, ...] | None = None, phases: tuple[int, ...] = (0, 1)) -> Domain:
    """The synthetic domain: views of the given cases of a generated cohort, with their fans.

    Parameters
    ----------
    ids : list of str
        Case ids (for the S2MNet route, the training split, so that test cases stay unseen).
    size : int, optional
        Bring the views to ``size x size`` (default: as stored).
    views : tuple of int, optional
        View indices to take (default all six).
    phases : tuple of int
        Phases (0 ED, 1 ES).
    """
    root = Path(cohort_dir)
    if not ids:
        raise InputError(f"{root}: no cases to take synthetic views from")
    ims, ms, names = [], [], []
    for cid in ids:
        path = root / "cases" / cid / "views.npz"
        if not path.is_file():
            raise InputError(f"{root}: case {cid} has no views.npz (not a generated heart cohort?)")
        data = read_views_file(path)
        masks = views_masks(data)
        vn = [str(v) for v in data.get("view_names", [f"view{j}" for j in range(data["echo"].shape[1])])]
        for p in phases:
            if p >= data["echo"].shape[0]:
                continue
            for v in (views if views is not None else range(data["echo"].shape[1])):
                ims.append(data["echo"][p, v] * masks[p, v])
                ms.append(masks[p, v])
                names.append(f"{cid}/{PHASES[p]}/{vn[v]}")
    images, masks_arr = np.stack(ims), np.stack(ms)
    if size is not None:
        images, masks_arr = resize_square(images, size, masks_arr)
    return Domain(images, masks_arr, names)


def real_domain(paths: list[str | os.PathLike[str]], geometry: ViewGeometry, depth_mm: float | None = None,
                views: tuple[int, ...] | None = None) -> Domain:
    """Real frames: every frame of each source after sector intake into ``geometry``.

    Sources are images, folders of images, videos and DICOM files (:func:`sono3d.intake.intake_echo`:
    fan found, outside blanked, colour removed, resampled with physical mm; the fan ``coverage`` is
    the mask), or views files (``.npz``, already in a view geometry; ``views`` picks view indices).
    Raises :class:`InputError` for a source with no frames, a frame of one value inside its fan,
    or frames of another size than ``geometry``.
    """
    if not paths:
        raise InputError("no REAL sources given")
    ims, ms, names = [], [], []
    for path in paths:
        p = Path(path)
        if p.suffix.lower() == VIEWS_SUFFIX:
            dom = views_domain(p, views)
            frames, fmask = dom.images, dom.masks
            if frames.shape[1:] != geometry.shape:
                frames, fmask = resize_square(frames, geometry.size, fmask)
        else:
            it = intake_echo(p, geometry, depth_mm=depth_mm)
            frames = it.views
            fmask = np.broadcast_to(it.coverage, frames.shape)
        if len(frames) == 0:
            raise InputError(f"{p}: no frames")
        if not fmask.any():
            raise InputError(f"{p}: its fan does not overlap the view's fan")
        for i in range(len(frames)):
            inside = frames[i][fmask[i]]
            if inside.size and np.ptp(inside) == 0:
                raise InputError(f"{p}: frame {i} is of one value ({float(inside[0]):.3g}) inside its fan")
            ims.append(frames[i] * fmask[i])
            ms.append(np.array(fmask[i]))
            names.append(f"{p.name}:{i}")
    return Domain(np.stack(ims).astype(np.float32), np.stack(ms), names)


def cohort_info(cohort_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A generated cohort's ``cohort.json`` (refuses a folder that is not one)."""
    path = Path(cohort_dir) / "cohort.json"
    if not path.is_file():
        raise InputError(f"{cohort_dir}: no cohort.json (not a generated heart cohort)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise FileFormatError(f"{path}: unreadable") from None


def cohort_geometry(cohort_dir: str | os.PathLike[str], size: int) -> ViewGeometry:
    """The apical view geometry of a cohort (field of view, depth, mid opening angle) at ``size`` pixels.

    Real frames are brought into it for style training and the gap test.
    """
    views = cohort_info(cohort_dir).get("views", {})
    try:
        lo, hi = views["opening_deg"]
        return ViewGeometry(size=int(size), fov_mm=float(views["apical_fov_mm"]),
                            depth_mm=float(views["apical_depth_mm"]), opening_deg=(float(lo) + float(hi)) / 2)
    except (KeyError, TypeError, ValueError):
        raise FileFormatError(f"{cohort_dir}: cohort.json lacks the view geometry") from None


def views_geometry(data: dict[str, Any], size: int) -> ViewGeometry | None:
    """The apical (first view's) geometry of a views file with sector arrays, at ``size`` pixels."""
    if not all(k in data for k in ("opening_deg", "depth_mm", "spacing_mm")):
        return None
    H = int(data["echo"].shape[-1])
    return ViewGeometry(size=int(size), fov_mm=float(data["spacing_mm"][0]) * H, depth_mm=float(data["depth_mm"][0]),
                        opening_deg=float(np.mean(data["opening_deg"][:3])))
