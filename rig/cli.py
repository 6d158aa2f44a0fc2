"""The ``rig`` command: ``rig run``, ``rig units``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


from protocols.spec import ProtocolError
from rig.session import SessionFileError

#: Exit status for bad input (files, options, unit names): nothing ran.
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rig", description="Closed-loop image evolution controller.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a protocol file into a new session file")
    run.add_argument("protocol", type=Path, help="protocol file (TOML), e.g. protocols/dry-run.toml")
    run.add_argument("--out", type=Path, required=True, help="session file to create (HDF5)")
    run.add_argument("--neuron", action="append", metavar="UNIT",
                     help="unit spec MODEL:LAYER:unit=N[:pos=Y,X]; repeat for several channels "
                          "(default: the protocol file's [neuron])")
    run.add_argument("--weights", help="model weights: a file, 'random' (explicit only), or the model's default")
    run.add_argument("--generations", type=int, help="override the protocol's number of generations")
    run.add_argument("--seed", type=int, help="override the protocol's seed")
    run.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    run.add_argument("--quiet", action="store_true", help="no per-generation progress lines")

    units = sub.add_parser("units", help="list a model's addressable layers and their output shapes")
    units.add_argument("model", help="registered model name; `rig units --list` shows them")
    units.add_argument("--weights", default="random",
                       help="weights to build the model with (shapes don't depend on them; default random)")

    sub.add_parser("models", help="list registered models and where their weights come from")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            from rig.commands.run import run_command

            return run_command(args)
        if args.command == "units":
            from rig.commands.units import units_command

            return units_command(args)
        if args.command == "models":
            from rig.commands.units import models_command

            return models_command()
    except (ProtocolError, SessionFileError, ValueError, FileNotFoundError) as exc:
        print(f"rig {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    raise AssertionError(f"unhandled command {args.command}")  # argparse guarantees a known command


if __name__ == "__main__":
    sys.exit(main())
