"""Command-line options shared by several ``rig`` commands (not a command: the name starts with ``_``)."""
from __future__ import annotations

import argparse

#: What ``--trust-generator`` says in every command's help.
TRUST_GENERATOR_HELP = ("run the generator factory PACKAGE.MODULE:CALLABLE when the session file names it "
                        "([generator] kind = \"module\"); without it a session file runs no code")


def add_trust_generator(parser: argparse.ArgumentParser) -> None:
    """``--trust-generator FACTORY``: the one factory a session file may run (see protocols/generators/custom.py)."""
    parser.add_argument("--trust-generator", metavar="PACKAGE.MODULE:CALLABLE", default=None,
                        help=TRUST_GENERATOR_HELP)


def bounded_int(low: int, high: int):
    """An argparse ``type``: an integer in ``low..high``; anything else is refused saying what is valid."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {text}")
        return value

    parse.__name__ = f"integer in {low}..{high}"
    return parse
