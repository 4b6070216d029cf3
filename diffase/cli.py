"""The ``diffase`` command. Each subcommand lives in its own module of :mod:`diffase.commands`.

A command module defines ``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code. Modules are discovered, so adding a
command never edits this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from diffase import __version__


def build_parser() -> argparse.ArgumentParser:
    import diffase.commands as commands

    parser = argparse.ArgumentParser(prog="diffase", description="Diffusion models for crystal structures.")
    parser.add_argument("--version", action="version", version=f"diffase {__version__}")
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
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
