"""LSL chunks as logged messages, and the parser that turns them into records (shared by live and replay).

A message is three frames: :data:`ENVELOPE` (``b"LSL\\x00"``), a JSON header
and a binary payload (little-endian). Header ``kind``:

- ``"clock"``: one regular run of ``NAME-clock`` samples (the reader cuts a
  pulled chunk where its timestamps jump): ``{"kind", "host", "srate", "n",
  "first", "last"}`` (the run's first and last sender timestamps); empty
  payload (the values are not needed, only how far the stream got);
- ``"spikes"`` / ``"ttl"``: ``{"kind", "host", "n"}``; payload ``n`` float64
  sender timestamps then ``n x 2`` int32 values (``[electrode, unit]`` or
  ``[line, state]``);
- ``"correction"``: ``{"kind", "host", "inlet", "value"}``: a
  ``time_correction()`` measurement (seconds to add to the host's timestamps).

A message that is not one of these, or a sample whose values are out of
range (negative electrode or unit, line outside 0..63, state not 0/1,
non-finite timestamp), is counted as malformed and skipped, never raised.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from rig.recording.records import Discontinuity, Record, Spike, Ttl, Watermark
from rig.recording.openephys.reader import StreamStats
from rig.recording.stream_log import StreamLog

ENVELOPE = b"LSL\x00"
#: rig's sample clock for LSL streams: samples per LSL second.
NOMINAL_RATE = 30000.0
#: A newer time_correction() replaces the applied one only when it differs by more than this (seconds).
CORRECTION_STEP_S = 0.001
#: Clock timestamps may wander this far (seconds) from one sample period apart before it is a gap or restart.
GAP_TOLERANCE_S = 0.002
TTL_LINES = 64
EVENT_KINDS = ("spikes", "ttl")


class LslWireError(ValueError):
    """A logged LSL message that cannot be read."""


def format_clock(host: str, srate: float, first: float, last: float, n: int) -> list[bytes]:
    """A regular run of clock samples as a logged message."""
    header = {"kind": "clock", "host": host, "srate": srate, "n": int(n), "first": float(first), "last": float(last)}
    return [ENVELOPE, json.dumps(header).encode(), b""]


def format_events(kind: str, host: str, timestamps: np.ndarray, values: np.ndarray) -> list[bytes]:
    """A pulled chunk of the spike or TTL stream as a logged message."""
    timestamps = np.ascontiguousarray(timestamps, dtype="<f8")
    values = np.ascontiguousarray(values, dtype="<i4").reshape(len(timestamps), 2)
    header = {"kind": kind, "host": host, "n": len(timestamps)}
    return [ENVELOPE, json.dumps(header).encode(), timestamps.tobytes() + values.tobytes()]


def format_correction(host: str, inlet: str, value: float) -> list[bytes]:
    """A time_correction() measurement as a logged message."""
    return [ENVELOPE, json.dumps({"kind": "correction", "host": host, "inlet": inlet,
                                  "value": float(value)}).encode(), b""]


def parse(frames: list[bytes]) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """(header, timestamps, values) of a logged message; LslWireError when it is not one."""
    if len(frames) != 3 or bytes(frames[0]) != ENVELOPE:
        raise LslWireError(f"expected 3 frames starting {ENVELOPE!r}, got {len(frames)}")
    try:
        header = json.loads(bytes(frames[1]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LslWireError(f"header is not JSON: {exc}") from None
    kind = header.get("kind") if isinstance(header, dict) else None
    if not isinstance(header.get("host") if isinstance(header, dict) else None, str):
        raise LslWireError(f"header has no host: {str(header)[:100]}")
    if kind == "correction":
        if not _finite(header.get("value")) or not isinstance(header.get("inlet"), str):
            raise LslWireError(f"correction needs a finite value and an inlet: {header}")
        return header, None, None
    n = header.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise LslWireError(f"{kind!r} message: n must be an integer >= 1, got {n!r}")
    if kind == "clock":
        srate, first, last = header.get("srate"), header.get("first"), header.get("last")
        if not (_finite(srate) and srate > 0 and _finite(first) and _finite(last)) or last < first:
            raise LslWireError(f"clock message needs srate > 0 and finite first <= last: {header}")
        return header, None, None
    if kind not in EVENT_KINDS:
        raise LslWireError(f"unknown kind {kind!r}; valid: clock, correction, {', '.join(EVENT_KINDS)}")
    payload = bytes(frames[2])
    if len(payload) != n * 16:
        raise LslWireError(f"{kind} message of {n} samples needs {n * 16} payload bytes, got {len(payload)}")
    timestamps = np.frombuffer(payload[:n * 8], dtype="<f8")
    values = np.frombuffer(payload[n * 8:], dtype="<i4").reshape(n, 2)
    return header, timestamps, values


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sample_error(kind: str, timestamp: float, a: int, b: int) -> str:
    """Why one spike or TTL sample is out of range ("" when it is fine)."""
    if not math.isfinite(timestamp):
        return f"{kind} sample with timestamp {timestamp}"
    if kind == "spikes" and (a < 0 or b < 0):
        return f"spike sample [electrode {a}, unit {b}]: both must be >= 0"
    if kind == "ttl" and (not 0 <= a < TTL_LINES or b not in (0, 1)):
        return f"ttl sample [line {a}, state {b}]: line must be 0..{TTL_LINES - 1}, state 0 or 1"
    return ""


class LslParser:
    """Logged LSL messages in, records out: clock offsets, gaps and restarts, counters and the log.

    The live reader feeds it from its thread, the file replay what a session
    stored (the same :meth:`handle`), so both count and log alike. ``stream``
    is the name the records carry.
    """

    KEEP_ERRORS = 20

    def __init__(self, stream: str = "lsl", rate: float = NOMINAL_RATE) -> None:
        self.stream = stream
        self.rate = rate
        self.stats = StreamStats()
        self.log = StreamLog()
        #: Applied clock offset per sending host, and every measurement as (host, inlet, value, applied).
        self.corrections: dict[str, float] = {}
        self.measured: list[tuple[str, str, float, bool]] = []
        self._last_clock: float | None = None  # the last clock sample's sender timestamp
        self._last_sample = 0
        self._seq = 0

    def sample(self, host: str, timestamp: float) -> int:
        """A sender timestamp on rig's sample clock."""
        return int(round((timestamp + self.corrections.get(host, 0.0)) * self.rate))

    def handle(self, frames: list[bytes], receive_time: float) -> list[Record]:
        """Parse, count and log one message; its records (none for a malformed one)."""
        seq = self._seq
        self._seq += 1
        stats = self.stats
        stats.messages += 1
        if stats.first_receive_time is None:
            stats.first_receive_time = receive_time
        stats.last_receive_time = receive_time
        try:
            header, timestamps, values = parse(frames)
        except LslWireError as exc:
            self._malformed(seq, frames, receive_time, str(exc))
            return []
        self.log.add_raw(seq, frames, receive_time)
        host, kind = header["host"], header["kind"]
        if kind == "correction":
            value = float(header["value"])
            applied = host not in self.corrections or abs(value - self.corrections[host]) > CORRECTION_STEP_S
            if applied:
                self.corrections[host] = value
            self.measured.append((host, header["inlet"], value, applied))
            return []
        if kind == "clock":
            return self._clock(header, receive_time)
        records: list[Record] = []
        for t, (a, b) in zip(timestamps.tolist(), values.tolist()):
            error = sample_error(kind, t, a, b)
            if error:
                self._malformed(seq, frames, receive_time, error, log=False)
                continue
            sample = self.sample(host, t)
            self._last_sample = max(self._last_sample, sample)
            records.append(Spike(self.stream, sample, f"Electrode {a}", b) if kind == "spikes"
                           else Ttl(self.stream, sample, a, b))
        return records

    def _clock(self, header: dict[str, Any], receive_time: float) -> list[Record]:
        host, srate, first, last = header["host"], header["srate"], header["first"], header["last"]
        period = 1.0 / srate
        records: list[Record] = []
        previous = self._last_clock
        if previous is not None:
            step = first - previous
            if step < period - GAP_TOLERANCE_S:
                self.stats.restarts += 1
                records.append(Discontinuity("restart", self.stream, self._last_sample, self.sample(host, first), 0,
                                             receive_time))
                self._last_sample = 0
            elif step > period + GAP_TOLERANCE_S:
                lost = max(1, int(round(step * srate)) - 1)
                self.stats.gaps += 1
                self.stats.lost_messages += lost
                records.append(Discontinuity("gap", self.stream, self._last_sample, self.sample(host, first), lost,
                                             receive_time))
        self._last_clock = last
        end = self.sample(host, last + period)
        self._last_sample = max(self._last_sample, end)
        records.append(Watermark(self.stream, end, self.rate, receive_time))
        return records

    def count_malformed(self, count: int) -> None:
        """Replay malformed messages a session only counted."""
        self.stats.messages += count
        self.stats.malformed += count

    def take_log(self) -> StreamLog:
        """The log since the last call."""
        log, self.log = self.log, StreamLog()
        return log

    def _malformed(self, seq: int, frames: list[bytes], receive_time: float, error: str, log: bool = True) -> None:
        stats = self.stats
        stats.malformed += 1
        if len(stats.malformed_errors) < self.KEEP_ERRORS:
            stats.malformed_errors.append(error[:300])
        if log:  # a bad sample inside a good message is not: the message is kept raw, and replays alike
            self.log.add_malformed(seq, frames, receive_time, error)


def regular_runs(timestamps: np.ndarray, srate: float) -> list[tuple[int, int]]:
    """[start, stop) index ranges of a pulled clock chunk whose timestamps step by one period (within tolerance)."""
    if len(timestamps) == 0:
        return []
    steps = np.diff(np.asarray(timestamps, dtype=np.float64))
    cuts = np.flatnonzero(np.abs(steps - 1.0 / srate) > GAP_TOLERANCE_S) + 1
    bounds = [0, *cuts.tolist(), len(timestamps)]
    return list(zip(bounds[:-1], bounds[1:]))
