"""Atomic writes: never leave a half-written output behind.

Every writer in sono3d writes to a temporary file in the destination folder and renames it into
place only when the write succeeded, so an interrupted or failed run leaves either the old file or
nothing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "full_suffix"]


def full_suffix(path: str | os.PathLike[str]) -> str:
    """Lower-case multi-part extension: ``'.nii.gz'``, ``'.seq.nrrd'``, ``'.igs.mha'``, ``'.vtp'``."""
    name = Path(path).name.lower()
    for multi in (".nii.gz", ".seq.nrrd", ".seq.mha", ".igs.mha", ".igs.nrrd", ".sono3d.npz"):
        if name.endswith(multi):
            return multi
    return Path(name).suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extension); rename it to ``path`` on success.

    The temporary name keeps the full extension so that libraries that pick a format from the
    name (nibabel, VTK, imageio) write the right one. On any exception the temporary file is removed
    and ``path`` is left untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = full_suffix(dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            # mkstemp creates 0600 files; give the result the permissions a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
