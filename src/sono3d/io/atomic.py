"""Atomic writes: never leave a half-written output behind.

Every writer in sono3d writes to a temporary file in the destination folder and renames it into
place only when the write succeeded, so an interrupted or failed run leaves either the old file or
nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sono3d.io.testing import kill_point

__all__ = ["atomic_path", "full_suffix", "stale_temporaries"]

# The names atomic_path gives its temporaries: ".<dest name>.<8 random characters>.tmp<suffix>".
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9.]+)?$")


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
        kill_point("atomic-rename")  # the worst moment to die: the file is complete, not yet in place
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def stale_temporaries(output: str | os.PathLike[str]) -> list[Path]:
    """Temporary files of :func:`atomic_path` under a folder (recursively) or beside a file.

    Only the holder of ``output``'s writer lock (:mod:`sono3d.io.lock`) may delete them: then no
    other process can be writing them, so they are left by an interrupted writer.
    """
    out = Path(output)
    if out.is_dir():
        found = []
        for root, _dirs, files in os.walk(out):
            found += [Path(root) / f for f in files if _TEMPORARY.match(f)]
        return found
    parent = out.parent
    if not parent.is_dir():
        return []
    return [p for p in parent.glob(f".{glob_escape(out.name)}.*") if _TEMPORARY.match(p.name) and p.is_file()]


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)
