"""The public entry points: read/write sweeps, volumes and meshes by extension, and ``read_any``.

Every reader goes through :func:`_guarded`, which turns whatever a third-party library raises on a
corrupt or truncated file into a one-line :class:`~sono3d.errors.FileFormatError` naming the
file (the original exception stays chained for debugging).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sono3d.errors import FileFormatError, InputError, SonoError, about
from sono3d.geometry.mesh import enclosed_volume_mm3, is_watertight, label_values
from sono3d.io.atomic import full_suffix
from sono3d.io.registry import check_file, lookup, reason, sniff_kind
from sono3d.io.video import read_image_folder
from sono3d.types import Sweep, Volume

__all__ = ["read_sweep", "write_sweep", "read_volume", "write_volume", "read_mesh", "write_mesh", "read_any", "describe"]

T = TypeVar("T")
PathLike = str | os.PathLike[str]


def _guarded(path: Path, what: str, fn: Callable[[], T]) -> T:
    try:
        with about(path):  # checks made without the path (a Sweep of NaN frames, say) still name the file
            return fn()
    except SonoError:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise FileFormatError(f"{getattr(exc, 'filename', None) or path}: {exc.strerror or type(exc).__name__}") from exc
    except Exception as exc:  # corrupt input makes libraries raise anything; report it as one line
        raise FileFormatError(f"{path}: cannot read {what} ({reason(exc)})") from exc


def read_sweep(
    path: PathLike,
    plus_config: PathLike | Any | None = None,
    spacing_mm: tuple[float, float] | None = None,
) -> Sweep:
    """Read a 2D ultrasound sweep from any supported source.

    Parameters
    ----------
    path : str or Path
        A sequence file (``.seq.nrrd``, ``.igs.mha``, ``.seq.mha``, ``.igs.nrrd``, ``.mha``,
        ``.nrrd``), a DICOM file (``.dcm``), a video (``.mp4``, ``.avi``, ...), one image
        (``.png``, ``.jpg``, ...) or a folder of images with an optional ``poses.npy``.
    plus_config : str, Path, PlusConfig or None
        PLUS configuration XML for sequence files (calibration and transform names).
    spacing_mm : (dy, dx) or None
        Pixel spacing in mm for sources that do not store one (video, images, uncalibrated PLUS);
        ignored where the file gives it.

    Returns
    -------
    Sweep
        Frames ``(N, H, W)`` float32 in [0, 1]; ``image_to_world`` ``(N, 4, 4)`` RAS mm or None;
        ``meta['source']`` is the path.

    Raises
    ------
    FileFormatError, InputError
        One-line messages naming the file.
    """
    if spacing_mm is not None:
        spacing_mm = _check_spacing(spacing_mm)
    if Path(path).is_dir():
        p = check_file(path, allow_dir=True)
        return _guarded(p, "image folder", lambda: read_image_folder(p, spacing_mm=spacing_mm))
    fmt = lookup(path, "sweep")
    p = check_file(path)
    if fmt.reader_ref and fmt.reader_ref.endswith(":read_sequence"):
        return _guarded(p, fmt.description, lambda: fmt.reader(p, plus_config=plus_config, spacing_mm=spacing_mm))
    return _guarded(p, fmt.description, lambda: fmt.reader(p, spacing_mm=spacing_mm))


def _check_spacing(spacing_mm: Any) -> tuple[float, float]:
    try:
        values = [float(v) for v in (spacing_mm if hasattr(spacing_mm, "__len__") else [spacing_mm])]
    except (TypeError, ValueError):
        raise InputError(f"pixel spacing must be numbers in mm, got {spacing_mm!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(v > 0 and v < float("inf") for v in values):
        raise InputError(f"pixel spacing must be one or two positive numbers in mm, got {spacing_mm!r}")
    return values[0], values[1]


def write_sweep(path: PathLike, sweep: Sweep) -> Path:
    """Write a sweep atomically: ``.seq.nrrd`` (sono3d's own, opens in 3D Slicer) or ``.igs.mha``.

    Frames are stored as float32, poses as per-frame ``ImageToReferenceTransform`` (LPS), with the
    spacing, sector and frame times in ``sono3d_*`` fields, so :func:`read_sweep` gives back an
    identical sweep.
    """
    if not isinstance(sweep, Sweep):
        raise InputError(f"write_sweep needs a Sweep, got {type(sweep).__name__}")
    fmt = lookup(path, "sweep", writing=True)
    return fmt.writer(path, sweep)


def read_volume(path: PathLike) -> Volume:
    """Read a 3D volume (``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd``) as a RAS Volume.

    NIfTI keeps its affine; MetaImage and NRRD are converted from LPS to RAS.
    """
    fmt = lookup(path, "volume")
    p = check_file(path)
    return _guarded(p, fmt.description, lambda: fmt.reader(p))


def write_volume(path: PathLike, volume: Volume) -> Path:
    """Write a volume atomically; the format follows the extension (bit-exact round trip)."""
    if not isinstance(volume, Volume):
        raise InputError(f"write_volume needs a Volume, got {type(volume).__name__}")
    return lookup(path, "volume", writing=True).writer(path, volume)


def read_mesh(path: PathLike, scale: float = 1.0):  # noqa: ANN201 - pyvista.PolyData
    """Read a surface mesh (``.vtk .vtp .stl .ply .obj``) as ``pyvista.PolyData``.

    Vertex order is kept as stored and point/cell data arrays (``elemTag``...) come along.
    ``scale`` multiplies the coordinates (GHDHeart OBJ files need ``scale=100`` for mm).
    """
    fmt = lookup(path, "mesh")
    p = check_file(path)
    return _guarded(p, fmt.description, lambda: fmt.reader(p, scale=scale))


def write_mesh(path: PathLike, mesh) -> Path:  # noqa: ANN001
    """Write a mesh atomically; the format follows the extension."""
    return lookup(path, "mesh", writing=True).writer(path, mesh)


def read_any(path: PathLike, plus_config: PathLike | None = None, spacing_mm: tuple[float, float] | None = None):  # noqa: ANN201
    """Read whatever ``path`` holds: a Sweep (sweeps and single images), a Volume or a PolyData.

    Single images and single-frame DICOMs come back as a one-frame Sweep with ``meta['kind']``
    set to ``'image'``.
    """
    if not Path(path).is_dir():
        lookup(path)
    p = check_file(path, allow_dir=True)
    kind = _guarded(p, "file", lambda: sniff_kind(p))
    if kind in ("sweep", "image"):
        sweep = read_sweep(p, plus_config=plus_config, spacing_mm=spacing_mm)
        if kind == "image" or (sweep.n_frames == 1 and not p.is_dir() and sweep.meta.get("kind") is None
                               and sweep.meta.get("format", "").startswith("dicom")):
            sweep.meta["kind"] = "image"
        return sweep
    if kind == "volume":
        return read_volume(p)
    return read_mesh(p)


def describe(path: PathLike, plus_config: PathLike | None = None,
             spacing_mm: tuple[float, float] | None = None) -> dict[str, Any]:
    """A JSON-ready summary of a file, as ``sono3d info --json`` prints it.

    Keys for every kind: ``path``, ``kind`` (``sweep``, ``volume``, ``mesh``, ``image``),
    ``format``, ``frames``, ``shape``, ``spacing_mm``, ``has_poses``. Sweeps add ``duration_s``,
    ``spacing_source`` and (PLUS) ``plus_config``, ``transforms``, ``dropped_frames``; volumes add
    ``affine`` and ``dtype``; meshes add ``points``, ``cells``, ``labels`` (sorted unique values),
    ``label_array``, ``watertight``, ``bounds_mm`` and, when closed, ``enclosed_volume_ml``.
    """
    obj = read_any(path, plus_config=plus_config, spacing_mm=spacing_mm)
    out: dict[str, Any] = {"path": str(path)}
    if isinstance(obj, Sweep):
        meta = obj.meta
        out.update(kind=meta.get("kind", "sweep"), format=meta.get("format"), frames=obj.n_frames,
                   shape=list(obj.shape), spacing_mm=list(obj.spacing_mm), has_poses=obj.has_poses,
                   spacing_source=meta.get("spacing_source"), sector=obj.sector.to_dict() if obj.sector else None)
        times = meta.get("frame_times_s")
        if times is not None and len(times) > 1:
            out["duration_s"] = float(times[-1] - times[0])
        for key in ("plus_config", "transforms", "dropped_frames", "pose_chain", "photometric", "fps"):
            if key in meta:
                out[key] = meta[key]
        return out
    if isinstance(obj, Volume):
        out.update(kind="volume", format=obj.meta.get("format"), frames=None, shape=list(obj.shape),
                   spacing_mm=list(obj.spacing_mm), has_poses=False, dtype=str(obj.array.dtype),
                   affine=obj.affine.tolist())
        return out
    mesh = obj
    label_name = next((n for n in ("elemTag", "labels", "label", "RegionId", "obj_group")
                       if n in mesh.cell_data or n in mesh.point_data), None)
    labels = label_values(mesh, label_name) if label_name else []
    closed = is_watertight(mesh)
    out.update(kind="mesh", format=full_suffix(path), frames=None, shape=None, spacing_mm=None, has_poses=False,
               points=int(mesh.n_points), cells=int(mesh.n_cells), labels=labels, label_array=label_name,
               watertight=closed, bounds_mm=[float(b) for b in mesh.bounds])
    if closed:
        out["enclosed_volume_ml"] = enclosed_volume_mm3(mesh, check=False) / 1000.0
    return out

