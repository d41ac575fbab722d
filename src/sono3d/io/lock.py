"""One writer per output: a lock that names the process holding it and outlives no process.

Every verb that writes an output folder (or file) holds :func:`writer_lock` on it while it works.
A second process on the same output is refused at once with the PID of the holder; a lock left
by a process that died (killed, out of memory, power cut) is taken over by the next writer.

The lock is ``filelock.SoftFileLock`` (``filelock`` is already installed with torch): a marker
file created exclusively that records the holder's PID, host and process start time. That record
is what lets a refusal name the PID and lets the next writer prove a holder dead (a reused PID
has another start time) and take its place. An ``flock``-based lock would be released by the
kernel on death just as well, but cannot say who holds it.

The marker lives *beside* the output, as ``.<name>.sono3d-lock`` in its parent folder, so that
taking the lock creates nothing under the output's own name: a run refused for bad input leaves
no empty output folder behind. It is removed on release.

While it holds the lock, a writer also removes the temporary files that an interrupted writer
left under the output (:func:`sono3d.io.atomic.stale_temporaries`): nobody else can be writing
them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import SoftFileLock, Timeout

from sono3d.errors import BusyError, InputError, reason
from sono3d.io.atomic import stale_temporaries

__all__ = ["LOCK_SUFFIX", "lock_path", "writer_lock"]

LOCK_SUFFIX = ".sono3d-lock"

# Locks this process holds, by marker path, with their depth: a verb that locks its folder and
# then calls a library function that locks it again must not refuse itself.
_HELD: dict[str, list] = {}


def lock_path(output: str | os.PathLike[str]) -> Path:
    """The marker file of ``output``'s lock: ``<parent>/.<name>.sono3d-lock``."""
    target = Path(os.path.abspath(output))
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


@contextlib.contextmanager
def writer_lock(output: str | os.PathLike[str], what: str = "output folder") -> Iterator[Path]:
    """Hold the one-writer lock of ``output`` (a folder or a file) for the ``with`` block.

    Parameters
    ----------
    output : path-like
        The folder (or file) the caller is about to write. Its parent folder is created if
        needed; the output itself is not.
    what : str
        What the output is, for the refusal message (``"run folder"``, ``"cohort folder"``).

    Raises
    ------
    BusyError
        Another live process holds the lock (the message names its PID).
    InputError
        The parent folder cannot be created or written (read-only, not a folder).
    """
    marker = lock_path(output)
    key = str(marker)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield Path(output)
        finally:
            _HELD[key][1] -= 1
        return
    parent = marker.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{parent}: cannot create the folder for {output} ({reason(exc)})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{parent}: folder is not writable, so {Path(output).name} cannot be written there")
    lock = SoftFileLock(str(marker), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        pid = lock.pid
        raise BusyError(f"{output}: this {what} is being written by another process (PID "
                        f"{pid if pid is not None else 'unknown'}); wait for it to finish or write elsewhere") from None
    except OSError as exc:
        raise InputError(f"{parent}: cannot lock {Path(output).name} for writing ({reason(exc)})") from None
    _HELD[key] = [lock, 1]
    try:
        for stale in stale_temporaries(output):
            with contextlib.suppress(OSError):
                stale.unlink()
        yield Path(output)
    finally:
        _HELD.pop(key, None)
        lock.release()
