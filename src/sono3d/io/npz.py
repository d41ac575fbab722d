"""NumPy ``.npz`` archives: a reader that never unpickles and says what it expected, and a
writer whose bytes depend only on the arrays.

sono3d keeps several of its own files as ``.npz`` (a heart case's ``views.npz``, the
``deformation.npz`` of a correspondence) and reads arrays users give it (echo frames for intake).
:func:`read_npz` is the one way they are read: a file
that is not a zip archive of ``.npy`` members (a PNG, a pickle, a truncated download) is refused
before NumPy looks at it, and an array of Python objects is refused without being unpickled
(``allow_pickle=False``), each with one line saying what the file should have been.

:func:`write_npz` writes what :func:`numpy.savez_compressed` writes, except that each member's
zip timestamp is fixed (1980-01-01) instead of the time of writing, so the same arrays give the
same bytes: a cohort generated twice, or resumed after an interruption, is byte-identical.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sono3d.errors import FileFormatError, InputError, reason
from sono3d.io.atomic import atomic_path
from sono3d.io.registry import file_signature

__all__ = ["read_npz", "write_npz"]

_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def read_npz(path: str | os.PathLike[str], expected: str = "NumPy arrays", what: str = "array"
             ) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (or the one array of an ``.npy``, as ``arr_0``), read without
    unpickling anything.

    Parameters
    ----------
    path : path-like
    expected : str
        What the file should hold, e.g. ``".npz with 'echo' [P, 6, H, W]"``, for messages.
    what : str
        What the file is to the caller (``"views"``, ``"deformation"``), for messages.

    Raises
    ------
    InputError
        The path does not exist or is a folder.
    FileFormatError
        The file is empty, not a zip archive of ``.npy`` members (nor an ``.npy``), a truncated or
        corrupt archive, or holds an array of Python objects (a pickle, refused unloaded).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such {what} file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a {what} file (expected {expected})")
    with open(p, "rb") as fh:
        head = fh.read(6)
    if head[:4] != _ZIP_MAGIC and head != _NPY_MAGIC:
        found = file_signature(p)
        raise FileFormatError(f"{p}: not a {what} file: expected {expected}; "
                              f"{'it is ' + found if found else 'it is not a NumPy archive'}")
    try:
        if head == _NPY_MAGIC:
            return {"arr_0": np.load(p, allow_pickle=False)}
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "Object arrays" in str(exc):
            raise FileFormatError(f"{p}: not a {what} file: it holds pickled Python objects, which sono3d never "
                                  f"loads (expected {expected}; as plain numeric arrays)") from None
        raise FileFormatError(f"{p}: not a readable {what} file (expected {expected}): {reason(exc)}") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise FileFormatError(f"{p}: {what} file is truncated or corrupt ({reason(exc)})") from None


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], compress: bool = True) -> Path:
    """Write ``arrays`` as an ``.npz`` atomically, with fixed member timestamps (same arrays, same bytes).

    Arrays of Python objects are refused (they would need a pickle, which :func:`read_npz` refuses).
    """
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    dest = Path(path)
    with atomic_path(dest) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=mode, allowZip64=True) as zf:
            for name, value in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
                info.compress_type = mode
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return dest
