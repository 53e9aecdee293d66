"""The `tether` command (and `python -m tether`): check the extras a command needs, then run it.

The console script is installed with the core, while the CLI itself (typer, rich, uvicorn) comes
with the `server` extra. This module imports nothing outside the core, so with an extra missing
every command answers with one line that names the `pip install` to run, and exit code 2, never a
traceback. `tether --version` works without any extra.

A command that needs more than the `server` extra lists it in `COMMAND_EXTRAS`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Final

from . import __version__
from ._extras import require
from .errors import MissingExtraError

__all__ = ["COMMAND_EXTRAS", "main", "needed_extras"]

COMMAND_EXTRAS: Final[dict[str, tuple[str, ...]]] = {
    "serve": ("server",),
    "demo": ("server", "local"),
    "worker": ("server", "postgres", "redis"),
    "chat": ("server",),  # and `local` without a target: the demo agent (see `needed_extras`)
}
"""The extras each command needs; any other command (or `--help`) needs `server`."""

_CHAT_VALUE_OPTIONS: Final = frozenset({"--app", "--thread", "--db"})


def needed_extras(args: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """What the command line `tether *args` is, as the user typed it, and the extras it needs."""
    command = args[0] if args else ""
    extras = COMMAND_EXTRAS.get(command, ("server",))
    if command not in COMMAND_EXTRAS:
        return "the tether command", extras
    if command == "chat" and "--help" not in args and _chat_target(args[1:]) is None:
        extras = (*extras, "local")
    return f"tether {command}", extras


def _chat_target(args: Sequence[str]) -> str | None:
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _CHAT_VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main() -> None:
    """The `tether` console script."""
    args = sys.argv[1:]
    if args[:1] == ["--version"]:
        print(f"tether {__version__}")
        return
    feature, extras = needed_extras(args)
    try:
        require(feature, *extras)
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from .cli import main as run_cli

    run_cli()


if __name__ == "__main__":
    main()
