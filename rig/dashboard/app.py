"""The viewer's web app (Starlette): the page, its live state over server-sent events, images, and controls.

One background task refreshes the :class:`~rig.dashboard.live.LiveSession`
every ``poll_s`` (the file reads run in a worker thread) and, when something
changed, rebuilds the state and wakes every open event stream. The page
draws its plots itself from that JSON (inline SVG), so it needs no network.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from importlib import resources
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rig.dashboard.channel import ControlRequest, post_request
from rig.dashboard.images import ImageRenderer
from rig.dashboard.live import LiveSession
from rig.dashboard.security import HEADER, LOOPBACK_HOSTS, token_ok
from rig.dashboard.state import snapshot
from rig.session import SessionFileError

__all__ = ["Dashboard", "page_html"]

#: Seconds between comment lines on an idle event stream, so proxies and browsers keep it open.
KEEPALIVE_S = 15.0


def page_html() -> str:
    """The page: index.html with its stylesheet and script inlined (one response; nothing else to fetch)."""
    static = resources.files("rig.dashboard") / "static"
    html = (static / "index.html").read_text()
    return (html.replace("/*STYLE*/", (static / "dashboard.css").read_text())
                .replace("/*SCRIPT*/", (static / "dashboard.js").read_text()))


class Dashboard:
    """The state of one viewer: the session it reads, the token, the requests it posted, the current JSON."""

    def __init__(self, live: LiveSession, token: str, *, open_view: bool, poll_s: float = 0.2,
                 trust_generator: str | None = None) -> None:
        self.live = live
        self.token = token
        self.open_view = open_view
        self.poll_s = poll_s
        self.trust_generator = trust_generator
        self.posted: list[ControlRequest] = []
        self.state: dict[str, Any] = {}
        self._renderer: ImageRenderer | None = None
        self._changed = asyncio.Event()
        #: Bumped whenever the state changes: an event stream sends when it differs from what it last sent.
        self.version = 0
        self._page = page_html()

    # -- keeping up with the file ---------------------------------------------------------------------

    def pending(self) -> list[ControlRequest]:
        """Requests this viewer posted that the run has not taken (recorded) yet."""
        session = self.live.session
        taken = {c.get("request_id") for c in session.controls} if session is not None else set()
        return [r for r in self.posted if r.id not in taken]

    def update(self) -> bool:
        """Refresh from the file (blocking: call it in a worker thread); whether the state changed."""
        changed = self.live.refresh()
        if changed or not self.state or self.state.get("problem") != self.live.problem:
            try:
                self.state = snapshot(self.live, self.pending())
            except (SessionFileError, ValueError) as exc:  # e.g. a recorded protocol that no longer validates
                self.state = {"revision": self.live.revision, "problem": f"cannot show this session: {exc}"}
            return True
        return False

    def _wake(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def _follow(self) -> None:
        while True:
            if await asyncio.to_thread(self.update):
                self._wake()
            await asyncio.sleep(self.poll_s)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(self.update)
        task = asyncio.create_task(self._follow())
        try:
            yield
        finally:
            task.cancel()

    # -- routes ---------------------------------------------------------------------------------------

    def _may_view(self, request: Request) -> bool:
        return self.open_view or token_ok(request, self.token, query=True)

    async def page(self, request: Request) -> Response:
        if not self._may_view(request):
            return _refused(403, "this viewer is not on loopback: open the address with ?token= printed at its start")
        return HTMLResponse(self._page, headers={"Cache-Control": "no-store"})

    async def state_json(self, request: Request) -> Response:
        if not self._may_view(request):
            return _refused(403, "a token is needed to view this session")
        return JSONResponse(self.state)

    async def events(self, request: Request) -> Response:
        if not self._may_view(request):
            return _refused(403, "a token is needed to view this session")

        async def stream() -> AsyncIterator[str]:
            sent = -1
            while True:
                if self.version != sent:
                    sent = self.version
                    yield f"data: {json.dumps(self.state)}\n\n"
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def image(self, request: Request) -> Response:
        if not self._may_view(request):
            return _refused(403, "a token is needed to view this session")
        session = self.live.session
        if session is None:
            return _refused(404, "the session has not been read yet")
        p = request.path_params
        try:
            if self._renderer is None:
                self._renderer = await asyncio.to_thread(ImageRenderer, session, self.trust_generator)
            png = await asyncio.to_thread(self._renderer.png, session, p["block"], p["thread"], p["code"])
        except KeyError as exc:
            return _refused(404, str(exc.args[0]))
        except ValueError as exc:  # e.g. a module generator that was not trusted
            return _refused(409, f"cannot render this session's images: {exc}")
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def control(self, request: Request) -> Response:
        if not token_ok(request, self.token):
            return _refused(403, f"controls need the token in the {HEADER} header")
        try:
            body = await request.json()
        except ValueError:
            return _refused(400, "the body must be JSON: {\"kind\": ..., \"value\": ...}")
        if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
            return _refused(400, "field kind: missing (the body must be a JSON object with a kind)")
        session = self.live.session
        if session is None or session.attrs.get("status") != "running":
            status = "unread" if session is None else session.attrs.get("status")
            return _refused(409, f"the session is {status}, not running: no run is taking controls")
        try:
            req = ControlRequest.make(body["kind"], body.get("value"), str(session.attrs["session_id"]))
            await asyncio.to_thread(post_request, session.path, req)
        except ValueError as exc:
            return _refused(400, str(exc))
        self.posted.append(req)
        self.state = {**self.state, "pending": [{"id": r.id, "kind": r.kind, "value": r.value,
                                                  "requested_utc": r.requested_utc} for r in self.pending()]}
        self._wake()
        return JSONResponse({"id": req.id, "kind": req.kind, "value": req.value}, status_code=202)

    def app(self, loopback: bool) -> Starlette:
        """The ASGI app; on loopback it answers only loopback host names (no DNS rebinding)."""
        middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS)] if loopback else []
        routes = [
            Route("/", self.page),
            Route("/api/state", self.state_json),
            Route("/api/events", self.events),
            Route("/api/image/{block:int}/{thread:int}/{code:int}.png", self.image),
            Route("/api/control", self.control, methods=["POST"]),
        ]
        return Starlette(routes=routes, middleware=middleware, lifespan=self.lifespan)


def _refused(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
