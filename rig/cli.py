"""The ``rig`` command. Each subcommand is a module in :mod:`rig.commands`.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; it is found by name, so adding a command means adding a
module and nothing else. A module may also define ``prepare_argv(argv) -> argv``,
given the command line (the command's name first) before argparse reads it.

Every expected failure ends in one line on stderr: exit status 2 for bad input
(the message names the field, file or option; nothing ran) and 1 for a run that
failed (e.g. a full disk: the message names the path and the OS error). Any
other exception is a bug: one line says so, and ``RIG_DEBUG=1`` shows its traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
from typing import NoReturn, Sequence

import rig.commands
from protocols.spec import ProtocolError
from rig.session import SessionFileError

#: Exit status for bad input (files, options, unit names): nothing ran.
EXIT_USAGE = 2
#: Exit status for a run that failed (an OS error while running, out of memory, a bug).
EXIT_FAILED = 1
#: Set to 1 to see the traceback of an unexpected error instead of its one-line summary.
DEBUG_VARIABLE = "RIG_DEBUG"

_USAGE_ERRORS = (ProtocolError, SessionFileError, ValueError, FileNotFoundError, NotADirectoryError,
                 IsADirectoryError)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (``rig run: error: argument --seed: ...``), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _command_modules() -> dict[str, object]:
    modules = {}
    for info in pkgutil.iter_modules(rig.commands.__path__):
        if not info.name.startswith("_"):
            modules[info.name.replace("_", "-")] = importlib.import_module(f"rig.commands.{info.name}")
    return dict(sorted(modules.items()))


def _parser(commands: dict[str, object]) -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="rig", description="Closed-loop image evolution controller.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in commands.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.__doc__))
    return parser


def one_line(text: str) -> str:
    """``text`` on one line: inner line breaks become ' | ' (some library messages span lines)."""
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe_os_error(exc: OSError) -> str:
    """``PATH: strerror (ENOSPC)`` for an OS error, naming the path(s) and the errno."""
    code = errno.errorcode.get(exc.errno or -1)
    text = exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = f"{' -> '.join(paths)}: " if paths else ""
    return f"{where}{text}" + (f" ({code})" if code else "")


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) else EXIT_USAGE


def _is_zmq_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] == "zmq"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (never raises for an expected failure)."""
    commands = _command_modules()
    argv = list(sys.argv[1:] if argv is None else argv)
    prepare = getattr(commands.get(argv[0]) if argv else None, "prepare_argv", None)
    try:
        args = _parser(commands).parse_args(prepare(argv) if prepare else argv)
    except SystemExit as exc:  # --help (0) or a one-line usage error (2), already printed
        return _exit_status(exc)
    prefix = f"rig {args.command}"
    try:
        return commands[args.command].run(args)
    except _USAGE_ERRORS as exc:
        print(f"{prefix}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. ENOSPC, EROFS, EACCES while running
        print(f"{prefix}: error: {one_line(describe_os_error(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except MemoryError:
        print(f"{prefix}: error: out of memory (the protocol's settings need more memory than this machine has)",
              file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        if _is_zmq_error(exc):
            print(f"{prefix}: error: ZeroMQ: {one_line(exc)}", file=sys.stderr)
            return EXIT_FAILED
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        print(f"{prefix}: internal error: {type(exc).__name__}: {one_line(exc)} (a bug; set {DEBUG_VARIABLE}=1 "
              f"to see the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
