"""Untracked sources: video files, single images and folders of images (with optional poses).

Video (``.mp4 .avi .mov .mkv .gif``) is decoded by imageio / imageio-ffmpeg; colour frames become
grey by BT.601 luma, then float32 in [0, 1]. None of these formats stores a pixel size, so the
spacing is the caller's ``spacing_mm`` or 1 mm, marked ``meta['spacing_source'] = 'assumed'``.

Image folders: the images (``.png .jpg .jpeg .bmp .tif .tiff``) sorted in natural order
(``frame2`` before ``frame10``), all the same size. An optional ``poses.npy`` ``[N, 4, 4]`` holds
one pose per image, either

* ``image_to_world`` itself (pixel ``(col, row, 0, 1)`` to mm, spacing folded in) when no
  ``spacing_mm`` is given; the spacing is read from its column norms; or
* rigid probe poses ``[R | t]`` (mm) when ``spacing_mm`` is given: then
  ``image_to_world = pose @ diag(dx, dy, 1, 1)``, i.e. the image's columns run along the pose's
  x axis, its rows along y, and pixel (0, 0) sits at the pose's origin. Poses of other image
  layouts must be converted by the caller first.

A pose count that differs from the number of images is an error.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sono3d.errors import FileFormatError, InputError
from sono3d.io.registry import IMAGE_SUFFIXES, reason
from sono3d.io.sequences import frames_to_float
from sono3d.types import Sweep

__all__ = ["read_video", "read_image", "read_image_folder", "natural_key", "video_frames", "load_image"]

POSES_FILE = "poses.npy"


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically (``img2`` < ``img10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _spacing(spacing_mm: tuple[float, float] | None, meta: dict) -> tuple[float, float]:
    if spacing_mm is None:
        meta["spacing_source"] = "assumed"
        meta["spacing_note"] = "the file stores no pixel size; 1 mm assumed (pass --spacing)"
        return 1.0, 1.0
    meta["spacing_source"] = "option"
    return float(spacing_mm[0]), float(spacing_mm[1])


def video_frames(path: str | Path, max_frames: int | None = None) -> tuple[list[np.ndarray], float]:
    """The decoded frames of a video (as stored: RGB or grey) and its frame rate (0 when unknown).

    Raises :class:`FileFormatError` for a file ffmpeg cannot open or decode, or one with no frames.
    """
    import imageio.v2 as iio

    path = Path(path)
    try:
        reader = iio.get_reader(str(path), format="FFMPEG" if path.suffix.lower() != ".gif" else None)
    except Exception as exc:  # noqa: BLE001 - ffmpeg reports corrupt files in many ways
        raise FileFormatError(f"{path}: cannot open video ({reason(exc)})") from None
    try:
        fps = float(reader.get_meta_data().get("fps") or 0.0)
        frames = []
        for f in reader:
            frames.append(np.asarray(f))
            if max_frames is not None and len(frames) >= max_frames:
                break
    except Exception as exc:  # noqa: BLE001
        raise FileFormatError(f"{path}: cannot decode video ({reason(exc)})") from None
    finally:
        reader.close()
    if not frames:
        raise FileFormatError(f"{path}: video has no frames")
    return frames, fps


def read_video(path: str | Path, spacing_mm: tuple[float, float] | None = None) -> Sweep:
    """Read a video file as an untracked Sweep (grey float32 frames)."""
    path = Path(path)
    frames, fps = video_frames(path)
    meta: dict = {"source": str(path), "format": "video"}
    if fps > 0:
        meta["fps"] = fps
        meta["frame_times_s"] = [i / fps for i in range(len(frames))]
    stack = np.stack(frames)
    return Sweep(frames=frames_to_float(stack, path), image_to_world=None, spacing_mm=_spacing(spacing_mm, meta), meta=meta)


def load_image(path: str | Path) -> np.ndarray:
    """One image file as stored (grey ``[H, W]`` or ``[H, W, C]``, C = 1, 3 or 4; dtype as in the file).

    Raises :class:`FileFormatError` for a file that is not a readable grey or colour image.
    """
    import imageio.v3 as iio

    path = Path(path)

    try:
        a = np.asarray(iio.imread(str(path)))
    except Exception as exc:  # noqa: BLE001 - Pillow raises several types for broken images
        raise FileFormatError(f"{path}: cannot read image ({reason(exc)})") from None
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4):
        raise FileFormatError(f"{path}: image has shape {a.shape}; expected grey or RGB")
    return a


def read_image(path: str | Path, spacing_mm: tuple[float, float] | None = None) -> Sweep:
    """Read one image as a one-frame Sweep (``meta['kind'] = 'image'``)."""
    path = Path(path)
    a = load_image(path)
    meta: dict = {"source": str(path), "format": "image", "kind": "image"}
    return Sweep(frames=frames_to_float(a[None], path), image_to_world=None,
                 spacing_mm=_spacing(spacing_mm, meta), meta=meta)


def read_image_folder(folder: str | Path, spacing_mm: tuple[float, float] | None = None) -> Sweep:
    """Read a folder of images (natural order) and its optional ``poses.npy`` as a Sweep."""
    folder = Path(folder)
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise FileFormatError(f"{folder}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
    images = [load_image(p) for p in files]
    shapes = {im.shape[:2] for im in images}
    if len(shapes) != 1:
        raise FileFormatError(f"{folder}: images differ in size ({', '.join(f'{h}x{w}' for h, w in sorted(shapes))})")
    if len({im.ndim for im in images}) != 1:
        images = [im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=-1) for im in images]
    frames = frames_to_float(np.stack(images), folder)
    meta: dict = {"source": str(folder), "format": "image folder", "files": [p.name for p in files]}

    poses_path = folder / POSES_FILE
    image_to_world = None
    if poses_path.is_file():
        try:
            poses = np.load(poses_path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise FileFormatError(f"{poses_path}: cannot read poses ({reason(exc)})") from None
        poses = np.asarray(poses, dtype=np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4):
            raise FileFormatError(f"{poses_path}: poses must have shape [N, 4, 4], got {poses.shape}")
        if len(poses) != len(files):
            raise InputError(f"{poses_path}: {len(poses)} poses but {len(files)} images in {folder}")
        if not np.all(np.isfinite(poses)):
            raise InputError(f"{poses_path}: poses contain NaN or infinite values")
        if spacing_mm is not None:
            dy, dx = float(spacing_mm[0]), float(spacing_mm[1])
            image_to_world = poses @ np.diag([dx, dy, 1.0, 1.0])
            sp = (dy, dx)
            meta["spacing_source"] = "option"
            meta["poses"] = "probe poses [R|t] scaled by the pixel spacing"
        else:
            s = np.linalg.norm(poses[0, :3, :2], axis=0)
            sp = (float(s[1]), float(s[0]))
            image_to_world = poses
            meta["spacing_source"] = "poses"
            meta["poses"] = "image_to_world"
            if np.allclose(s, 1.0):
                meta["spacing_note"] = "poses have unit axes: 1 mm pixels (pass spacing_mm if these are probe poses)"
    else:
        sp = _spacing(spacing_mm, meta)
    return Sweep(frames=frames, image_to_world=image_to_world, spacing_mm=sp, meta=meta)
