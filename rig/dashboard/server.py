"""Serving the viewer: bind (127.0.0.1 by default), print the address with its token, run uvicorn."""
from __future__ import annotations

import asyncio
import socket
import sys
import uvicorn

from rig.dashboard.app import Dashboard
from rig.dashboard.live import LiveSession
from rig.dashboard.security import is_loopback, new_token

__all__ = ["serve", "bind"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: one the OS picks); an error naming the address if taken."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family, backlog=64)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None


def serve(live: LiveSession, host: str = "127.0.0.1", port: int = 8765, trust_generator: str | None = None,
          poll_s: float = 0.2) -> None:
    """Serve the dashboard of the session ``live`` reads until interrupted; prints its address (with the token)."""
    import torch

    torch.set_num_threads(1)  # the viewer's renders must leave the cores to the experiment beside it
    loopback = is_loopback(host)
    token = new_token()
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    # On loopback the token rides in the fragment (never sent to a server, kept out of logs); elsewhere the
    # page itself needs it, so it is in the query too.
    url = f"http://{shown}:{bound}/" + ("" if loopback else f"?token={token}") + f"#token={token}"
    print(f"rig watch: {live.path} at {url}", flush=True)
    print(f"rig watch: token {token} (controls{'' if loopback else ' and viewing'} need it)", flush=True)
    dashboard = Dashboard(live, token, open_view=loopback, poll_s=poll_s, trust_generator=trust_generator)
    config = uvicorn.Config(dashboard.app(loopback), log_level="warning", timeout_graceful_shutdown=1,
                            lifespan="on")
    server = uvicorn.Server(config)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
        sys.stdout.flush()
