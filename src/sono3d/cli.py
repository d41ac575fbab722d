"""The ``sono3d`` command line: a thin typer layer over the Python API.

Each verb group lives in :mod:`sono3d.commands`; this module only assembles them and turns a
:class:`~sono3d.errors.SonoError` (or an operating-system error: a missing or unreadable path, a
read-only folder, a full disk) into ``error: <message>`` on stderr and exit code 2, never a
traceback.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from sono3d import __version__
from sono3d.commands import register_all
from sono3d.errors import SonoError

EXIT_BAD_INPUT = 2


class _ErrorReportingGroup(TyperGroup):
    """Root group: user errors anywhere below become one line and exit code 2."""

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        ctx.meta["sono3d.argv"] = list(args)  # kept to name the option an engine check refers to
        return super().parse_args(ctx, args)

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except SonoError as exc:
            _fail(name_option(str(exc), self, ctx, ctx.meta.get("sono3d.argv", [])))
        except FileExistsError as exc:  # a folder to create where a file is
            _fail(f"{exc.filename}: exists and is not a folder" if exc.filename else str(exc))
        except OSError as exc:  # missing, unreadable, read-only, disk full: the system's words, one line
            name = getattr(exc, "filename", None)
            reason = exc.strerror or type(exc).__name__
            _fail(f"{name}: {reason}" if name else reason)


def _given_options(group: Any, ctx: Any, argv: list[str]) -> dict[str, str]:
    """The options given on the command line to the verb ``argv`` invokes: flag -> value (the last
    one given, as click takes it)."""
    cmd, rest = group, list(argv)
    while hasattr(cmd, "get_command") and rest:  # a group (typer may vendor its own click)
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            break
        cmd, rest = sub, rest[1:]
    flags = {opt: p for p in cmd.params if getattr(p, "param_type_name", "") == "option"
             for opt in (*p.opts, *p.secondary_opts)}
    given: dict[str, str] = {}
    for k, token in enumerate(rest):
        flag, eq, value = token.partition("=")
        param = flags.get(flag)
        if param is None:
            continue
        if not eq and not param.is_flag:
            value = rest[k + 1] if k + 1 < len(rest) else ""
        given[flag] = value
    return given


def name_option(message: str, group: Any, ctx: Any, argv: list[str]) -> str:
    """Put the option in front of an engine's refusal that speaks of it by its setting's name.

    Library checks name the setting (``epochs must be at least 1``, ``frame size must be at
    least 8 pixels``); on the command line the user typed an option, so when the message does not
    name an option or a file already and exactly one given option's words (``--gaussians-per-slice``
    -> "gaussians per slice") appear in it (failing that: exactly one given value, quoted), the
    message starts with that option and its value:
    ``--epochs 0: epochs must be at least 1, got 0``. One place for every verb.
    """
    if "--" in message:
        return message
    tokens = [t for t in argv if not t.startswith("-")]
    if any((os.sep in t or re.search(r"\.[A-Za-z]\w*$", t) or Path(t).exists()) and t in message for t in tokens):
        return message  # it is about a file
    text = " " + re.sub(r"[^a-z0-9]+", " ", message.lower().replace("_", " ")) + " "
    given = _given_options(group, ctx, argv)
    hits = set()
    for flag, value in given.items():
        words = flag.lstrip("-").replace("-", " ").lower()
        if words.startswith("no "):
            words = words[3:]
        if f" {words} " in text:
            hits.add(f"{flag} {value}".strip())
    if not hits:  # "unknown interpolation 'foo'" for --method foo: the value quoted
        hits = {f"{flag} {value}" for flag, value in given.items() if value and f"'{value}'" in message}
    return f"{hits.pop()}: {message}" if len(hits) == 1 else message


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
