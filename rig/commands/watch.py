"""``rig watch``: a live page of a session in the browser, with the operator's controls (pause, stop, extend,
reward, note). Works on a running session and on a finished one; binds 127.0.0.1 unless --host says otherwise."""
from __future__ import annotations

import argparse
from pathlib import Path

from rig.commands._options import add_trust_generator, bounded_int

HELP = "a live page of a session in the browser, with controls"
#: The port ``rig watch`` and ``rig run --dashboard`` use unless told otherwise.
DEFAULT_PORT = 8765


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rig watch``."""
    parser.add_argument("session", type=Path, help="session file (HDF5), running or finished")
    parser.add_argument("--port", type=bounded_int(0, 65535), default=DEFAULT_PORT,
                        help=f"port to serve on (default {DEFAULT_PORT}; 0: any free port, printed at start)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; any other needs the token printed at start)")
    add_trust_generator(parser)


def run(args: argparse.Namespace) -> int:
    """Check the session file, then serve its page until interrupted (Ctrl-C)."""
    from rig.dashboard.live import LiveSession
    from rig.dashboard.server import serve  # starlette and uvicorn only when a viewer is wanted

    live = LiveSession.open(args.session)  # a missing or damaged file is refused here, in one line, before serving
    try:
        serve(live, host=args.host, port=args.port, trust_generator=args.trust_generator)
    except KeyboardInterrupt:
        pass
    return 0
