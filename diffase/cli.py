"""The ``diffase`` command. Each subcommand lives in its own module of :mod:`diffase.commands`.

A command module defines ``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code. Modules are discovered, so adding a
command never edits this file.

Errors a user caused (:class:`~diffase.errors.DiffaseError`, ``ValueError`` from input checks, ``OSError``
such as a missing file) print one line ``diffase <command>: error: <what and how to fix>`` to stderr and exit
with the error's ``exit_code`` (2 for bad input, 1 for a run that produced nothing); ``--debug`` shows the
traceback instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from diffase import __version__
from diffase.errors import DiffaseError

#: Exceptions reported as one line: what a user can cause and fix. Everything else is a bug (traceback).
USER_ERRORS = (DiffaseError, ValueError, OSError)


def build_parser() -> argparse.ArgumentParser:
    import diffase.commands as commands

    parser = argparse.ArgumentParser(prog="diffase", description="Diffusion models for crystal structures.")
    parser.add_argument("--version", action="version", version=f"diffase {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"diffase.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"diffase {args.command}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
