"""``rig salvage SESSION.h5 OUT.h5``: copy a damaged session's intact blocks, up to the damage, into a new file.

Every command refuses a session with a damaged or missing block rather than
guess. Salvage keeps blocks 0..k-1 before the first damaged block k, with
their verified optimizer checkpoints, in OUT (status ``salvaged``), which
``rig run --resume OUT.h5`` continues; it prints what was lost. SESSION is
only read, never written; OUT must not exist.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rig.session.salvage import salvage_session

HELP = "copy a damaged session's intact blocks (up to the damage) into a new, resumable session file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig salvage``."""
    parser.add_argument("session", type=Path, help="the damaged session file (HDF5); only read")
    parser.add_argument("out", type=Path, help="the new session file to write (must not exist)")


def run(args: argparse.Namespace) -> int:
    """Salvage and say what was kept and what was lost."""
    result = salvage_session(args.session, args.out)
    print(f"rig salvage: wrote {result.out}: blocks 0..{len(result.kept) - 1} ({len(result.kept)} intact) "
          f"and {len(result.checkpoints)} checkpoint(s) from {result.source}; status salvaged "
          f"(continue with `rig run --resume {result.out}`)" if result.kept else
          f"rig salvage: wrote {result.out}: no intact block before the damage (header only)")
    for line in result.damage:
        print(f"  lost: {line}")
    if result.after_damage:
        print(f"  lost: intact block(s) {_ranges(result.after_damage)} follow the damage and were not copied "
              f"(a session's blocks must run without a gap); they remain in {result.source}")
    for line in result.bad_checkpoints:
        print(f"  lost: {line} (resuming replays past it)")
    if not result.lost:
        print("  nothing was lost: every block verified")
    return 0


def _ranges(indices: list[int]) -> str:
    """``[3, 4, 5, 9]`` as ``3-5, 9``."""
    spans: list[list[int]] = []
    for i in indices:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
