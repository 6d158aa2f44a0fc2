"""The live reader of an Open Ephys ZMQ Interface stream (Reader contract, STYLE practice 1).

``with ZmqReader(endpoint) as reader:`` connects; :meth:`ZmqReader.get_initial`
describes the connection; :meth:`ZmqReader.read_next` never blocks: it returns
the normalised records of every message waiting (possibly none). The caller
polls with its own time budget. The reader

- subscribes to everything and parses each message with the pure functions of
  :mod:`rig.recording.openephys_wire`;
- keeps every raw message with its receive time (``time.monotonic``) until
  :meth:`take_raw` hands them over for the session file (data payloads are
  dropped unless ``keep_data_payloads``: continuous data can be tens of MB/s);
- tracks ``message_num``: a jump forward is a gap (messages lost), a step
  back is an acquisition restart; both come out as
  :class:`~rig.recording.openephys_wire.Discontinuity` records;
- counts malformed messages and keeps their errors, never raising: a malformed
  message is treated as lost, so the next good one shows up as a gap;
- sends heartbeats to the REP port with a REQ socket, re-opening the socket
  when a reply is overdue (a REQ socket cannot send twice without a reply).
"""
from __future__ import annotations

import json
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

import zmq

from rig.recording.openephys_wire import (DATA_ENVELOPE, HEARTBEAT_REPLY, DataMessage, Discontinuity, Record,
                                          WireError, format_heartbeat, normalise, parse_message)


class HeartbeatClient:
    """Sends ``{"application","uuid","type":"heartbeat"}`` every ``interval_s``; expects b"heartbeat received"."""

    def __init__(self, context: zmq.Context, endpoint: str, application: str, uuid: str,
                 interval_s: float = 2.0) -> None:
        self.context, self.endpoint, self.interval_s = context, endpoint, interval_s
        self.message = format_heartbeat(application, uuid)
        self.sent = self.replies = self.overdue = 0
        self._socket: zmq.Socket | None = None
        self._waiting_since: float | None = None
        self._next_send = 0.0

    def _open(self) -> zmq.Socket:
        socket = self.context.socket(zmq.REQ)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(self.endpoint)
        return socket

    def tick(self, now: float | None = None) -> None:
        """Collect a waiting reply and send the next heartbeat when due; never blocks."""
        now = time.monotonic() if now is None else now
        if self._socket is None:
            self._socket = self._open()
        if self._waiting_since is not None:
            try:
                reply = self._socket.recv(zmq.NOBLOCK)
                self.replies += reply == HEARTBEAT_REPLY
                self._waiting_since = None
            except zmq.Again:
                if now - self._waiting_since > 2.5 * self.interval_s:
                    # Lazy-pirate: a REQ socket with no reply is stuck; start a fresh one.
                    self._socket.close(0)
                    self._socket = self._open()
                    self._waiting_since = None
                    self.overdue += 1
        if self._waiting_since is None and now >= self._next_send:
            self._socket.send(self.message, zmq.NOBLOCK)
            self.sent += 1
            self._waiting_since = now
            self._next_send = now + self.interval_s

    def close(self) -> None:
        """Close the REQ socket."""
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None


@dataclass
class RawLog:
    """Raw messages as received: ``frames[i]`` arrived at ``receive_times[i]`` (time.monotonic)."""

    frames: list[list[bytes]] = field(default_factory=list)
    receive_times: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class StreamStats:
    """Counters a session reports: messages, malformed ones (with their errors), gaps and restarts."""

    messages: int = 0
    malformed: int = 0
    malformed_errors: list[str] = field(default_factory=list)
    gaps: int = 0
    lost_messages: int = 0
    restarts: int = 0
    first_receive_time: float | None = None
    last_receive_time: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}


class ZmqReader:
    """Subscribes to an Open Ephys ZMQ Interface data port and yields normalised records."""

    #: Malformed-message errors kept verbatim (the count keeps going).
    KEEP_ERRORS = 20

    def __init__(self, endpoint: str, heartbeat_endpoint: str | None = None, *, application: str = "rig",
                 heartbeat_interval_s: float = 2.0, keep_data_payloads: bool = False,
                 max_messages_per_read: int = 100_000) -> None:
        self.endpoint = endpoint
        self.heartbeat_endpoint = heartbeat_endpoint
        self.application = application
        self.uuid = str(uuidlib.uuid4())
        self.heartbeat_interval_s = heartbeat_interval_s
        self.keep_data_payloads = keep_data_payloads
        self.max_messages_per_read = max_messages_per_read
        self.stats = StreamStats()
        self.raw = RawLog()
        self.heartbeat: HeartbeatClient | None = None
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._expected: int | None = None  # next message_num
        self._last_sample = 0

    def __enter__(self) -> "ZmqReader":
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        # Unbounded receive queue: while the display runs, messages wait here, not in the sender's 1000-slot queue.
        self._socket.setsockopt(zmq.RCVHWM, 0)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(self.endpoint)
        if self.heartbeat_endpoint:
            self.heartbeat = HeartbeatClient(self._context, self.heartbeat_endpoint, self.application, self.uuid,
                                             self.heartbeat_interval_s)
            self.heartbeat.tick()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close sockets; safe to call twice."""
        if self.heartbeat is not None:
            self.heartbeat.close()
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def get_initial(self) -> dict[str, Any]:
        """What this reader is connected to (for provenance)."""
        return {"endpoint": self.endpoint, "heartbeat_endpoint": self.heartbeat_endpoint,
                "application": self.application, "uuid": self.uuid}

    def read_next(self) -> list[Record]:
        """Records of every message waiting now; ``[]`` when none. Never blocks."""
        if self._socket is None:
            raise RuntimeError("ZmqReader is not open; use it as a context manager")
        if self.heartbeat is not None:
            self.heartbeat.tick()
        records: list[Record] = []
        for _ in range(self.max_messages_per_read):
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            records.extend(self.handle(frames, time.monotonic()))
        return records

    def wait(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until a message is waiting (a bounded poll, not a sleep)."""
        if self._socket is None:
            raise RuntimeError("ZmqReader is not open; use it as a context manager")
        return bool(self._socket.poll(max(0, int(timeout_s * 1000))))

    def handle(self, frames: list[bytes], receive_time: float) -> list[Record]:
        """Log, parse and check the counters of one message (public so file replay can feed frames)."""
        stats = self.stats
        stats.messages += 1
        stats.first_receive_time = stats.first_receive_time or receive_time
        stats.last_receive_time = receive_time
        try:
            msg = parse_message(frames)
        except WireError as exc:
            stats.malformed += 1
            if len(stats.malformed_errors) < self.KEEP_ERRORS:
                stats.malformed_errors.append(str(exc))
            self._log(frames, receive_time, keep_payload=True)
            return []
        self._log(frames, receive_time, keep_payload=self.keep_data_payloads or not isinstance(msg, DataMessage))
        records: list[Record] = []
        sample = msg.sample_num
        num = msg.message_num
        if self._expected is not None and num != self._expected:
            if num < self._expected:
                stats.restarts += 1
                records.append(Discontinuity("restart", msg.stream, self._last_sample, sample, 0, receive_time))
                self._last_sample = 0
            else:
                lost = num - self._expected
                stats.gaps += 1
                stats.lost_messages += lost
                records.append(Discontinuity("gap", msg.stream, self._last_sample, sample, lost, receive_time))
        self._expected = num + 1
        record = normalise(msg, receive_time)
        self._last_sample = max(self._last_sample, msg.end_sample if isinstance(msg, DataMessage) else sample)
        records.append(record)
        return records

    def _log(self, frames: list[bytes], receive_time: float, keep_payload: bool) -> None:
        if not keep_payload and len(frames) == 3 and frames[0] == DATA_ENVELOPE:
            frames = frames[:2]  # header only: the watermark and counters stay replayable
        self.raw.frames.append([bytes(f) for f in frames])
        self.raw.receive_times.append(receive_time)

    def take_raw(self) -> RawLog:
        """Raw messages since the last call (the reader forgets them)."""
        raw, self.raw = self.raw, RawLog()
        return raw


def describe_stats(reader: ZmqReader) -> str:
    """One line for logs: counts of messages, malformed ones, gaps and restarts."""
    return json.dumps(reader.stats.as_dict())
