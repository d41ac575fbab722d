"""The one exception type the command line turns into a one-line error.

Library code raises :class:`SonoError` (or a subclass) for anything a user can cause: a corrupt
file, a wrong shape, NaN values, mismatched poses. The CLI prints ``error: <message>`` and exits
with code 2; a Python caller gets an ordinary exception with the same message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class SonoError(Exception):
    """A problem with the user's input, reported as one line (the CLI exits with code 2)."""


class InputError(SonoError, ValueError):
    """Bad input: wrong shape, NaN values, out-of-range options, inconsistent metadata."""


class FileFormatError(SonoError, ValueError):
    """A file that cannot be read: unknown extension, truncated, corrupt or missing fields."""


class BusyError(SonoError):
    """An output that another running process is writing (the one-writer-per-folder lock)."""


def reason(exc: BaseException, limit: int = 240) -> str:
    """A third-party exception's message on one line, for ``<path>: <sono3d's words> (<reason>)``.

    sono3d's own words always come first; this is the library's detail that may follow them.
    Whitespace is collapsed. A message longer than ``limit`` characters is shortened at the end of
    a sentence when one ends in the second half of the limit, else at a space, and marked with
    ``...``: never inside a word. An empty message gives the exception's type name.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    cut = head.rfind(". ")
    if cut >= limit // 2:
        return head[: cut + 1] + " ..."
    cut = head.rfind(" ")
    return (head[:cut] if cut > 0 else type(exc).__name__) + " ..."


@contextmanager
def about(path: str | os.PathLike[str]) -> Iterator[None]:
    """Name ``path`` in any :class:`SonoError` raised inside: a check made on what was read from a
    file (a sweep's poses, say) without knowing the file still tells the user which one."""
    try:
        yield
    except SonoError as exc:
        text = str(exc)
        if os.fspath(path) in text or os.path.basename(os.fspath(path)) in text:
            raise
        raise type(exc)(f"{os.fspath(path)}: {text}") from None
