"""Who may look and who may act: the token, its constant-time check, and the hosts a loopback viewer answers.

The viewer binds 127.0.0.1 by default, where anyone on this machine may look;
on any other address every request needs the token. Controls always need it:
the page sends it in the ``X-Rig-Token`` header (read from the address's
``#token=`` fragment, which a browser never sends to a server), so another
site's page cannot post a control through the operator's browser. On loopback
only loopback host names are answered, so a DNS-rebinding page cannot read it.
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets

from starlette.requests import Request

__all__ = ["HEADER", "LOOPBACK_HOSTS", "is_loopback", "new_token", "token_ok"]

HEADER = "X-Rig-Token"
#: Host names a viewer bound to loopback answers to (the Host header, port aside).
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def new_token() -> str:
    """A fresh random token (32 bytes of the OS's randomness, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_ok(request: Request, token: str, query: bool = False) -> bool:
    """Whether ``request`` carries ``token`` in its header (or, with ``query``, as ``?token=``, for the event
    stream and images, which a browser fetches without headers); compared in constant time."""
    given = request.headers.get(HEADER)
    if given is None and query:
        given = request.query_params.get("token")
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
