"""The control channel from a viewer to a running session: an append-only file of JSON requests beside it.

The viewer (``rig watch``) appends one JSON line per request to
``FILE.h5.requests.jsonl``; the controller reads the lines added since it last
looked, between blocks (and, for a reward with a trial machine, a thread passes
it to the behaviour :class:`~rig.behavior.operator.Operator`, which the trial
runner takes between frames). Nothing waits on the viewer: the controller only
``stat``s a file and reads what is new, so a viewer that crashed or hangs
cannot stop or slow the run. Every request the controller takes, applied or
refused, is recorded in the session file with its times (``controls``,
docs/session-schema.md): that record is the acknowledgement the viewer shows.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from protocols.base import extendable_generations
from protocols.spec import MAX_GENERATIONS
from rig.session.layout import utc_now
from rig.session.sink import SessionSink

__all__ = ["CONTROL_KINDS", "ControlChannel", "ControlRequest", "MAX_NOTE_CHARS", "post_request", "requests_path"]

#: What a viewer may ask for. pause/resume/stop/extend take effect between blocks; reward between trials.
CONTROL_KINDS = ("pause", "resume", "stop", "extend", "reward", "note")
#: The longest note kept, in characters.
MAX_NOTE_CHARS = 2000
#: The longest request line read; a longer one is refused whole (it was not written by a viewer).
MAX_LINE_BYTES = 8192
#: The most read from the request file at one look (the rest waits for the next).
MAX_READ_BYTES = 2**20
REQUESTS_SUFFIX = ".requests.jsonl"
#: While paused, how often the controller looks for resume or stop, in seconds.
PAUSE_POLL_S = 0.05


def requests_path(session: str | Path) -> Path:
    """The request file of a session file: ``FILE.h5.requests.jsonl`` beside it."""
    session = Path(session)
    return session.with_name(session.name + REQUESTS_SUFFIX)


@dataclass(frozen=True)
class ControlRequest:
    """One request from a viewer: ``kind`` (:data:`CONTROL_KINDS`), its ``value`` (extend: generations, note: the
    text), the session it is meant for, an id to acknowledge it by, and when it was made (UTC)."""

    kind: str
    value: Any
    session_id: str
    id: str
    requested_utc: str

    @classmethod
    def make(cls, kind: str, value: Any, session_id: str) -> "ControlRequest":
        """A new, checked request with a fresh id, made now."""
        request = cls(kind, value, session_id, uuid.uuid4().hex, utc_now())
        request.check()
        return request

    @classmethod
    def from_json(cls, line: str) -> "ControlRequest":
        """Parse and check one request line; ValueError naming the field that is wrong."""
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        missing = [name for name in ("kind", "session_id", "id", "requested_utc")
                   if not isinstance(data.get(name), str)]
        if missing:
            raise ValueError(f"field(s) {missing} missing or not text")
        request = cls(data["kind"], data.get("value"), data["session_id"], data["id"], data["requested_utc"])
        request.check()
        return request

    def check(self) -> None:
        """ValueError naming the field when the kind is unknown or its value does not fit it."""
        if self.kind not in CONTROL_KINDS:
            raise ValueError(f"kind {self.kind!r} is not a control; valid: {list(CONTROL_KINDS)}")
        if self.kind == "extend":
            whole = isinstance(self.value, int) and not isinstance(self.value, bool)
            if not whole or not 1 <= self.value <= MAX_GENERATIONS:
                raise ValueError(f"value: extend takes a whole number of generations in 1..{MAX_GENERATIONS}, "
                                 f"got {self.value!r}")
        elif self.kind == "note":
            if not isinstance(self.value, str) or not self.value.strip() or len(self.value) > MAX_NOTE_CHARS:
                raise ValueError(f"value: a note is text of 1..{MAX_NOTE_CHARS} characters, "
                                 f"got {str(self.value)[:40]!r}")
        elif self.value is not None:
            raise ValueError(f"value: {self.kind} takes no value, got {self.value!r}")

    def to_json(self) -> str:
        """One line of the request file."""
        return json.dumps(asdict(self), separators=(",", ":"))


def post_request(session: str | Path, request: ControlRequest) -> None:
    """Append ``request`` to the session's request file in one write (O_APPEND: lines never interleave)."""
    line = (request.to_json() + "\n").encode()
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"request of {len(line)} bytes is longer than {MAX_LINE_BYTES}; shorten the note")
    fd = os.open(requests_path(session), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class ControlChannel:
    """The controller's side: the requests added to the file since the run started, applied between blocks.

    Requests whose id is in ``taken`` (recorded by an earlier run of a resumed session) are not taken again, and
    lines of another session (a file left beside an earlier session of the same name) are passed over: a viewer
    stamps each request with the session it read. With an ``operator`` (a session with a trial machine and a
    reward output), a thread looks every ``reward_poll_s`` and posts rewards to it at once, so they come between
    trials, not only between blocks. A request file that cannot be read is said once and looked at again later:
    it never stops the run.
    """

    def __init__(self, session: str | Path, session_id: str, operator: Any = None, reward_poll_s: float = 0.1,
                 say: Callable[[str], None] | None = None, taken: set[str] = frozenset()) -> None:
        self.path = requests_path(session)
        self.say = say
        self.session_id = session_id
        self.operator = operator
        self._seen = set(taken)
        self._offset = 0
        self._lock = threading.Lock()
        self._taken: list[tuple[ControlRequest, str]] = []  # (request, why it is refused or "")
        self._rewarded: set[str] = set()
        self.paused = False
        self._stop = threading.Event()
        self._unreadable = ""
        self._thread: threading.Thread | None = None
        if operator is not None:
            self._thread = threading.Thread(target=self._forward_rewards, args=(reward_poll_s,),
                                            name="rig-controls", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the reward thread, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def _read_new(self) -> None:
        """Take the complete lines appended since the last look (a half-written last line waits)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size <= self._offset:
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(min(size - self._offset, MAX_READ_BYTES))
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) > MAX_LINE_BYTES:
            end = len(chunk)  # no line is this long: take it as one (refused) line, not wait for its end forever
        start, self._offset = self._offset, self._offset + end
        for raw in chunk[:end].rstrip(b"\n").split(b"\n") if end else []:
            where, start = start, start + len(raw) + 1
            if not raw.strip():
                continue
            try:
                if len(raw) > MAX_LINE_BYTES:
                    raise ValueError(f"line of {len(raw)} bytes, longer than {MAX_LINE_BYTES}")
                request = ControlRequest.from_json(raw.decode("utf-8"))
            except (ValueError, UnicodeError) as exc:
                # Named by where it is in the file, so a resumed run does not record it again.
                invalid = f"invalid@{where}"
                if invalid not in self._seen:
                    self._seen.add(invalid)
                    self._taken.append((ControlRequest("invalid", None, self.session_id, invalid, ""),
                                        f"refused: {self.path.name} at byte {where}: {exc}"))
                continue
            if request.session_id != self.session_id or request.id in self._seen:
                continue
            self._seen.add(request.id)
            if request.kind == "reward" and self.operator is not None:
                self.operator.request("reward")  # the trial runner gives it between frames, and logs it
                self._rewarded.add(request.id)
            self._taken.append((request, ""))

    def _look(self) -> None:
        """:meth:`_read_new`, saying once (not raising) when the file cannot be read: the run goes on."""
        try:
            self._read_new()
        except OSError as exc:
            if self.say is not None and str(exc) != self._unreadable:
                self.say(f"rig run: warning: cannot read the viewer's requests ({exc}); looking again later")
            self._unreadable = str(exc)

    def _forward_rewards(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            with self._lock:
                self._look()

    def between_blocks(self, protocol: Any, session: SessionSink, next_block: int) -> bool:
        """Apply what was asked since the last block and record each in ``session`` (with ``after_block``, the
        last whole block, -1 before the first); True to stop now.

        A pause holds here (looking every :data:`PAUSE_POLL_S`) until resume or stop.
        """
        while True:
            with self._lock:
                self._look()
                taken, self._taken = self._taken, []
            stop = False
            for request, problem in taken:
                outcome = problem or self._apply(request, protocol)
                session.record_control({"kind": request.kind, "value": request.value, "request_id": request.id,
                                        "requested_utc": request.requested_utc, "after_block": next_block - 1,
                                        "outcome": outcome})
                if self.say is not None:
                    self.say(f"rig run: control {request.kind} after block {next_block - 1}: {outcome}")
                stop = stop or (request.kind == "stop" and outcome == "applied")
            if stop or not self.paused:
                return stop
            time.sleep(PAUSE_POLL_S)

    def _apply(self, request: ControlRequest, protocol: Any) -> str:
        """Carry out one request; its outcome in words ("applied" or "refused: why")."""
        if request.kind == "pause":
            self.paused = True
        elif request.kind == "resume":
            self.paused = False
        elif request.kind == "stop":
            self.paused = False
        elif request.kind == "extend":
            generations = extendable_generations(protocol)
            if generations is None:
                shown = getattr(protocol, "generations", None)
                fixed = f" shows a fixed set of {shown} blocks; it" if isinstance(shown, int) else ""
                return f"refused: a {type(protocol).__name__}{fixed} has no generation count to extend"
            if generations + request.value > MAX_GENERATIONS:
                return f"refused: {generations} + {request.value} generations is more than {MAX_GENERATIONS}"
            protocol.generations = generations + request.value
        elif request.kind == "reward":
            if request.id not in self._rewarded:
                return "refused: this session has no reward output"
            return "applied: given by the trial runner (its manual_reward event)"
        return "applied"
