"""The live reader of an Open Ephys ZMQ Interface stream (Reader contract, STYLE practice 1).

``with ZmqReader(endpoint) as reader:`` connects and starts a thread that
drains the socket all the time, the display's frames included: a Neuropixels
probe sends ~16.6k messages/s, and a stream left in the socket while stimuli
are shown cannot be caught up afterwards. :meth:`ZmqReader.read_next` never
blocks: it returns the normalised records that arrived since the last call
(possibly none). The caller polls with its own time budget.

The thread

- stamps each message with ``time.monotonic()`` the moment it comes off the
  socket (the arrival time bounds the recording clock's offset, so it must not
  include how long the controller was busy);
- parses it with :class:`StreamParser` (shared with the file replay): the
  pure functions of :mod:`rig.recording.openephys.wire`, ``message_num``
  counters (a jump forward is a gap, a step back an acquisition restart; both
  become :class:`~rig.recording.openephys.wire.Discontinuity` records), and a
  compact log (:mod:`rig.recording.stream_log`): events and spikes as
  received, continuous data as one watermark run per callback;
- hands the payloads of a few named channels to taps
  (:class:`~rig.recording.live.ChannelTap`, e.g. eye signals on ADC inputs,
  :mod:`rig.behavior.gaze.recording`): only those are decoded; every other
  channel costs a set lookup more than before;
- never raises on a bad message: it is counted, described (bounded) and
  treated as lost, so the next good one shows up as a gap;
- holds at most ``max_pending`` records for the caller; past that it waits
  (counted as back-pressure) and the socket's bounded queue (``RCVHWM``)
  fills, so the sender drops messages, which the counters report as gaps:
  memory stays bounded however far behind the caller falls;
- sends heartbeats to the REP port with a REQ socket, re-opening the socket
  when a reply is overdue (a REQ socket cannot send twice without a reply).
"""
from __future__ import annotations

import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

import zmq

from rig.recording.openephys.wire import (DATA_ENVELOPE, HEARTBEAT_REPLY, WireError, format_heartbeat, normalise,
                                          parse_data_watermark, parse_message)
from rig.recording.live import LiveReader
from rig.recording.records import Discontinuity, Record, Watermark
from rig.recording.stream_log import DataRun, StreamLog


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
class StreamStats:
    """Counters a session reports: messages, malformed ones (with their first errors), gaps and restarts."""

    messages: int = 0
    malformed: int = 0
    malformed_errors: list[str] = field(default_factory=list)
    #: Calls of a channel tap that raised (the message still counted and logged as usual), and the first errors.
    tap_errors: int = 0
    tap_error_messages: list[str] = field(default_factory=list)
    gaps: int = 0
    lost_messages: int = 0
    restarts: int = 0
    first_receive_time: float | None = None
    last_receive_time: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}


class StreamParser:
    """Messages in, normalised records out: parsing, counters and the compact log, with no socket.

    The live reader feeds it from its thread; the file replay feeds it what a
    session stored (raw messages through :meth:`handle`, data runs through
    :meth:`handle_run`), so both count and log exactly alike.
    """

    #: Malformed-message errors kept verbatim in the counters (the count keeps going).
    KEEP_ERRORS = 20

    def __init__(self, keep_data_payloads: bool = False) -> None:
        self.keep_data_payloads = keep_data_payloads
        self.stats = StreamStats()
        self.log = StreamLog()
        self._expected: int | None = None  # next message_num
        self._last_sample = 0
        self._seq = 0
        self._run: DataRun | None = None  # the callback being received: a message continuing it adds no record
        self.taps: tuple = ()  # ChannelTap objects (replaced whole, never mutated: the thread iterates it)
        self._tapped: frozenset[str] = frozenset()

    def add_tap(self, tap) -> None:
        """Hand ``tap`` (a :class:`~rig.recording.live.ChannelTap`) its channels' payloads from the next message on."""
        self.taps = (*self.taps, tap)
        self._tapped = frozenset().union(*(t.channels for t in self.taps))

    def _tap(self, new_run: bool, stream: str, name: str, sample: int, end: int, rate: float, frames: list[bytes],
             receive_time: float) -> None:
        for tap in self.taps:
            try:
                if new_run:
                    tap.watermark(stream, end, rate, receive_time)
                if name in tap.channels:
                    tap.data(stream, name, sample, rate, frames[2], receive_time)
            except Exception as exc:  # noqa: BLE001 - a tap (gaze) must never stop the recording's reader
                stats = self.stats
                stats.tap_errors += 1
                if len(stats.tap_error_messages) < self.KEEP_ERRORS:
                    stats.tap_error_messages.append(f"{type(tap).__name__}: {type(exc).__name__}: {exc}"[:300])

    def handle(self, frames: list[bytes], receive_time: float) -> list[Record]:
        """Parse, count and log one message as received; its records (none for a malformed one)."""
        seq = self._seq
        self._seq += 1
        self._arrived(receive_time)
        if len(frames) >= 2 and frames[0] == DATA_ENVELOPE:
            try:
                num, stream, sample, num_samples, rate, _, name = parse_data_watermark(frames)
            except WireError as exc:
                return self._malformed(seq, frames, receive_time, exc)
            if self.keep_data_payloads:
                self.log.add_raw(seq, frames, receive_time)
            run = self._run
            if run is not None and run.continues(num, stream, sample, num_samples, rate):
                run.messages += 1
                run.last_receive_time = receive_time
                self._expected = num + 1
                if name in self._tapped:
                    self._tap(False, stream, name, sample, sample + num_samples, rate, frames, receive_time)
                return []
            self._run = DataRun(seq, num, 1, sample, num_samples, rate, stream, receive_time, receive_time)
            if not self.keep_data_payloads:
                self.log.runs.append(self._run)
            if self.taps:
                self._tap(True, stream, name, sample, sample + num_samples, rate, frames, receive_time)
            return self._counted(num, stream, sample, sample + num_samples,
                                 Watermark(stream, sample + num_samples, rate, receive_time), receive_time)
        try:
            msg = parse_message(frames)
        except WireError as exc:
            return self._malformed(seq, frames, receive_time, exc)
        self.log.add_raw(seq, frames, receive_time)
        self._run = None
        return self._counted(msg.message_num, msg.stream, msg.sample_num, msg.sample_num,
                             normalise(msg, receive_time), receive_time)

    def handle_run(self, run: DataRun) -> list[Record]:
        """Replay a stored data run: the records and counts its messages gave live."""
        self._seq = run.seq + run.messages
        self._arrived(run.first_receive_time)
        self.stats.messages += run.messages - 1
        self.stats.last_receive_time = run.last_receive_time
        self._run = run
        self.log.runs.append(run)
        records = self._counted(run.first_message_num, run.stream, run.sample_num, run.end_sample,
                                Watermark(run.stream, run.end_sample, run.sample_rate, run.first_receive_time),
                                run.first_receive_time)
        self._expected = run.first_message_num + run.messages
        return records

    def count_malformed(self, count: int) -> None:
        """Replay malformed messages a session only counted (they never changed the counters' expectations)."""
        self.stats.messages += count
        self.stats.malformed += count

    def take_log(self) -> StreamLog:
        """The log since the last call; the next data message starts a new run (its watermark is re-sent)."""
        log, self.log = self.log, StreamLog()
        self._run = None
        return log

    def _arrived(self, receive_time: float) -> None:
        stats = self.stats
        stats.messages += 1
        if stats.first_receive_time is None:
            stats.first_receive_time = receive_time
        stats.last_receive_time = receive_time

    def _malformed(self, seq: int, frames: list[bytes], receive_time: float, exc: WireError) -> list[Record]:
        stats = self.stats
        stats.malformed += 1
        text = str(exc)[:300]
        if len(stats.malformed_errors) < self.KEEP_ERRORS:
            stats.malformed_errors.append(text)
        self.log.add_malformed(seq, frames, receive_time, text)
        return []

    def _counted(self, num: int, stream: str, sample: int, end_sample: int, record: Record,
                 receive_time: float) -> list[Record]:
        records: list[Record] = []
        stats = self.stats
        if self._expected is not None and num != self._expected:
            if num < self._expected:
                stats.restarts += 1
                records.append(Discontinuity("restart", stream, self._last_sample, sample, 0, receive_time))
                self._last_sample = 0
            else:
                lost = num - self._expected
                stats.gaps += 1
                stats.lost_messages += lost
                records.append(Discontinuity("gap", stream, self._last_sample, sample, lost, receive_time))
        self._expected = num + 1
        self._last_sample = max(self._last_sample, end_sample)
        records.append(record)
        return records


class ZmqReader(LiveReader):
    """Subscribes to an Open Ephys ZMQ Interface data port; a thread drains it into normalised records."""

    def __init__(self, endpoint: str, heartbeat_endpoint: str | None = None, *, application: str = "rig",
                 heartbeat_interval_s: float = 2.0, keep_data_payloads: bool = False,
                 receive_hwm: int = 50_000, max_pending: int = 500_000) -> None:
        if receive_hwm < 1 or max_pending < 1:
            raise ValueError(f"receive_hwm and max_pending must be >= 1, got {receive_hwm}, {max_pending}")
        super().__init__(max_pending, receive_hwm)
        self.endpoint = endpoint
        self.heartbeat_endpoint = heartbeat_endpoint
        self.application = application
        self.uuid = str(uuidlib.uuid4())
        self.heartbeat_interval_s = heartbeat_interval_s
        self.parser = StreamParser(keep_data_payloads)
        self.heartbeat: HeartbeatClient | None = None
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None

    @property
    def keep_data_payloads(self) -> bool:
        return self.parser.keep_data_payloads

    def __enter__(self) -> "ZmqReader":
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        # Bounded: if the thread falls behind, the sender drops and the counters say so; memory never explodes.
        self._socket.setsockopt(zmq.RCVHWM, self.health.receive_hwm)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(self.endpoint)
        if self.heartbeat_endpoint:
            self.heartbeat = HeartbeatClient(self._context, self.heartbeat_endpoint, self.application, self.uuid,
                                             self.heartbeat_interval_s)
        self._start_thread(self._drain, f"zmq-reader {self.endpoint}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the thread and close the sockets; safe to call twice."""
        self._stop_thread(5.0)
        if self.heartbeat is not None:
            self.heartbeat.close()
            self.heartbeat = None
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def get_initial(self) -> dict[str, Any]:
        """What this reader is connected to (for provenance)."""
        return {"endpoint": self.endpoint, "heartbeat_endpoint": self.heartbeat_endpoint,
                "application": self.application, "uuid": self.uuid,
                "receive_hwm": self.health.receive_hwm, "max_pending": self.max_pending}

    def _is_open(self) -> bool:
        return self._socket is not None

    # ------------------------------------------------------------------ the thread

    def _drain(self) -> None:
        socket = self._socket
        try:
            while not self._stop.is_set():
                if self.heartbeat is not None:
                    self.heartbeat.tick()
                if not socket.poll(20):
                    continue
                for _ in range(10_000):  # a burst, then heartbeats and the stop flag get a look
                    try:
                        frames = socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle_locked(self.parser.handle, frames, time.monotonic())
        except zmq.ContextTerminated:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported to the caller by read_next
            self._failure = exc
