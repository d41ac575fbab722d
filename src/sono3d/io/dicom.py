"""Ultrasound DICOM (single- or multi-frame) through pydicom.

* Pixel spacing: the first ``SequenceOfUltrasoundRegions`` item whose ``PhysicalUnitsXDirection``
  and ``...YDirection`` are 3 (cm), preferring a 2D tissue region (``RegionSpatialFormat`` 1);
  ``PhysicalDeltaX/Y`` are in cm per pixel, so ``dx = 10 * PhysicalDeltaX`` mm. Otherwise
  ``PixelSpacing`` (mm, row then column), otherwise the caller's ``spacing_mm``, otherwise 1 mm
  marked as assumed in ``meta['spacing_source']``.
* Colour: grey is the luma ``Y = 0.299 R + 0.587 G + 0.114 B``. RGB and PALETTE COLOR (through
  ``apply_color_lut``) go through ``convert_color_space(..., 'RGB', 'YBR_FULL')``; YBR_FULL /
  YBR_FULL_422 are decoded raw (still YBR) and keep their Y channel; MONOCHROME1 is inverted.
* Frame times: ``FrameTimeVector`` (ms between frames) or ``FrameTime`` (ms), in
  ``meta['frame_times_s']``.

Ultrasound DICOM carries no tracking, so the sweep has no poses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sono3d.errors import FileFormatError
from sono3d.io.registry import reason
from sono3d.io.sequences import _luma, frames_to_float
from sono3d.types import Sweep

__all__ = ["read_dicom_sweep", "dicom_spacing_mm", "open_dicom"]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_CM = 3


def dicom_spacing_mm(ds) -> tuple[tuple[float, float] | None, str, dict]:  # noqa: ANN001 - pydicom Dataset
    """``((dy, dx) in mm or None, source, region info)`` from a DICOM dataset's metadata."""
    regions = list(ds.get("SequenceOfUltrasoundRegions", []) or [])
    usable = [r for r in regions
              if r.get("PhysicalUnitsXDirection") == _CM and r.get("PhysicalUnitsYDirection") == _CM
              and r.get("PhysicalDeltaX") and r.get("PhysicalDeltaY")]
    usable.sort(key=lambda r: r.get("RegionSpatialFormat") != 1)
    if usable:
        r = usable[0]
        info = {k: int(r.get(k)) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                             "RegionLocationMaxX1", "RegionLocationMaxY1") if r.get(k) is not None}
        info["RegionSpatialFormat"] = int(r.get("RegionSpatialFormat", 0) or 0)
        return (abs(float(r.PhysicalDeltaY)) * 10.0, abs(float(r.PhysicalDeltaX)) * 10.0), "ultrasound region (cm)", info
    ps = ds.get("PixelSpacing")
    if ps is not None and len(ps) == 2 and float(ps[0]) > 0 and float(ps[1]) > 0:
        return (float(ps[0]), float(ps[1])), "PixelSpacing", {}
    return None, "none", {}


def _frame_times(ds, n: int) -> list[float] | None:  # noqa: ANN001
    ftv = ds.get("FrameTimeVector")
    if ftv is not None:
        v = np.atleast_1d(np.asarray(ftv, dtype=np.float64))
        if len(v) == n:
            return [float(t) for t in np.cumsum(v) / 1000.0]
    ft = ds.get("FrameTime")
    if ft is not None and float(ft) > 0:
        return [float(i * float(ft) / 1000.0) for i in range(n)]
    return None


def open_dicom(path: str | Path):  # noqa: ANN201 - pydicom Dataset
    """The pydicom dataset of a DICOM file that holds pixel data.

    Raises
    ------
    FileFormatError
        Not DICOM, or no pixel data.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError as exc:
        raise FileFormatError(f"{path}: not a DICOM file ({reason(exc)})") from None
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise FileFormatError(f"{path}: DICOM file has no pixel data")
    return ds


def read_dicom_sweep(path: str | Path, spacing_mm: tuple[float, float] | None = None) -> Sweep:
    """Read an ultrasound DICOM file as a Sweep of grey frames (no poses).

    Raises
    ------
    FileFormatError
        Not DICOM, no pixel data, or pixel data that cannot be decoded.
    """
    from pydicom.pixels import apply_color_lut, convert_color_space, pixel_array

    path = Path(path)
    ds = open_dicom(path)
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        # YBR data decoded raw keeps its Y (luma) channel, which is the grey image we want: no
        # YBR -> RGB -> grey round trip, whose clipping of saturated colour would shift grey levels.
        arr = pixel_array(ds, raw=True) if pi.startswith("YBR") else ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on truncated data
        raise FileFormatError(f"{path}: cannot decode DICOM pixel data ({reason(exc)})") from None

    n = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if n == 1:
        arr = arr[None]
    expected = 4 if spp > 1 else 3
    if arr.ndim != expected:
        raise FileFormatError(f"{path}: DICOM pixel data has shape {arr.shape}, not {n} frames")

    bits = int(ds.get("BitsStored", 8) or 8)
    if pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        grey = _grey(rgb, convert_color_space)
        bits = 8 if grey.dtype == np.uint8 else 16
    elif spp == 3 and pi.startswith("YBR"):
        grey = arr[..., 0]
    elif spp == 3:
        grey = _grey(arr, convert_color_space)
    else:
        grey = arr
        if pi == "MONOCHROME1":
            grey = (2 ** bits - 1) - grey.astype(np.int64)
            grey = grey.astype(np.uint16 if bits > 8 else np.uint8)
    if np.issubdtype(grey.dtype, np.signedinteger):
        bits = None  # signed data: frames_to_float shifts by the type's minimum
    frames = frames_to_float(grey, path, bits_stored=bits if np.issubdtype(grey.dtype, np.integer) else None)
    frames = np.clip(frames, 0.0, 1.0)

    sp, source, region = dicom_spacing_mm(ds)
    if sp is None and spacing_mm is not None:
        sp, source = (float(spacing_mm[0]), float(spacing_mm[1])), "option"
    if sp is None:
        sp, source = (1.0, 1.0), "assumed"
    meta = {"source": str(path), "format": "dicom", "photometric": pi, "spacing_source": source,
            "modality": str(ds.get("Modality", ""))}
    if region:
        meta["ultrasound_region"] = region
    times = _frame_times(ds, frames.shape[0])
    if times is not None:
        meta["frame_times_s"] = times
    return Sweep(frames=frames, image_to_world=None, spacing_mm=sp, meta=meta)


def _grey(rgb: np.ndarray, convert_color_space) -> np.ndarray:  # noqa: ANN001
    """Luma of RGB frames ``(..., 3)``; pydicom's RGB -> YBR_FULL for 8-bit data."""
    if rgb.dtype == np.uint8:
        return convert_color_space(rgb, "RGB", "YBR_FULL")[..., 0]
    return _luma(rgb)
