"""The ``rig`` command. Each subcommand is a module in :mod:`rig.commands`.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; it is found by name, so adding a command means adding a
module and nothing else.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

import rig.commands
from protocols.spec import ProtocolError
from rig.session import SessionFileError

#: Exit status for bad input (files, options, unit names): nothing ran.
EXIT_USAGE = 2


def _command_modules() -> dict[str, object]:
    modules = {}
    for info in pkgutil.iter_modules(rig.commands.__path__):
        if not info.name.startswith("_"):
            modules[info.name.replace("_", "-")] = importlib.import_module(f"rig.commands.{info.name}")
    return dict(sorted(modules.items()))


def _parser(commands: dict[str, object]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rig", description="Closed-loop image evolution controller.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in commands.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.__doc__))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    commands = _command_modules()
    args = _parser(commands).parse_args(argv)
    try:
        return commands[args.command].run(args)
    except (ProtocolError, SessionFileError, ValueError, FileNotFoundError) as exc:
        print(f"rig {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
