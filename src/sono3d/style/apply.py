"""``sono3d style apply``: translate views files, images and recordings with a trained style run.

* A views file (``.npz``) keeps all its arrays; ``echo`` ``[P, 6, H, W]`` is translated inside
  each view's fan and ``style_run``, ``style_direction`` record what was done.
* Anything else (an image, a folder of images, a video, a DICOM file) goes through the sector intake
  into the run's view geometry first; one frame is written as a PNG, several as
  ``OUT/frame_0000.png ...``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np

from sono3d.errors import InputError
from sono3d.intake import ViewGeometry, intake_echo
from sono3d.io.atomic import atomic_path
from sono3d.io.lock import writer_lock
from sono3d.io.npz import write_npz
from sono3d.style.cyclegan import DIRECTIONS, StyleRun, load_style_run, translate
from sono3d.style.data import VIEWS_SUFFIX, read_views_file, views_masks

__all__ = ["translate_views", "apply_path", "run_geometry", "views_transform"]


def run_geometry(run: StyleRun) -> ViewGeometry:
    """The view geometry the run's real frames were brought into."""
    g = run.info.get("geometry")
    if not isinstance(g, dict):
        raise InputError(f"{run.path}: the run records no view geometry (it was not trained from the command line)")
    return ViewGeometry(size=int(g["size"]), fov_mm=float(g["fov_mm"]), depth_mm=float(g["depth_mm"]),
                        opening_deg=float(g["opening_deg"]))


def translate_views(run: StyleRun, data: dict[str, Any], direction: str) -> np.ndarray:
    """Translated ``echo`` ``[P, V, H, W]`` of a views dict (``echo`` and, if known, its sector arrays)."""
    echo = np.asarray(data["echo"], dtype=np.float32)
    if echo.ndim == 3:
        echo = echo[None]
    if echo.ndim != 4:
        raise InputError(f"echo views must be [P, V, H, W], got shape {list(echo.shape)}")
    masks = views_masks({**data, "echo": echo})
    P, V, H, W = echo.shape
    out = translate(run, echo.reshape(-1, H, W), masks.reshape(-1, H, W), direction)
    return out.reshape(P, V, H, W)


def views_transform(run_dir: str | os.PathLike[str], direction: str):  # noqa: ANN201 - a callable
    """A ``views dict -> echo`` function for ``heart train|predict --style`` (and its description)."""
    run = load_style_run(run_dir)

    def f(data: dict[str, Any]) -> np.ndarray:
        return translate_views(run, data, direction)

    return f, {"run": str(run.path), "epoch": run.epoch, "direction": direction}


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), extension=".png")


def apply_path(run_dir: str | os.PathLike[str], inp: str | os.PathLike[str], out: str | os.PathLike[str],
               direction: str = "to-real", depth_mm: float | None = None) -> dict[str, Any]:
    """Translate ``inp`` into ``out`` (see the module notes). Returns what was written.

    ``out`` is locked for the whole call (:func:`sono3d.io.lock.writer_lock`); each file is
    written atomically, after everything is translated.
    """
    with writer_lock(out, "output"):
        return _apply(run_dir, Path(inp), Path(out), direction, depth_mm)


def _apply(run_dir: str | os.PathLike[str], src: Path, dst: Path, direction: str, depth_mm: float | None
           ) -> dict[str, Any]:
    if direction not in DIRECTIONS:
        raise InputError(f"--direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    views_in = src.suffix.lower() == VIEWS_SUFFIX
    if views_in and dst.suffix.lower() != VIEWS_SUFFIX:
        raise InputError(f"{dst}: a views file translates into a views file (.npz)")
    run = load_style_run(run_dir)
    if views_in:
        data = read_views_file(src)
        echo = translate_views(run, data, direction)
        arrays = {k: v for k, v in data.items() if k not in ("echo", "style_run", "style_direction")}
        write_npz(dst, {"echo": echo.astype(np.float32), **arrays, "style_run": np.array(str(run.path)),
                        "style_direction": np.array(direction)})
        return {"out": str(dst), "kind": "views", "images": int(echo.shape[0] * echo.shape[1]),
                "direction": direction, "epoch": run.epoch}
    it = intake_echo(src, run_geometry(run), depth_mm=depth_mm)
    frames = translate(run, it.views, np.broadcast_to(it.coverage, it.views.shape), direction)
    if len(frames) == 1 and dst.suffix.lower() == ".png":
        _write_png(dst, frames[0])
        files = [str(dst)]
    else:
        if dst.suffix:
            raise InputError(f"{dst}: {len(frames)} frames are written into a folder, not a file")
        dst.mkdir(parents=True, exist_ok=True)
        files = []
        for i, f in enumerate(frames):
            path = dst / f"frame_{i:04d}.png"
            _write_png(path, f)
            files.append(str(path))
    return {"out": str(dst), "kind": it.kind, "images": len(frames), "direction": direction, "epoch": run.epoch,
            "warnings": it.warnings, "files": files[:3] + (["..."] if len(files) > 3 else [])}
