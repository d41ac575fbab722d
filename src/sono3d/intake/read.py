"""Reading a recorded echo as colour-aware frames: an image, a folder of images, a video, a DICOM, an array.

The sweep readers of :mod:`sono3d.io` turn colour into grey at once; intake needs to know which
pixels were coloured (colour-Doppler flow inside the sector, the ECG trace and icons outside it), so
it reads the pixels itself and keeps a per-pixel colour flag beside the grey level.

* Grey is the BT.601 luma of RGB (:func:`sono3d.io.sequences.frames_to_float`), float32 in [0, 1].
* A pixel is *coloured* when ``max(R, G, B) - min(R, G, B) > COLOUR_CHROMA`` (in [0, 1] units).
  Grey-scale ultrasound, text and markers have equal channels (up to compression noise, about 0.05
  in the MP4 loops here); Doppler colour maps and green ECG traces are far above the threshold.
* Pixel size: a DICOM's ``SequenceOfUltrasoundRegions`` (through :func:`sono3d.io.dicom.dicom_spacing_mm`)
  when the region box fits inside the image, else ``PixelSpacing``, else unknown (``None``): the
  caller then scales from a depth. A region box larger than the image means the pixels were resized
  after the region was written (``pydicom.examples.ybr_color`` is 320x240 with a 595x414 region): then
  neither the box nor its pixel size is trusted and ``notes`` says so.
* DICOM files without an extension are recognised by the ``DICM`` marker at byte 128.
* ``.npz`` / ``.npy`` arrays of frames ``[H, W]``, ``[N, H, W]`` or ``[N, H, W, 3]`` are read with
  ``allow_pickle=False``: a file holding pickled objects is refused without unpickling it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sono3d.errors import FileFormatError, InputError
from sono3d.io.atomic import full_suffix
from sono3d.io.dicom import dicom_spacing_mm, open_dicom
from sono3d.io.npz import read_npz
from sono3d.io.registry import IMAGE_SUFFIXES, VIDEO_SUFFIXES, reason
from sono3d.io.sequences import frames_to_float
from sono3d.io.video import load_image, natural_key, video_frames

__all__ = ["EchoFrames", "read_echo", "read_npz", "source_kind", "COLOUR_CHROMA", "ARRAY_SUFFIXES",
           "DICOM_SUFFIXES"]

COLOUR_CHROMA = 0.15
DICOM_SUFFIXES = (".dcm", ".dicom")
ARRAY_SUFFIXES = (".npz", ".npy")
# A longer clip is cut: intake needs one heartbeat or a few, and 8-bit RGB frames cost H*W*3 bytes each.
MAX_FRAMES = 600


@dataclass
class EchoFrames:
    """The frames of one echo recording.

    Attributes
    ----------
    grey : ndarray [N, H, W] float32
        Grey level in [0, 1].
    colour : ndarray [N, H, W] bool or None
        Coloured pixels (``None`` for a grey-scale source).
    spacing_mm : (dy, dx) or None
        Pixel size in mm where the file states it.
    spacing_source : str
        ``ultrasound region (cm)``, ``PixelSpacing`` or ``none``.
    region : (x0, y0, x1, y1) or None
        The DICOM ultrasound region box (pixels, inclusive) when it fits in the image.
    path : Path
    kind : str
        ``image``, ``image folder``, ``video``, ``dicom`` or ``array``.
    fps : float or None
    notes : list of str
        Things the user should know (a region box that was not trusted, a clip that was cut).
    """

    grey: np.ndarray
    colour: np.ndarray | None
    spacing_mm: tuple[float, float] | None
    spacing_source: str
    region: tuple[int, int, int, int] | None
    path: Path
    kind: str
    fps: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.grey.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.grey.shape[1]), int(self.grey.shape[2])


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def source_kind(path: str | os.PathLike[str]) -> str:
    """What a path holds for intake: ``image``, ``image folder``, ``video``, ``dicom`` or ``array``.

    Raises
    ------
    FileFormatError
        The path does not exist, or is none of these (the message lists what is accepted).
    """
    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"{p}: no such file or folder")
    if p.is_dir():
        return "image folder"
    suffix = full_suffix(p)
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in DICOM_SUFFIXES or _is_dicom(p):
        return "dicom"
    if suffix in ARRAY_SUFFIXES:
        return "array"
    raise FileFormatError(
        f"{p}: not an echo image, DICOM or video (type '{suffix or '(none)'}'; expected an image "
        f"{' '.join(IMAGE_SUFFIXES)}, a video {' '.join(VIDEO_SUFFIXES)}, a DICOM file, a folder of images "
        f"or frames in {' '.join(ARRAY_SUFFIXES)})")


def _split_colour(rgb: np.ndarray | list[np.ndarray], path: Path | str) -> tuple[np.ndarray, np.ndarray | None]:
    """Frames ``[N, H, W(, C)]`` (an array or a list of frames) to grey float32 in [0, 1] and the
    coloured-pixel flags.

    Frame by frame, in 8-bit integers where the data are 8-bit: a 76-frame 1024x576 RGB loop would
    need 1 GB of float64 temporaries as one array expression.
    """
    first = np.asarray(rgb[0])
    if first.ndim == 3 and first.shape[-1] == 1:
        rgb = [np.asarray(f)[..., 0] for f in rgb]
        first = first[..., 0]
    if first.ndim == 2:
        return frames_to_float(np.asarray(rgb), path), None
    if first.ndim != 3 or first.shape[-1] not in (3, 4):
        raise FileFormatError(f"{path}: frames have shape {first.shape}; expected grey or RGB")
    integer = np.issubdtype(first.dtype, np.integer)
    top = float(np.iinfo(first.dtype).max) if integer else 1.0
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32) / np.float32(top)
    grey = np.empty((len(rgb),) + first.shape[:2], dtype=np.float32)
    colour = np.empty(grey.shape, dtype=bool)
    for i, f in enumerate(rgb):
        f = np.asarray(f)
        if f.shape != first.shape:
            raise FileFormatError(f"{path}: frame {i} has shape {f.shape}, frame 0 {first.shape}")
        r, g, b = f[..., 0], f[..., 1], f[..., 2]
        if f.dtype == np.uint8:
            # BT.601 in 8-bit fixed point (77 + 150 + 29 = 256): several times faster than float
            y = (r.astype(np.uint16) * 77 + g.astype(np.uint16) * 150 + b.astype(np.uint16) * 29 + 128) >> 8
            grey[i] = y * np.float32(1.0 / 255.0)
        else:
            grey[i] = f[..., :3].astype(np.float32) @ luma
        # channel-wise maximum/minimum: a reduction over a length-3 last axis is ~80x slower
        spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
        colour[i] = spread > COLOUR_CHROMA * top
    return grey, (colour if colour.any() else None)


def _image(path: Path) -> np.ndarray:
    """One image's pixels, grey ``[H, W]`` or RGB ``[H, W, 3]`` (alpha dropped)."""
    a = load_image(path)
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3):
        raise FileFormatError(f"{path}: image has shape {a.shape}; expected grey or RGB")
    return a


def _read_folder(p: Path) -> np.ndarray:
    files = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda f: natural_key(f.name))
    if not files:
        raise FileFormatError(f"{p}: folder has no images ({' '.join(IMAGE_SUFFIXES)})")
    images = [_image(f) for f in files[:MAX_FRAMES]]
    if len({im.shape[:2] for im in images}) != 1:
        raise FileFormatError(f"{p}: images differ in size")
    if len({im.ndim for im in images}) != 1:
        images = [im if im.ndim == 3 else np.repeat(im[..., None], 3, -1) for im in images]
    return np.stack(images)


def _read_dicom(p: Path) -> tuple[np.ndarray, Any]:
    from pydicom.pixels import apply_color_lut

    try:
        ds = open_dicom(p)
    except FileFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated files raise several types
        raise FileFormatError(f"{p}: cannot read DICOM ({reason(exc)})") from None
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        arr = ds.pixel_array  # YBR is converted to RGB here
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on truncated data
        raise FileFormatError(f"{p}: cannot decode DICOM pixel data ({reason(exc)})") from None
    n = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if n == 1:
        arr = arr[None]
    if pi == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    elif spp == 1 and np.issubdtype(arr.dtype, np.unsignedinteger):
        # grey with fewer bits stored than the type holds: scale by the stored range, not the type's
        bits = min(int(ds.get("BitsStored", 8) or 8), np.iinfo(arr.dtype).bits)
        arr = np.clip(arr.astype(np.float32) / float(2 ** bits - 1), 0.0, 1.0)
        if pi == "MONOCHROME1":
            arr = 1.0 - arr
    return arr[:MAX_FRAMES], ds


def _dicom_geometry(ds: Any, shape: tuple[int, int], path: Path, notes: list[str]
                    ) -> tuple[tuple[float, float] | None, str, tuple[int, int, int, int] | None]:
    spacing, source, region = dicom_spacing_mm(ds)
    box = None
    if region and all(k in region for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                             "RegionLocationMaxX1", "RegionLocationMaxY1")):
        box = (region["RegionLocationMinX0"], region["RegionLocationMinY0"],
               region["RegionLocationMaxX1"], region["RegionLocationMaxY1"])
        H, W = shape
        if box[2] >= W + 1 or box[3] >= H + 1 or box[0] < 0 or box[1] < 0:
            notes.append(f"{path.name}: the DICOM ultrasound region {box} lies outside the {W}x{H} image "
                         "(resized after the region was written); its box and pixel size are ignored")
            box, spacing, source = None, None, "none"
        else:
            box = (box[0], box[1], min(box[2], W - 1), min(box[3], H - 1))
    if source == "PixelSpacing" and spacing is not None:
        # Screen captures often carry a nominal 1 mm PixelSpacing that is not the scan's scale.
        notes.append(f"{path.name}: pixel size from PixelSpacing ({spacing[0]:g} mm), not from an ultrasound region")
    return spacing, source, box


def read_echo(path: str | os.PathLike[str]) -> EchoFrames:
    """Read an echo recording with its colour flags, pixel size and DICOM region where known.

    Parameters
    ----------
    path : str or Path
        An image (``.png .jpg ...``), a folder of images, a video (``.mp4 .avi ...``), a DICOM file
        (single or multi-frame; any extension or none) or frames in ``.npz``/``.npy``.

    Returns
    -------
    EchoFrames

    Raises
    ------
    FileFormatError
        Missing path, a type that is none of these, or a file that cannot be decoded.
    """
    p = Path(path)
    kind = source_kind(p)
    notes: list[str] = []
    spacing, spacing_source, region, fps = None, "none", None, None
    if kind == "image":
        raw = _image(p)[None]
    elif kind == "image folder":
        raw = _read_folder(p)
    elif kind == "video":
        raw, rate = video_frames(p, MAX_FRAMES)
        fps = rate or None
    elif kind == "dicom":
        raw, ds = _read_dicom(p)
        spacing, spacing_source, region = _dicom_geometry(ds, raw.shape[1:3], p, notes)
        ft = ds.get("FrameTime")
        if ft is not None and float(ft) > 0:
            fps = 1000.0 / float(ft)
    else:
        arrays = read_npz(p, "echo frames [N, H, W] or [N, H, W, 3]")
        key = "frames" if "frames" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
        if key is None:
            raise FileFormatError(f"{p}: expected one array of frames [N, H, W] (or one named 'frames'), "
                                  f"found {', '.join(sorted(arrays)) or 'none'}")
        raw = np.asarray(arrays[key])
        if raw.ndim == 2 or (raw.ndim == 3 and raw.shape[-1] in (3, 4) and raw.shape[0] > 4):
            raw = raw[None]
        if not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
            raise FileFormatError(f"{p}: frames must be numbers, got dtype {raw.dtype}")
        if raw.ndim not in (3, 4):
            raise FileFormatError(f"{p}: frames have shape {list(raw.shape)}; expected [N, H, W] or [N, H, W, 3]")
        if np.issubdtype(raw.dtype, np.floating):
            if not np.isfinite(raw).all():
                raise InputError(f"{p}: frames contain NaN or infinite values")
            raw = raw.astype(np.float32)
            hi = float(raw.max()) if raw.size else 1.0
            if hi > 1.0:  # 8-bit or arbitrary range stored as floats
                raw = raw / (255.0 if hi <= 255.0 else hi)
        raw = raw[:MAX_FRAMES]
    grey, colour = _split_colour(raw, p)
    if grey.shape[1] < 32 or grey.shape[2] < 32:
        raise FileFormatError(f"{p}: frames of {grey.shape[2]}x{grey.shape[1]} pixels are too small for an echo view")
    if grey.shape[0] >= MAX_FRAMES:
        notes.append(f"{p.name}: only the first {MAX_FRAMES} frames are read")
    np.clip(grey, 0.0, 1.0, out=grey)
    return EchoFrames(grey=grey, colour=colour, spacing_mm=spacing, spacing_source=spacing_source,
                      region=region, path=p, kind=kind, fps=fps, notes=notes)
