"""Subcommands of the ``diffase`` CLI, one module each (see :mod:`diffase.cli`)."""
