"""Trial events as TTLs in the recording, through the Open Ephys NetworkEvents plugin (ZMQ REQ -> REP).

The plugin (open-ephys-plugins/network-events 0.2.1, ``Source/NetworkEvents.cpp``) binds a REP socket on
``tcp://*:5556`` by default (its editor can change the port; when the port is taken, as by the ZMQ
Interface's default data port 5556, it stays on an automatic one) and answers each text request in turn,
on one thread, from ``handleSpecialMessages``:

- ``TTL Line=N State=S``: N in 1..256 is recorded as 0-based line N - 1 (the ZMQ Interface's ``line``), S
  nonzero is on; the reply is ``TTLHandled: Line=N State=S`` (S as 0 or 1). A line outside 1..256 (or not a
  number) is answered ``InvalidChannel``. Keys are case-insensitive, unknown keys are ignored, a missing key
  means line 1 / state 0. The TTL is queued only while acquisition runs, and the reply is the same when it
  is not. The event is stamped at the first sample of the next processing block (about 10-25 ms), not at
  the request's time: markers say what happened, the photodiode says exactly when.
- Plugin versions before 0.2.1 took ``TTL Channel=N On=S`` and answered ``TTLHandled: Channel=N on=S``; to
  0.2.1 that command is ``Line=1 State=0``. Every reply is therefore checked against the command sent.
- ``StartAcquisition``, ``StopAcquisition``, ``StartRecord``, ``StopRecord``, ``IsAcquiring`` / ``IsRecording``
  (``1`` or ``0``), ``GetNodeID``, ``GetRecordingPath``, ``GetRecordingNumber``, ``GetExperimentNumber``;
  anything else is ``NotHandled``.
- Every request's text is also broadcast as a text event (recorded while recording).

:class:`MarkerSender` is a :class:`~rig.behavior.runner.TrialRunner` listener: ``__call__`` only queues (a
lock, an append, a notify), and a background thread sends state 1 and, ``pulse_ms`` later, state 0. A REQ
socket that lost a reply can never send again, so each request waits ``reply_timeout_ms`` and on timeout the
socket is closed and opened again (the "lazy pirate" pattern of the ZeroMQ guide); a lost request is not
sent again, since a late TTL marks a wrong time. Lost, slow and mismatched replies, latencies, dropped and
stale markers are counted for :meth:`MarkerSender.describe`.

The test double is :class:`rig.recording.openephys.gui_double.NetworkEventsDouble`.
"""
from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import zmq

from rig.recording.openephys.control import OpenEphysOptions

__all__ = ["EventsError", "MarkerSender", "parse_ttl_reply", "ttl_command"]

_REPLY = re.compile(r"TTLHandled: Line=(\d+) State=([01])\Z")
#: Latencies kept for the percentiles (the counts go on past it).
_LATENCIES_KEPT = 100_000


class EventsError(RuntimeError):
    """The NetworkEvents plugin did not answer, or answered as something else."""


def _token(value: object) -> str:
    """A value the plugin's tokenizer keeps whole: no spaces, quotes or ``=``."""
    return re.sub(r"[\s'\"=]+", "_", str(value)) or "_"


def ttl_command(line: int, state: int, tags: Mapping[str, object] | None = None) -> str:
    """``TTL Line=N State=S`` (1-based line), with ``Key=value`` tags the plugin ignores but records as text."""
    text = f"TTL Line={int(line)} State={1 if state else 0}"
    return text + "".join(f" {_token(key)}={_token(value)}" for key, value in (tags or {}).items())


def parse_ttl_reply(text: str) -> tuple[int, int] | None:
    """(line, state) of ``TTLHandled: Line=N State=S``; None for any other reply."""
    match = _REPLY.match(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass
class _Pulse:
    kind: str
    line: int
    queued: float
    info: Mapping[str, Any]


class MarkerSender:
    """Trial events -> NetworkEvents TTL pulses, sent from a background thread; ``__call__`` never waits.

    Args:
        host: The GUI's host (``options.events_host`` wins when set).
        options: Lines, pulse width, timeouts and queue size (:class:`OpenEphysOptions`; defaults if None).
        context: The ZMQ context (the process's shared one if None).
        clock: Monotonic seconds, for staleness and pulse widths.
        **overrides: Fields of ``options`` to replace, e.g. ``events_port=5558, pulse_ms=10``.
    """

    def __init__(self, host: str = "127.0.0.1", options: OpenEphysOptions | None = None, *,
                 context: zmq.Context | None = None, clock: Callable[[], float] = time.monotonic,
                 **overrides: Any) -> None:
        options = options if options is not None else OpenEphysOptions()
        self.options = dataclasses.replace(options, **overrides) if overrides else options
        self.host = self.options.events_host or host
        self.endpoint = f"tcp://{self.host}:{self.options.events_port}"
        self.lines = dict(self.options.lines)
        self.context = context or zmq.Context.instance()
        self._clock = clock
        self._pulse_s = self.options.pulse_ms / 1000.0
        self._stale_s = self.options.stale_ms / 1000.0
        self._timeout_ms = max(1, round(self.options.reply_timeout_ms))
        self._cond = threading.Condition()
        self._pending: deque[_Pulse] = deque()
        self._offs: dict[int, float] = {}  # line -> when its state 0 is due
        self._inflight = False
        self._closing = self._aborted = False
        self._socket: zmq.Socket | None = None
        self.acquiring_at_check: bool | None = None
        # Markers (pulses) and commands (requests), counted.
        self.received = self.pulses_sent = self.dropped = self.stale = self.shortened = 0
        self.unsent_at_close = self.after_close = 0
        self.requests = self.replies = self.lost = self.slow = self.mismatched = 0
        self.last_mismatch = ""
        self.last_error = ""
        self._latencies: list[float] = []
        self._latency_sum = self._latency_max = 0.0
        self._thread = threading.Thread(target=self._run, name="openephys-markers", daemon=True)
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------------------------

    def __call__(self, kind: str, time_: float, info: Mapping[str, Any] | None = None) -> None:
        """Queue a pulse for a trial event (a :meth:`TrialRunner.add_listener` listener); returns at once."""
        line = self.lines.get(kind)
        if line is None:
            return
        pulse = _Pulse(kind, line, self._clock(), info or {})
        with self._cond:
            if self._closing:
                self.after_close += 1
                return
            if len(self._pending) >= self.options.queue:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(pulse)
            self.received += 1
            self._cond.notify_all()

    def check(self, timeout_ms: float | None = None) -> bool:
        """Ask the plugin ``IsAcquiring`` on a socket of its own; True if acquiring.

        Raises:
            EventsError: no answer within the timeout, or an answer that is not the plugin's.
        """
        timeout = max(1, round(self.options.reply_timeout_ms if timeout_ms is None else timeout_ms))
        sock = self.context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.endpoint)
            sock.send_string("IsAcquiring")
            if not sock.poll(timeout, zmq.POLLIN):
                raise EventsError(
                    f"NetworkEvents at {self.endpoint} did not answer 'IsAcquiring' within {timeout} ms: is the "
                    f"Network Events plugin in the GUI's signal chain, and is {self.options.events_port} the port its "
                    f"editor shows? (Its default, 5556, is also the ZMQ Interface's data port: with both plugins "
                    f"in the chain, give one of them another port and set [openephys] events_port.)")
            reply = sock.recv().decode("utf-8", "replace")
        finally:
            sock.close()
        if reply not in ("0", "1"):
            raise EventsError(f"{self.endpoint} answered 'IsAcquiring' with {reply[:80]!r}, not '1' or '0': is this "
                              f"port the Network Events plugin's?")
        self.acquiring_at_check = reply == "1"
        return self.acquiring_at_check

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until every queued pulse has ended (state 0 sent); False if ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._offs or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (for up to ``timeout_s``; the rest is counted unsent), end every pulse, stop the
        thread; idempotent."""
        self.flush(timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(self.options.reply_timeout_ms / 1000.0 + 0.5)
        if self._thread.is_alive():
            with self._cond:
                self._aborted = True
                self._cond.notify_all()
            self._thread.join(self.options.reply_timeout_ms / 1000.0 + 0.5)

    def __enter__(self) -> MarkerSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the thread -------------------------------------------------------------------------------------

    def _next(self) -> tuple[int, int, _Pulse | None] | None:
        """The next (line, state, pulse) to send, waiting for it (lock held); None: time to stop."""
        while True:
            if self._aborted:
                self.unsent_at_close += len(self._pending)
                self._pending.clear()
                self._offs.clear()
                return None
            if self._closing and self._pending:  # close() gave the queue its time: only end the pulses
                self.unsent_at_close += len(self._pending)
                self._pending.clear()
            now = self._clock()
            if self._offs:
                line, due = min(self._offs.items(), key=lambda item: item[1])
                if due <= now or self._closing:
                    del self._offs[line]
                    return line, 0, None
            if self._pending:
                pulse = self._pending[0]
                if now - pulse.queued > self._stale_s:
                    self._pending.popleft()
                    self.stale += 1
                    continue
                if pulse.line in self._offs:  # the line is still high: end that pulse first
                    del self._offs[pulse.line]
                    self.shortened += 1
                    return pulse.line, 0, None
                return pulse.line, 1, self._pending.popleft()
            if self._closing:
                return None
            self._cond.notify_all()  # idle: wake flush()
            self._cond.wait(min(self._offs.values()) - now if self._offs else None)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    job = self._next()
                    if job is None:
                        return
                    self._inflight = True
                line, state, pulse = job
                tags = None
                if pulse is not None and self.options.tags:
                    tags = {"Kind": pulse.kind, **({"Trial": pulse.info["trial"]} if "trial" in pulse.info else {})}
                command = ttl_command(line, state, tags)
                reply = self._request(command)
                with self._cond:
                    self._inflight = False
                    if state:
                        self.pulses_sent += 1
                        self._offs[line] = self._clock() + self._pulse_s
                    if reply is not None and parse_ttl_reply(reply) != (line, state):
                        self.mismatched += 1
                        self.last_mismatch = f"{command!r} -> {reply[:120]!r}"
                    self._cond.notify_all()
        except Exception as exc:  # never silent: describe() says why markers stopped
            self.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            self._reset()
            with self._cond:
                self._inflight = False
                self._cond.notify_all()

    def _reset(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _request(self, command: str) -> str | None:
        """One request and its reply; None (counted lost, socket reopened) when none came in time."""
        if self._socket is None:
            self._socket = self.context.socket(zmq.REQ)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(self.endpoint)
        began = time.perf_counter()
        self.requests += 1
        try:
            self._socket.send_string(command, zmq.NOBLOCK)
            ready = self._socket.poll(self._timeout_ms, zmq.POLLIN)
            reply = self._socket.recv(zmq.NOBLOCK).decode("utf-8", "replace") if ready else None
        except zmq.ZMQError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            reply = None
        if reply is None:
            self.lost += 1
            self._reset()
            return None
        latency_ms = (time.perf_counter() - began) * 1000.0
        self.replies += 1
        self.slow += latency_ms > self.options.slow_ms
        self._latency_sum += latency_ms
        self._latency_max = max(self._latency_max, latency_ms)
        if len(self._latencies) < _LATENCIES_KEPT:
            self._latencies.append(latency_ms)
        return reply

    # -- what happened ----------------------------------------------------------------------------------

    def latency_ms(self) -> dict[str, float | int | None]:
        """Reply latencies: count, mean, median, 95th and 99th percentile, max (ms)."""
        with self._cond:  # copy under the lock, sort outside it: __call__ must never wait on this
            kept = list(self._latencies)
            count, total, worst = self.replies, self._latency_sum, self._latency_max
        kept.sort()
        if not kept:
            return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}

        def at(q: float) -> float:
            return round(kept[min(len(kept) - 1, int(q * len(kept)))], 3)
        return {"count": count, "mean": round(total / count, 3), "p50": at(0.5), "p95": at(0.95), "p99": at(0.99),
                "max": round(worst, 3)}

    def describe(self) -> dict[str, Any]:
        """Counts, latencies and options for the session file (JSON-ready)."""
        latency, options = self.latency_ms(), dataclasses.asdict(self.options)
        with self._cond:
            return {
                "endpoint": self.endpoint,
                "options": options,
                "acquiring_at_check": self.acquiring_at_check,
                "markers": {"received": self.received, "sent": self.pulses_sent, "dropped_queue_full": self.dropped,
                            "stale": self.stale, "shortened": self.shortened, "unsent_at_close": self.unsent_at_close,
                            "after_close": self.after_close, "queued_now": len(self._pending)},
                "requests": {"sent": self.requests, "replied": self.replies, "lost": self.lost, "slow": self.slow,
                             "mismatched": self.mismatched, "last_mismatch": self.last_mismatch},
                "latency_ms": latency,
                "last_error": self.last_error,
            }
