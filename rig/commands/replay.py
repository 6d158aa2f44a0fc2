"""``rig replay FILE.h5``: re-run a recorded session from the file alone and check its codes bit for bit.

The optimizer is rebuilt from the recorded seeds and told the recorded scores;
every block it proposes must equal the recorded codes (a screening: every block
must show the recorded image ids in the protocol's seeded order). Exit status 0 when
they do, 1 when they diverge or a block's content fails its checksum (the
message says where), 2 for a file that cannot be read as a session. The
file is opened read-only and never unpickled.

``rig replay FILE.h5 --rescore [--window-ms 60,220] [--baseline early|pre|none]
[--baseline-window-ms -50,0] [--out scores.csv]`` instead replays the raw
stream the session recorded through the live parser and scores every stimulus
again (rig.recording.rescore); it prints a summary per block and writes the
recorded and rescored scores to a CSV. Options left out keep the recorded values.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from rig.loop.replay import replay_session

HELP = "re-run a recorded session from its file and check that it reproduces bit for bit (or --rescore it)"

#: Exit status when the replay does not reproduce the file.
EXIT_DIVERGED = 1


def _window(text: str) -> tuple[float, float]:
    """``"START,STOP"`` in ms, for argparse."""
    parts = text.split(",")
    try:
        start, stop = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected START,STOP in ms, e.g. 60,220") from None
    if not stop > start:
        raise argparse.ArgumentTypeError(f"{text!r}: STOP must be greater than START")
    return start, stop


#: Options whose value may begin with a minus sign: a window before the onset, e.g. ``-50,0``.
_WINDOW_OPTIONS = ("--window-ms", "--baseline-window-ms")
_STARTS_NEGATIVE = re.compile(r"^-\.?\d")


def prepare_argv(argv: list[str]) -> list[str]:
    """``--baseline-window-ms -50,0`` joined as ``--baseline-window-ms=-50,0``, for argparse.

    argparse reads an argument that begins with ``-`` as an option unless it is
    a plain number such as ``-50``, so it would refuse ``-50,0`` as a value;
    after ``=`` it is the value. Arguments after ``--`` are left alone.
    """
    end = argv.index("--") if "--" in argv else len(argv)
    out, i = [], 0
    while i < end:
        if argv[i] in _WINDOW_OPTIONS and i + 1 < end and _STARTS_NEGATIVE.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out + list(argv[end:])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig replay``; ``prepare_argv`` lets a window begin with a minus sign."""
    parser.add_argument("session", type=Path, help="session file (HDF5) written by rig run")
    parser.add_argument("--rescore", action="store_true",
                        help="score every stimulus again from the recorded raw stream (sessions run with "
                             "--neuron zmq://...)")
    parser.add_argument("--window-ms", type=_window, default=None, metavar="START,STOP",
                        help="with --rescore: response window after the onset TTL (default: as recorded)")
    parser.add_argument("--baseline", choices=("early", "pre", "none"), default=None,
                        help="with --rescore: baseline (default: as recorded)")
    parser.add_argument("--baseline-window-ms", type=_window, default=None, metavar="START,STOP",
                        help="with --rescore: baseline window (default: as recorded when the baseline is, "
                             "else 0,40 for early and -50,0 for pre)")
    parser.add_argument("--out", type=Path, default=None,
                        help="with --rescore: CSV of block, stimulus, kind, channel, recorded and rescored score")


def _rescore(args: argparse.Namespace) -> int:
    from rig.recording.rescore import recorded_recording_spec, recorded_windows, rescore_session
    from rig.recording.scoring import Windows
    from rig.session import read_session

    original = recorded_windows(recorded_recording_spec(read_session(args.session)))
    baseline = args.baseline or original.baseline
    baseline_ms = args.baseline_window_ms
    if baseline_ms is None:
        baseline_ms = original.baseline_ms if baseline == original.baseline else (
            (-50.0, 0.0) if baseline == "pre" else (0.0, 40.0))
    try:
        windows = Windows(args.window_ms or original.response_ms, baseline, baseline_ms)
    except ValueError as exc:
        raise ValueError(f"rig replay --rescore: {exc}") from None
    result = rescore_session(args.session, windows)
    print(f"rig replay: {args.session}: rescored {len(result.blocks)} blocks from "
          f"{result.stream['messages_replayed']} raw messages; response {list(windows.response_ms)} ms, baseline "
          f"{windows.baseline} {list(windows.baseline_ms) if windows.baseline != 'none' else ''} "
          f"(recorded: {list(original.response_ms)} ms, {original.baseline} {list(original.baseline_ms)})")
    for line in result.summary():
        print(f"  {line}")
    if args.out is not None:
        print(f"rig replay: wrote {result.write_csv(args.out)}")
    if result.stream_mismatches:
        print(f"rig replay: {args.session}: the raw stream replayed through the live parser does not count what "
              f"the live reader counted: " + "; ".join(result.stream_mismatches))
        return EXIT_DIVERGED
    print("rig replay: the replayed stream's counters (messages, malformed, gaps, restarts) match the live "
          "reader's at every showing")
    return 0


def run(args: argparse.Namespace) -> int:
    """Replay the session and report; non-zero when it does not reproduce."""
    if args.rescore:
        return _rescore(args)
    if args.window_ms or args.baseline or args.baseline_window_ms or args.out:
        raise ValueError("rig replay: --window-ms, --baseline, --baseline-window-ms and --out go with --rescore")
    result = replay_session(args.session)
    if result.altered_blocks:
        print(f"rig replay: {args.session}: block(s) {result.altered_blocks} do not match the sha256 written "
              f"with them: the file was altered or corrupted after it was written")
    if result.divergence:
        print(f"rig replay: {args.session}: DIVERGED after {result.blocks_checked} of {result.blocks_recorded} "
              f"blocks: {result.divergence}")
    if result.ok:
        print(f"rig replay: {args.session}: all {result.blocks_recorded} blocks reproduce bit for bit"
              f"{' (a screening: its images in the seeded order)' if result.kind == 'screening' else ''}")
        return 0
    return EXIT_DIVERGED
