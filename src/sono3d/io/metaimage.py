"""A small MetaImage (``.mha`` / ``.mhd``) reader and writer.

Written by hand rather than through SimpleITK because PLUS sequence files keep hundreds of
per-frame fields (``Seq_Frame0000_ProbeToTrackerTransform = ...``) in the header, which we need
verbatim and in order, and because round trips must be bit-exact (numbers are written with
``repr``). Supported: ``ElementDataFile = LOCAL`` or one external raw file, zlib compression
(``CompressedData = True``), any byte order, ``ElementNumberOfChannels``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sono3d.errors import FileFormatError
from sono3d.io.atomic import atomic_path

__all__ = ["MetaImage", "read_metaimage", "read_metaimage_header", "write_metaimage", "format_numbers"]

_MET_TYPES = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2",
    "MET_INT": "i4", "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
_NUMPY_TO_MET = {"i1": "MET_CHAR", "u1": "MET_UCHAR", "i2": "MET_SHORT", "u2": "MET_USHORT",
                 "i4": "MET_INT", "u4": "MET_UINT", "i8": "MET_LONG_LONG", "u8": "MET_ULONG_LONG",
                 "f4": "MET_FLOAT", "f8": "MET_DOUBLE"}
_MAX_HEADER_BYTES = 64 * 1024 * 1024


@dataclass
class MetaImage:
    """A parsed MetaImage: ``fields`` in file order and the pixel ``array``.

    ``array`` has shape ``(DimSize[n-1], ..., DimSize[0])`` (C order, x fastest), plus a trailing
    channel axis when ``ElementNumberOfChannels > 1``.
    """

    fields: dict[str, str]
    array: np.ndarray | None = None
    path: Path | None = None
    header_bytes: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def numbers(self, key: str, default: list[float] | None = None) -> list[float]:
        """The whitespace-separated numbers of a field (``default`` when absent)."""
        if key not in self.fields:
            if default is None:
                raise FileFormatError(f"{self.path}: MetaImage header has no '{key}' field")
            return default
        try:
            return [float(v) for v in self.fields[key].split()]
        except ValueError:
            raise FileFormatError(f"{self.path}: MetaImage field '{key}' is not numeric: "
                                  f"{self.fields[key][:60]!r}") from None


def format_numbers(values: np.ndarray | list[float]) -> str:
    """Numbers as text that parses back to the same float64 (``repr`` of each)."""
    out = []
    for v in np.asarray(values, dtype=np.float64).ravel():
        out.append(repr(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v)))
    return " ".join(out)


def read_metaimage_header(path: str | Path) -> MetaImage:
    """Parse the header only (fields in order) and note where the pixel data starts."""
    path = Path(path)
    with open(path, "rb") as f:
        blob = f.read(1 << 20)
        # Sequence headers can be long (hundreds of frames x several fields): keep reading until
        # the ElementDataFile line, which always ends a MetaImage header.
        while b"ElementDataFile" not in blob and len(blob) < _MAX_HEADER_BYTES:
            more = f.read(1 << 20)
            if not more:
                break
            blob += more
    key_at = blob.find(b"ElementDataFile")
    if key_at < 0:
        raise FileFormatError(f"{path}: not a MetaImage file (no ElementDataFile field)")
    line_end = blob.find(b"\n", key_at)
    if line_end < 0:
        raise FileFormatError(f"{path}: MetaImage header is truncated")
    header = blob[: line_end + 1].decode("latin-1")
    fields: dict[str, str] = {}
    for line in header.splitlines():
        line = line.strip()
        if not line:
            continue
        if "=" not in line:
            raise FileFormatError(f"{path}: not a MetaImage file (header line without '=': {line[:60]!r})")
        key, value = line.split("=", 1)
        fields[key.strip()] = value.strip()
    if "NDims" not in fields or "DimSize" not in fields:
        raise FileFormatError(f"{path}: not a MetaImage file (NDims or DimSize missing)")
    return MetaImage(fields=fields, path=path, header_bytes=line_end + 1)


def read_metaimage(path: str | Path) -> MetaImage:
    """Read a MetaImage header and its pixels (see :class:`MetaImage` for the array layout)."""
    img = read_metaimage_header(path)
    path = img.path
    f = img.fields
    try:
        ndims = int(f["NDims"])
        dims = [int(v) for v in f["DimSize"].split()]
        channels = int(f.get("ElementNumberOfChannels", "1"))
    except ValueError:
        raise FileFormatError(f"{path}: MetaImage NDims/DimSize are not integers") from None
    if len(dims) != ndims or any(d < 0 for d in dims) or channels < 1:
        raise FileFormatError(f"{path}: MetaImage DimSize {dims} does not match NDims = {ndims}")
    etype = f.get("ElementType", "")
    if etype not in _MET_TYPES:
        raise FileFormatError(f"{path}: unsupported MetaImage ElementType '{etype}'")
    msb = (f.get("BinaryDataByteOrderMSB", f.get("ElementByteOrderMSB", "False"))).lower() == "true"
    dtype = np.dtype(_MET_TYPES[etype]).newbyteorder(">" if msb else "<")
    n_values = int(np.prod(dims, dtype=np.int64)) * channels
    n_bytes = n_values * dtype.itemsize

    data_file = f["ElementDataFile"]
    if data_file.upper() == "LOCAL":
        with open(path, "rb") as fh:
            fh.seek(img.header_bytes)
            raw = fh.read()
    elif data_file.upper().startswith("LIST") or "%" in data_file:
        raise FileFormatError(f"{path}: MetaImage with a list of data files is not supported")
    else:
        data_path = path.parent / data_file
        if not data_path.is_file():
            raise FileFormatError(f"{path}: its data file '{data_file}' is missing")
        raw = data_path.read_bytes()

    if f.get("CompressedData", "False").lower() == "true":
        try:
            raw = zlib.decompressobj().decompress(raw, n_bytes)
        except zlib.error as exc:
            raise FileFormatError(f"{path}: compressed pixel data is corrupt ({exc})") from None
    if len(raw) < n_bytes:
        raise FileFormatError(f"{path}: pixel data is truncated ({len(raw)} of {n_bytes} bytes)")
    arr = np.frombuffer(raw[:n_bytes], dtype=dtype).astype(dtype.newbyteorder("="), copy=False)
    shape = tuple(reversed(dims)) + ((channels,) if channels > 1 else ())
    img.array = arr.reshape(shape)
    return img


def write_metaimage(path: str | Path, array: np.ndarray, fields: dict[str, str], compress: bool = True,
                    channels_last: bool = False) -> Path:
    """Write ``array`` (C order, x fastest: shape ``(..., z, y, x)``) with header ``fields``.

    ``fields`` holds everything except the layout fields written here (``NDims``, ``DimSize``,
    ``ElementType``, byte order, compression, ``ElementDataFile``); they appear in the given order
    between ``ObjectType`` and ``DimSize``. Written atomically, pixel data ``LOCAL``.
    """
    a = np.ascontiguousarray(array)
    code = a.dtype.str[1:]
    if code not in _NUMPY_TO_MET:
        raise FileFormatError(f"{path}: cannot store {a.dtype} pixels in MetaImage")
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    spatial = a.shape[:-1] if channels_last else a.shape
    payload = a.tobytes()
    if compress:
        payload = zlib.compress(payload, 6)
    lines = ["ObjectType = Image", f"NDims = {len(spatial)}"]
    lines += ["BinaryData = True", "BinaryDataByteOrderMSB = False",
              f"CompressedData = {'True' if compress else 'False'}"]
    if compress:
        lines.append(f"CompressedDataSize = {len(payload)}")
    reserved = {"ObjectType", "NDims", "BinaryData", "BinaryDataByteOrderMSB", "CompressedData",
                "CompressedDataSize", "DimSize", "ElementType", "ElementDataFile",
                "ElementNumberOfChannels"}
    for key, value in fields.items():
        if key in reserved:
            continue
        if "\n" in value or "\r" in value:
            raise FileFormatError(f"{path}: MetaImage field '{key}' may not contain a line break")
        lines.append(f"{key} = {value}")
    lines.append("DimSize = " + " ".join(str(int(d)) for d in reversed(spatial)))
    if channels_last:
        lines.append(f"ElementNumberOfChannels = {a.shape[-1]}")
    lines.append(f"ElementType = {_NUMPY_TO_MET[code]}")
    lines.append("ElementDataFile = LOCAL")
    header = ("\n".join(lines) + "\n").encode("latin-1")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(payload)
    return Path(path)
