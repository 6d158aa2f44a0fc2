"""The ``lsl`` gaze source: an eye tracker's Lab Streaming Layer stream (x, y at a regular rate).

Many trackers publish their gaze over LSL (Tobii Pro, Pupil Labs, EyeLink
bridges, iMotions), and ``rig sim-rig --transport lsl --gaze-adc ADC1,ADC2``
publishes its monkey's eye signals as ``NAME-analog``::

    [gaze]
    source = "lsl"
    stream = "EyeTracker"        # the stream's LSL name (resolved by name at start)
    channels = ["x", "y"]        # X and Y: channel labels (desc/channels/channel/label) or 0-based indices
    calibration = "identity"     # the stream is in degrees already; else a file mapping raw -> degrees (rig calibrate)
    rate_hz = 1000               # a faster stream is averaged in blocks down to this (0: every sample)
    valid_range = [-1e6, 1e6]    # raw values at or beyond either bound are no gaze (volts: the rails)

**Clock.** Each sample's LSL timestamp (the sender's ``local_clock``) is put
on this computer's LSL clock with ``inlet.time_correction()`` (measured at
start, asked again every :data:`CORRECTION_EVERY_S`, and, as the LSL
recording transport does, a newer value replaces the one in use only when it
differs by more than :data:`~rig.recording.lsl.wire.CORRECTION_STEP_S`), then
on ``time.monotonic`` (``pylsl.local_clock()`` is CLOCK_MONOTONIC on Linux;
the difference is read once at start on every system), then on the display's
clock. The timestamps say when the tracker took the samples, so there is no
envelope to estimate; what is left is the tracker's own latency.

**Reading.** The trial machine's :meth:`~rig.behavior.gaze.base.GazeSource.read`
pulls what the inlet holds without waiting (``pull_chunk(timeout=0)``; liblsl
receives in its own thread), converts it and returns what is stamped up to
``until``; later samples wait for the next read. A sample whose time is not
after the last one's (a sender restarting its clock) is dropped and counted;
a jump of more than one period and a half restarts the averaging (counted as
a gap). The calibration and drift correction are the raw-source base's
(:class:`~rig.behavior.gaze.raw.RawGazeSource`).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from protocols.registry import option
from rig.behavior.gaze.base import GAZE_SOURCES, GazeError, GazeSamples
from rig.behavior.gaze.raw import RawOptions
from rig.behavior.gaze.recording import MAX_QUEUED_S, Decimator, FedGazeSource, SampleQueue

__all__ = ["LslGaze", "LslGazeFeed", "LslGazeOptions", "LslGazeStats"]

#: time_correction() is asked again this often (liblsl measures it in the background).
CORRECTION_EVERY_S = 2.0
#: How long the first time_correction() may take (liblsl's first measurement takes ~0.6 s).
FIRST_CORRECTION_S = 3.0
#: Most samples pulled at once.
MAX_PULL = 1 << 16


@dataclass
class LslGazeStats:
    """What the feed pulled and could not use."""

    samples: int = 0
    invalid_samples: int = 0
    gaps: int = 0
    out_of_order: int = 0
    correction_s: float | None = None
    corrections_measured: int = 0
    corrections_applied: int = 0


def _labels(info: Any) -> list[str]:
    """The channel labels of a stream's description (empty strings where none)."""
    labels: list[str] = []
    channel = info.desc().child("channels").child("channel")
    for _ in range(info.channel_count()):
        labels.append(channel.child_value("label") if not channel.empty() else "")
        channel = channel.next_sibling() if not channel.empty() else channel
    return labels


def pick_channels(wanted: Sequence[str], labels: list[str], count: int, stream: str) -> tuple[int, int]:
    """Indices of ``wanted`` (labels first, then 0-based indices); GazeError names what the stream has."""
    indices = []
    for name in wanted:
        if name in labels:
            indices.append(labels.index(name))
        elif name.isdigit() and int(name) < count:
            indices.append(int(name))
        else:
            raise GazeError(f"LSL stream {stream!r} has no channel {name!r}: its {count} channel(s) are labelled "
                            f"{labels} (name one by label or by 0-based index)")
    return indices[0], indices[1]


class LslGazeFeed:
    """Pulls x and y (raw) from one LSL stream and queues them on the display's clock (module docstring)."""

    def __init__(self, stream: str, channels: Sequence[str], *, valid_range: tuple[float, float] = (-1e6, 1e6),
                 rate_hz: float = 1000.0, monotonic_offset: float = 0.0, resolve_timeout_s: float = 5.0) -> None:
        self.stream, self.wanted = stream, tuple(channels)
        self.low, self.high = valid_range
        self.rate_hz, self.monotonic_offset, self.resolve_timeout_s = rate_hz, monotonic_offset, resolve_timeout_s
        self.stats = LslGazeStats()
        self.inlet: Any = None
        self.info: dict[str, Any] = {}
        self._last_stamp = -math.inf
        self._last_time = -math.inf
        self._next_correction = 0.0

    def open(self) -> None:
        """Resolve the stream by name, open it and measure its clock; GazeError says what is missing."""
        import pylsl

        found = pylsl.resolve_byprop("name", self.stream, 1, self.resolve_timeout_s)
        if not found:
            visible = sorted({i.name() for i in pylsl.resolve_streams(0.5)})
            raise GazeError(f"no LSL stream named {self.stream!r} within {self.resolve_timeout_s:g} s (visible: "
                            f"{visible or 'none'}); is the tracker's outlet running, on this network?")
        info = found[0]
        srate, count = info.nominal_srate(), info.channel_count()
        if srate <= 0 or count < 2 or info.channel_format() == pylsl.cf_string:
            raise GazeError(f"LSL stream {self.stream!r}: gaze needs a regular-rate numeric stream of at least 2 "
                            f"channels, got {count} channel(s) at {srate} Hz, format {info.channel_format()}")
        self.srate = srate
        self.decimator = Decimator(round(srate / self.rate_hz) if self.rate_hz and srate > self.rate_hz else 1)
        self.queue = SampleQueue(int(MAX_QUEUED_S * min(srate, self.rate_hz or srate)))
        self.inlet = pylsl.StreamInlet(info, max_buflen=int(MAX_QUEUED_S), recover=True)
        try:
            # A resolved info has no description; the inlet's has the channel labels.
            self.ix, self.iy = pick_channels(self.wanted, _labels(self.inlet.info(self.resolve_timeout_s)), count,
                                             self.stream)
        except (GazeError, pylsl.util.TimeoutError) as exc:
            self.close()
            if isinstance(exc, GazeError):
                raise
            raise GazeError(f"LSL stream {self.stream!r}: its description did not come within "
                            f"{self.resolve_timeout_s:g} s") from None
        self.inlet.open_stream(self.resolve_timeout_s)
        try:
            self.correction = self.inlet.time_correction(FIRST_CORRECTION_S)
        except pylsl.util.TimeoutError:
            raise GazeError(f"LSL stream {self.stream!r}: no clock offset within {FIRST_CORRECTION_S:g} s "
                            f"(time_correction); is the sender still there?") from None
        self.stats.correction_s, self.stats.corrections_measured = self.correction, 1
        before = time.monotonic()
        local = pylsl.local_clock()
        self.lsl_to_monotonic = (before + time.monotonic()) / 2 - local
        self._next_correction = time.monotonic() + CORRECTION_EVERY_S
        self.info = {"name": info.name(), "type": info.type(), "host": info.hostname(), "source_id": info.source_id(),
                     "srate": srate, "channels": count, "x": self.ix, "y": self.iy, "decimate": self.decimator.k}

    def _correct(self) -> None:
        import pylsl
        from rig.recording.lsl.wire import CORRECTION_STEP_S

        try:
            value = self.inlet.time_correction(0.0)
        except pylsl.util.TimeoutError:
            return
        self.stats.corrections_measured += 1
        if abs(value - self.correction) > CORRECTION_STEP_S:
            self.correction = value
            self.stats.corrections_applied += 1
            self.stats.correction_s = value

    def pull(self) -> None:
        """Move what the inlet holds into the queue (never waits)."""
        if time.monotonic() >= self._next_correction:
            self._correct()
            self._next_correction = time.monotonic() + CORRECTION_EVERY_S
        values, stamps = self.inlet.pull_chunk(0.0, max_samples=MAX_PULL, as_numpy=True)
        if not len(stamps):
            return
        stamps = np.asarray(stamps, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64).reshape(len(stamps), -1)
        later = np.concatenate(([stamps[0] > self._last_stamp], np.diff(stamps) > 0))
        if not later.all():
            self.stats.out_of_order += int((~later).sum())
            stamps, values = stamps[later], values[later]
            if not len(stamps):
                return
        period = 1.0 / self.srate
        jumps = np.diff(np.concatenate(([self._last_stamp], stamps))) > 1.5 * period
        if jumps[0] and math.isfinite(self._last_stamp):
            self.stats.gaps += 1
            self.decimator.reset()
        self._last_stamp = float(stamps[-1])
        for i, piece in enumerate(np.split(np.arange(len(stamps)), np.flatnonzero(jumps[1:]) + 1)):
            if i:  # a jump inside the chunk
                self.stats.gaps += 1
                self.decimator.reset()
            self._queue(stamps[piece], values[piece, self.ix], values[piece, self.iy])

    def _queue(self, stamps: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        with np.errstate(invalid="ignore"):
            ok = (u > self.low) & (u < self.high) & (v > self.low) & (v < self.high)
        t, u, v, ok = self.decimator.push(stamps, u, v, ok)
        if not len(t):
            return
        times = t + (self.correction + self.lsl_to_monotonic - self.monotonic_offset)
        x, y = np.where(ok, u, np.nan), np.where(ok, v, np.nan)
        keep = times > self._last_time
        if not keep.all():
            self.stats.out_of_order += int((~keep).sum())
            times, x, y, ok = times[keep], x[keep], y[keep], ok[keep]
            if not len(times):
                return
        self._last_time = float(times[-1])
        self.stats.samples += len(times)
        self.stats.invalid_samples += int((~ok).sum())
        self.queue.put(times, x, y, ok)

    def take(self, until: float) -> GazeSamples:
        self.pull()
        return self.queue.take(until)

    def health(self) -> dict[str, Any]:
        return {**asdict(self.stats), "stream": dict(self.info),
                "queued": len(self.queue) if self.inlet is not None else 0,
                "dropped_unread": self.queue.dropped if self.inlet is not None else 0}

    def close(self) -> None:
        if self.inlet is not None:
            self.inlet.close_stream()
            self.inlet = None


@dataclass(frozen=True)
class LslGazeOptions(RawOptions):
    """``[gaze] source = "lsl"``: an eye tracker's LSL stream (module docstring); ``calibration`` ("identity" for a
    stream in degrees) and ``drift_correction`` are every raw source's."""

    #: The stream's LSL name.
    stream: str = option("", valid="the LSL stream's name, e.g. the tracker's outlet (required)")
    #: X and Y: channel labels, or 0-based indices written as text ("0", "1").
    channels: tuple[str, str] = option(("0", "1"), valid="[X, Y]: channel labels or 0-based indices, e.g. "
                                                         "[\"x\", \"y\"] or [\"0\", \"1\"]")
    rate_hz: float = option(1000.0, low=0.0, high=100_000.0, valid="samples per second in [0, 100000] (0: all)")
    valid_range: tuple[float, float] = option((-1e6, 1e6), valid="[low, high], low < high")
    resolve_timeout_s: float = option(5.0, low=0.1, high=600.0, valid="seconds in [0.1, 600]")

    def check(self) -> None:
        if not self.stream:
            self.invalid("stream", "the LSL stream's name")
        if self.channels[0] == self.channels[1] or not all(self.channels):
            self.invalid("channels", f"[X, Y]: two different channels, got {list(self.channels)}")
        if not self.valid_range[0] < self.valid_range[1]:
            self.invalid("valid_range", f"[low, high] with low < high, got {list(self.valid_range)}")


@GAZE_SOURCES.register("lsl", LslGazeOptions)
class LslGaze(FedGazeSource):
    """Gaze from an LSL stream, resolved by name at :meth:`start` (a missing stream fails there).

    ``monotonic_offset`` (display time = time.monotonic() - offset) may be set before :meth:`start` for a display
    clock other than time.monotonic and PsychoPy's.
    """

    def _open_feed(self, offset: float) -> LslGazeFeed:
        o = self.options
        feed = LslGazeFeed(o.stream, o.channels, valid_range=o.valid_range, rate_hz=o.rate_hz, monotonic_offset=offset,
                           resolve_timeout_s=o.resolve_timeout_s)
        feed.open()
        return feed
