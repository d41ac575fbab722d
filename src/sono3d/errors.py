"""The one exception type the command line turns into a one-line error.

Library code raises :class:`SonoError` (or a subclass) for anything a user can cause: a corrupt
file, a wrong shape, NaN values, mismatched poses. The CLI prints ``error: <message>`` and exits
with code 2; a Python caller gets an ordinary exception with the same message.
"""

from __future__ import annotations


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
