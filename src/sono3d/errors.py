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
