"""The ``sono3d`` command line: a thin typer layer over the Python API.

Each verb group lives in :mod:`sono3d.commands`; this module only assembles them and turns a
:class:`~sono3d.errors.SonoError` (or an operating-system error: a missing or unreadable path, a
read-only folder, a full disk) into ``error: <message>`` on stderr and exit code 2, never a
traceback.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from sono3d import __version__
from sono3d.commands import register_all
from sono3d.errors import SonoError

EXIT_BAD_INPUT = 2


class _ErrorReportingGroup(TyperGroup):
    """Root group: user errors anywhere below become one line and exit code 2."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except SonoError as exc:
            _fail(str(exc))
        except FileExistsError as exc:  # a folder to create where a file is
            _fail(f"{exc.filename}: exists and is not a folder" if exc.filename else str(exc))
        except OSError as exc:  # missing, unreadable, read-only, disk full: the system's words, one line
            name = getattr(exc, "filename", None)
            reason = exc.strerror or type(exc).__name__
            _fail(f"{name}: {reason}" if name else reason)


def _fail(message: str) -> None:
    message = " ".join(str(message).split()) or "unknown error"
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


app = typer.Typer(
    cls=_ErrorReportingGroup,
    name="sono3d",
    help="Turn ordinary 2D ultrasound into 3D anatomy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sono3d {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Turn ordinary 2D ultrasound into 3D anatomy."""


register_all(app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="sono3d")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
