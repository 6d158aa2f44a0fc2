"""``rig replay FILE.h5``: re-run a recorded session from the file alone and check its codes bit for bit.

The optimizer is rebuilt from the recorded seeds and told the recorded scores;
every block it proposes must equal the recorded codes. Exit status 0 when
they do, 1 when they diverge or a block's content fails its checksum (the
message says where), 2 for a file that cannot be read as a session. The
file is opened read-only and never unpickled.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rig.replay import replay_session

HELP = "re-run a recorded session from its file and check that it reproduces bit for bit"

#: Exit status when the replay does not reproduce the file.
EXIT_DIVERGED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig replay``."""
    parser.add_argument("session", type=Path, help="session file (HDF5) written by rig run")


def run(args: argparse.Namespace) -> int:
    """Replay the session and report; non-zero when it does not reproduce."""
    result = replay_session(args.session)
    if result.altered_blocks:
        print(f"rig replay: {args.session}: block(s) {result.altered_blocks} do not match the sha256 written "
              f"with them: the file was altered or corrupted after it was written")
    if result.divergence:
        print(f"rig replay: {args.session}: DIVERGED after {result.blocks_checked} of {result.blocks_recorded} "
              f"blocks: {result.divergence}")
    if result.ok:
        print(f"rig replay: {args.session}: all {result.blocks_recorded} blocks reproduce bit for bit")
        return 0
    return EXIT_DIVERGED
