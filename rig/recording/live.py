"""What every live reader shares: records handed from its thread to the caller (Reader contract, STYLE practice 1).

A transport's live reader (:class:`~rig.recording.openephys.reader.ZmqReader`,
:class:`~rig.recording.lsl.reader.LslReader`) runs a thread that receives all
the time and feeds a parser; it hands records over through :meth:`LiveReader.deliver`.
The caller's side is the same for every transport: :meth:`read_next` never
blocks, :meth:`wait` is a bounded wait, :meth:`take` returns records and the
showing's log at one instant. Bounded: past ``max_pending`` records the thread
waits (counted as back-pressure) and the transport's own buffer takes the load.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from rig.recording.records import Record
from rig.recording.stream_log import StreamLog


class ChannelTap(Protocol):
    """Decodes a few continuous channels in a live reader's thread (e.g. an eye tracker's analog outputs on ADC
    inputs; :mod:`rig.behavior.gaze.recording`), while every other channel stays a watermark.

    The reader calls it from its thread, under its lock, for each message as it comes off the transport: it must
    return at once (copy what it needs, hand it on through a lock of its own, never wait for the caller). What it
    raises is counted in the parser's ``tap_errors`` and never stops the reader.
    """

    #: The channel names (``channel_name`` of a DATA header, e.g. ``"ADC1"``) whose payloads it wants.
    channels: frozenset[str]

    def data(self, stream: str, channel: str, sample_num: int, rate: float, payload: bytes,
             receive_time: float) -> None:
        """A well-formed DATA message of a tapped channel: ``payload`` is its little-endian float32 samples."""

    def watermark(self, stream: str, end_sample: int, rate: float, receive_time: float) -> None:
        """The first DATA message of a callback (of any channel) arrived at ``receive_time`` (time.monotonic)."""


class ReaderFailedError(RuntimeError):
    """The reader thread stopped on an error it could not count and skip (the transport itself failed)."""


@dataclass
class ReaderHealth:
    """How well the reader thread keeps up: pending records, back-pressure and the transport's queue bound."""

    pending: int = 0
    max_pending_seen: int = 0
    backpressure_waits: int = 0
    receive_hwm: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return dict(self.__dict__)


class LiveReader:
    """The caller's side of a live reader; a subclass has ``parser`` (with ``stats`` and ``take_log()``),
    ``endpoint``, ``_is_open()``, and a thread that calls :meth:`deliver`."""

    def __init__(self, max_pending: int, receive_hwm: int = 0) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.health = ReaderHealth(receive_hwm=receive_hwm)
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._pending: list[Record] = []
        self._stop = threading.Event()
        self._failure: BaseException | None = None

    endpoint: str = ""
    _thread: threading.Thread | None = None

    def _is_open(self) -> bool:
        raise NotImplementedError

    def _start_thread(self, target, name: str) -> None:
        """Start the receiving thread (``target`` runs until :attr:`_stop` is set)."""
        self._stop.clear()
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def _stop_thread(self, timeout_s: float) -> None:
        """Ask the receiving thread to stop and wait up to ``timeout_s`` for it; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    @property
    def stats(self):
        """The parser's counters (read them between calls; the thread updates them)."""
        return self.parser.stats

    def add_tap(self, tap: ChannelTap) -> None:
        """Hand ``tap`` the payloads of its channels from now on (before or after the reader is entered)."""
        add = getattr(self.parser, "add_tap", None)
        if add is None:
            raise ValueError(f"{type(self).__name__} ({self.endpoint}) carries no continuous channels to tap")
        with self._lock:
            add(tap)

    # ------------------------------------------------------------------ the caller's side

    def read_next(self) -> list[Record]:
        """Records that arrived since the last call; ``[]`` when none. Never blocks."""
        self._check_open()
        with self._lock:
            records, self._pending = self._pending, []
            self.health.pending = 0
        return records

    def wait(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until records are waiting (a bounded wait, not a sleep)."""
        self._check_open()
        with self._arrived:
            if not self._pending:
                self._arrived.wait(max(0.0, timeout_s))
            return bool(self._pending)

    def take_raw(self) -> StreamLog:
        """The compact log since the last call (the reader forgets it)."""
        with self._lock:
            return self.parser.take_log()

    def take(self) -> tuple[list[Record], StreamLog, dict[str, Any]]:
        """Records not yet read, the log and the counters, at one instant.

        A showing's scorer sees exactly what its log holds, and the counters stored with the showing count
        exactly the messages up to its log's end (read after the lock, they could count one more that the
        thread handled meanwhile, which no replay of the stored log would find).
        """
        self._check_open()
        with self._lock:
            records, self._pending = self._pending, []
            self.health.pending = 0
            return records, self.parser.take_log(), self.parser.stats.as_dict()

    def _check_open(self) -> None:
        if not self._is_open():
            raise RuntimeError(f"{type(self).__name__} is not open; use it as a context manager")
        if self._failure is not None:
            raise ReaderFailedError(f"the reader of {self.endpoint} stopped: "
                                    f"{type(self._failure).__name__}: {self._failure}") from self._failure

    # ------------------------------------------------------------------ the thread's side

    def handle_locked(self, handle, *args) -> None:
        """Run ``handle(*args)`` (a parser call returning records) under the lock and hand its records over."""
        self._wait_for_room()
        with self._lock:
            records = handle(*args)
            if records:
                self._pending.extend(records)
                health = self.health
                health.pending = len(self._pending)
                health.max_pending_seen = max(health.max_pending_seen, health.pending)
                self._arrived.notify_all()

    def _wait_for_room(self) -> None:
        # Back-pressure: the caller is not reading; let the transport's bounded queue take the load.
        while len(self._pending) >= self.max_pending and not self._stop.is_set():
            self.health.backpressure_waits += 1
            time.sleep(0.001)
