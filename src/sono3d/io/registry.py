"""One table of file formats, keyed by full extension (:func:`~sono3d.io.atomic.full_suffix`).

Each entry names its reader and writer as ``"module:function"`` so that looking a format up
imports nothing heavy; the function is imported on first use. Some extensions hold more than one
kind of data (a ``.mha`` is a volume or a PLUS sequence): :func:`sniff_kind` decides from the
header when the caller does not say.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sono3d.errors import FileFormatError, reason
from sono3d.io.atomic import full_suffix

__all__ = ["Format", "FORMATS", "lookup", "known_suffixes", "check_file", "sniff_kind", "reason", "file_signature", "IMAGE_SUFFIXES",
           "VIDEO_SUFFIXES"]

KINDS = ("sweep", "volume", "mesh", "image")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".gif")


@dataclass(frozen=True)
class Format:
    """One file format: its extension, the kind of data it holds, reader and writer."""

    suffix: str
    kind: str
    description: str
    reader_ref: str | None = None
    writer_ref: str | None = None

    @property
    def reader(self) -> Callable[..., Any]:
        return _resolve(self.reader_ref, self, "read")

    @property
    def writer(self) -> Callable[..., Any]:
        return _resolve(self.writer_ref, self, "write")


def _resolve(ref: str | None, fmt: Format, what: str) -> Callable[..., Any]:
    if ref is None:
        raise FileFormatError(f"sono3d cannot {what} {fmt.kind} files of type '{fmt.suffix}'")
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


_SEQ = "sono3d.io.sequences"
_VOL = "sono3d.io.volumes"
_MESH = "sono3d.io.meshes"
_DCM = "sono3d.io.dicom"
_VID = "sono3d.io.video"

FORMATS: list[Format] = [
    Format(".seq.nrrd", "sweep", "sono3d / 3D Slicer sequence (NRRD)", f"{_SEQ}:read_sequence", f"{_SEQ}:write_seq_nrrd"),
    Format(".igs.nrrd", "sweep", "PLUS / IGSIO sequence (NRRD)", f"{_SEQ}:read_sequence", f"{_SEQ}:write_seq_nrrd"),
    Format(".igs.mha", "sweep", "PLUS sequence metafile", f"{_SEQ}:read_sequence", f"{_SEQ}:write_seq_mha"),
    Format(".seq.mha", "sweep", "PLUS sequence metafile", f"{_SEQ}:read_sequence", f"{_SEQ}:write_seq_mha"),
    Format(".mha", "sweep", "PLUS sequence metafile", f"{_SEQ}:read_sequence", f"{_SEQ}:write_seq_mha"),
    Format(".nrrd", "sweep", "PLUS / IGSIO sequence (NRRD)", f"{_SEQ}:read_sequence", f"{_SEQ}:write_seq_nrrd"),
    Format(".dcm", "sweep", "DICOM (multi-frame ultrasound)", f"{_DCM}:read_dicom_sweep"),
    Format(".dicom", "sweep", "DICOM (multi-frame ultrasound)", f"{_DCM}:read_dicom_sweep"),
    *[Format(s, "sweep", "video", f"{_VID}:read_video") for s in VIDEO_SUFFIXES],
    *[Format(s, "image", "image", f"{_VID}:read_image") for s in IMAGE_SUFFIXES],
    Format(".nii.gz", "volume", "NIfTI (compressed)", f"{_VOL}:read_nifti", f"{_VOL}:write_nifti"),
    Format(".nii", "volume", "NIfTI", f"{_VOL}:read_nifti", f"{_VOL}:write_nifti"),
    Format(".mha", "volume", "MetaImage", f"{_VOL}:read_metaimage_volume", f"{_VOL}:write_metaimage_volume"),
    Format(".mhd", "volume", "MetaImage", f"{_VOL}:read_metaimage_volume", f"{_VOL}:write_metaimage_volume"),
    Format(".nrrd", "volume", "NRRD", f"{_VOL}:read_nrrd_volume", f"{_VOL}:write_nrrd_volume"),
    Format(".nhdr", "volume", "NRRD (detached header)", f"{_VOL}:read_nrrd_volume"),
    *[Format(s, "mesh", f"mesh ({s[1:].upper()})", f"{_MESH}:read_mesh_file", f"{_MESH}:write_mesh_file")
      for s in (".vtp", ".vtk", ".stl", ".ply", ".obj")],
]


def known_suffixes(kind: str | None = None) -> list[str]:
    """Sorted extensions sono3d reads (of one kind, or all)."""
    return sorted({f.suffix for f in FORMATS if kind is None or f.kind == kind})


def lookup(path: str | os.PathLike[str], kind: str | None = None, writing: bool = False) -> Format:
    """The format of ``path`` by its extension (``kind`` picks among formats sharing one).

    Raises :class:`FileFormatError` ``"<path>: unknown file type '.xyz' (known: ...)"`` when no
    format of that kind has the extension, and a message naming the right kind when another kind
    has it (a volume passed where a sweep is expected).
    """
    suffix = full_suffix(path)
    candidates = [f for f in FORMATS if f.suffix == suffix]
    if kind is not None:
        matching = [f for f in candidates if f.kind == kind or (kind == "sweep" and f.kind == "image")]
        if not matching:
            if candidates:
                raise FileFormatError(
                    f"{path}: a '{suffix}' file holds a {candidates[0].kind}, not a {kind}"
                )
            what = kind if kind in KINDS else "known"
            raise FileFormatError(
                f"{path}: unknown {what} file type '{suffix or '(none)'}' (known: {', '.join(known_suffixes(kind))})"
            )
        candidates = matching
    if not candidates:
        raise FileFormatError(
            f"{path}: unknown file type '{suffix or '(none)'}' (known: {', '.join(known_suffixes())})"
        )
    if writing:
        writable = [f for f in candidates if f.writer_ref]
        if not writable:
            raise FileFormatError(f"{path}: sono3d cannot write '{suffix}' files "
                                  f"(it writes: {', '.join(sorted({f.suffix for f in FORMATS if f.writer_ref and (kind is None or f.kind == kind)}))})")
        return writable[0]
    return candidates[0]


def check_file(path: str | os.PathLike[str], allow_dir: bool = False) -> Path:
    """``Path(path)`` after checking it exists and is readable (one-line errors otherwise)."""
    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"{p}: no such file")
    if p.is_dir() and not allow_dir:
        raise FileFormatError(f"{p}: is a folder, not a file")
    if not os.access(p, os.R_OK):
        raise FileFormatError(f"{p}: permission denied")
    return p


def sniff_kind(path: str | os.PathLike[str]) -> str:
    """What a file holds: ``'sweep'``, ``'volume'``, ``'mesh'`` or ``'image'``.

    Folders are image-folder sweeps. For ``.mha``/``.nrrd``: per-frame ``Seq_Frame`` fields or an
    ultrasound image orientation field mean a PLUS sequence (sweep); so does a ``list``/``time``
    axis in a NRRD. Anything else is a volume (PLUS labels its reconstructed volumes'
    MetaImage axes ``domain domain list`` too, so that is not taken as a sign).
    """
    p = Path(path)
    if p.is_dir():
        return "sweep"
    suffix = full_suffix(p)
    kinds = {f.kind for f in FORMATS if f.suffix == suffix}
    if not kinds:
        lookup(p)  # raises the unknown-type error
    if len(kinds) == 1:
        return kinds.pop()
    with open(p, "rb") as fh:
        head = fh.read(64 * 1024)
    text = head.decode("latin-1").lower()
    if "seq_frame" in text or "ultrasoundimageorientation" in text or "ultrasound image orientation" in text:
        return "sweep"
    if suffix.endswith(("nrrd", "nhdr")):
        for line in text.splitlines():
            if line.startswith("kinds") and ("list" in line or "time" in line):
                return "sweep"
            if not line.strip():
                break
    return "volume"


# Leading bytes of formats a user may hand sono3d by mistake, for "it looks like ..." in errors.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x89HDF", "an HDF5 file"),
    (b"NRRD", "a NRRD file"),
    (b"%PDF", "a PDF document"),
    (b"ply", "a PLY file"),
    (b"# vtk DataFile", "a legacy VTK file"),
    (b"<?xml", "an XML file"),
    (b"<VTKFile", "a VTK XML file"),
    (b"ObjectType", "a MetaImage header"),
    (b"NDims", "a MetaImage header"),
)


def file_signature(path: str | os.PathLike[str]) -> str | None:
    """What a file's first bytes say it is (``"a PNG image"``, ``"a Python pickle"``, ``"empty"``), or ``None``.

    Only for error messages: a reader that refuses a file says what it found as well as what it
    expected. Nothing is parsed, so a hostile file cannot do harm here.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return None
    if not head:
        return "empty"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "a Python pickle"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "a DICOM file"
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            if name == "an XML file" and b"VTKFile" in head:
                return "a VTK XML file"
            return name
    return None


#: Deflate (gzip, zlib) never packs more than about 1032 bytes into one: a bound on what a
#: compressed file can hold, known before anything is decompressed.
DEFLATE_MAX_RATIO = 1032


def check_claimed_size(path: str | os.PathLike[str], claimed_bytes: int, stored_bytes: int,
                       compressed: bool = False, what: str = "pixel data") -> None:
    """Refuse a header that claims more data than its file can hold, before anything is allocated.

    ``claimed_bytes`` is what the header's sizes and type add up to (a lower bound is fine),
    ``stored_bytes`` the bytes the file holds for the data; deflate-compressed data can hold at
    most :data:`DEFLATE_MAX_RATIO` times its size.
    """
    limit = stored_bytes * DEFLATE_MAX_RATIO + 1024 if compressed else stored_bytes
    if claimed_bytes > limit:
        held = f"{stored_bytes} bytes{' compressed' if compressed else ''}"
        raise FileFormatError(f"{path}: the header claims {claimed_bytes:,} bytes of {what} but the file holds "
                              f"{held}; a corrupt header or a truncated file (not read)")
