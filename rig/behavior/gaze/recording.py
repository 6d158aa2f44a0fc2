"""The ``recording`` gaze source: an eye tracker's analog outputs, read from the recording rig already listens to.

DESIGN.md §9: eye signals may come "from its analog outputs wired into the
acquisition board". The tracker's X and Y voltages are then two continuous
channels of the recording (on an Open Ephys acquisition board, ``ADC1`` and
``ADC2``), and the neuron's own stream carries them::

    [gaze]
    source = "recording"
    channels = ["ADC1", "ADC2"]   # X and Y: the channel_name of their DATA messages (the GUI's channel names)
    calibration = "eye.toml"      # volts -> degrees (rig calibrate; a path from the working directory)
    drift_correction = 0.0        # as every raw source (rig/behavior/gaze/raw.py)
    rate_hz = 1000                # samples per second delivered (block means; 0: every sample, e.g. 30 kHz)
    delay_ms = 0                  # acquisition -> DATA message sent, if known (see "Clock" below)
    valid_volts = [-5.0, 5.0]     # a sample at or beyond either bound is no gaze (the tracker's loss level, the rails)

The session wires it to the recording before it starts
(:meth:`RecordingGaze.attach_recording`); a session whose neuron is not a
recording fails there, or at :meth:`~RecordingGaze.start`.

**Over ZeroMQ** (``--neuron zmq://...``, :mod:`rig.recording.openephys.reader`):
the reader's thread hands this source's tap (:class:`AnalogGazeTap`, a
:class:`~rig.recording.live.ChannelTap`) the payloads of the two channels only
(hundreds of others stay watermarks, as before) and the arrival time of each
callback's first DATA message. In that thread, without waiting for anyone, the
tap pairs X and Y of a callback (same ``sample_num``), averages blocks of
samples down to ``rate_hz``, stamps times on the display's clock and queues
the volts; :meth:`~RecordingGaze.read` takes the queued ones up to ``until``
under a lock of the tap's own, and the raw-source base
(:class:`~rig.behavior.gaze.raw.RawGazeSource`) applies the calibration and the
drift correction.

**Over LSL** (``--neuron lsl://NAME``): the acquisition's analog inputs are
the regular stream ``NAME-analog``, channels found by their labels (as
``rig sim-rig --transport lsl --gaze-adc`` publishes them); they are read as
the ``lsl`` gaze source reads an eye tracker's stream
(:mod:`rig.behavior.gaze.lsl`), timestamps from LSL.

**Clock (ZeroMQ).** A DATA message carries sample numbers, not times. Sample
``s`` is put on ``time.monotonic`` as ``s / rate + c - delay_ms``, where ``c``
is the lower envelope of ``receive_time - end_sample / rate`` over every
callback's first DATA message in the last ``clock_window_s`` (:class:`ReceiveClock`):
a message can never arrive before its last sample was acquired, and the
least-delayed callbacks of the window (on a loopback or a quiet LAN, within a
fraction of a millisecond of each other) fix the offset. What the envelope
cannot see is the fixed part of that delay (the acquisition board's USB
buffering, the plugin's processing): samples are stamped that much late, unless
``delay_ms`` says it (``rig sim-rig --lag-ms``). Drift between the recording's
crystal and this computer's clock (tens of ppm) moves the envelope by well under
a millisecond per window. The window starts again on an acquisition restart
(sample numbers step back). Then ``time.monotonic`` becomes the display's clock
by the display's offset (0 for ``time.monotonic``; PsychoPy's clock is read
against it at start). The TTL pairing of the scorer is not used: it maps onsets
to photodiode edges, which include the monitor's own latency (10-100 ms).

**Latency.** A sample acquired at time ``a`` can be used once its callback's
DATA message has arrived: at ``a + (callback end - a) + transport``, i.e.
between ``delay`` and one callback plus ``delay`` later (a 1024-sample buffer
at 44.1 kHz: 23.2 ms, so 11.6 ms on average), plus half a ``rate_hz`` block
for the averaging (0.5 ms at 1 kHz). The trial machine reads gaze once per
frame, just before drawing (:data:`rig.behavior.frames.DRAW_MARGIN_S`), so a
break is acted on at the first flip after its callback arrived: sample to
flip is about ``U(0, callback) + delay + U(0, frame) + margin``.
``bench/gaze_adc_latency.py`` measures it for several callback sizes.

Stamping never puts a sample after the moment its message arrived, so it never
claims to come from the future; samples out of time order (the envelope moved
down after some were stamped) are dropped and counted, as are X or Y blocks
whose partner was lost, and breaks in the sample numbers (a lost message)
restart the averaging. A short or malformed ADC message never reaches the tap:
the reader counts and skips it (``stats.malformed``), and its partner is then
counted as unpaired here.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from protocols.registry import option
from rig.behavior.gaze.base import GAZE_SOURCES, GazeError, GazeSamples, GazeTask
from rig.behavior.gaze.raw import RawGazeSource, RawOptions

__all__ = ["AnalogGazeTap", "AnalogStats", "Decimator", "FedGazeSource", "NEEDS_RECORDING", "ReceiveClock",
           "RecordingGaze", "RecordingGazeOptions", "SampleQueue", "display_clock_offset"]

#: What a session without a recording neuron is told.
NEEDS_RECORDING = '[gaze] source = "recording" needs --neuron zmq://... or lsl://... (the eye signals come on the ' \
                  'recording\'s continuous channels); with a tracker of its own, name its source instead'
#: Clock names whose offset from time.monotonic is known here.
MONOTONIC = "time.monotonic"
PSYCHOPY_CLOCK = "psychopy.core.monotonicClock"
#: Samples kept for the trial machine when it does not read (between blocks): older ones are dropped and counted.
MAX_QUEUED_S = 120.0


# --------------------------------------------------------------------------- shared by the recording and LSL sources


def display_clock_offset(clock: str) -> float:
    """The display clock ``clock``'s offset from time.monotonic: ``display time = time.monotonic() - offset``."""
    if clock == MONOTONIC:
        return 0.0
    if clock == PSYCHOPY_CLOCK:
        from psychopy import clock as psychopy_clock  # imported already: the display that names this clock runs

        return time.monotonic() - psychopy_clock.monotonicClock.getTime()
    raise GazeError(f"gaze samples cannot be put on the display's clock {clock!r}: only {MONOTONIC!r} and "
                    f"{PSYCHOPY_CLOCK!r} are known; pass monotonic_offset (display time = time.monotonic() - offset)")


class Decimator:
    """Means of ``k`` consecutive samples (time, u, v; valid only if all ``k`` are), carrying a partial block over."""

    def __init__(self, k: int) -> None:
        self.k = max(1, int(k))
        self._carry: tuple[np.ndarray, ...] | None = None

    def reset(self) -> None:
        """The next samples do not continue the last ones (a gap): drop the partial block."""
        self._carry = None

    def push(self, t: np.ndarray, u: np.ndarray, v: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, ...]:
        k = self.k
        if k == 1:
            return t, u, v, ok
        if self._carry is not None:
            t, u, v, ok = (np.concatenate((a, b)) for a, b in zip(self._carry, (t, u, v, ok)))
        whole = (len(t) // k) * k
        self._carry = tuple(a[whole:] for a in (t, u, v, ok)) if whole < len(t) else None
        m = whole // k
        return (t[:whole].reshape(m, k).mean(axis=1), u[:whole].reshape(m, k).mean(axis=1),
                v[:whole].reshape(m, k).mean(axis=1), ok[:whole].reshape(m, k).all(axis=1))


class SampleQueue:
    """Gaze samples handed from a reader's thread to the trial machine: ``put`` and ``take(until)`` under a lock."""

    def __init__(self, max_samples: int) -> None:
        self._lock = threading.Lock()
        self._chunks: deque[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = deque()
        self._count = 0
        self.max_samples = max(1, int(max_samples))
        #: Samples dropped because nobody read them in time (the oldest go first).
        self.dropped = 0

    def put(self, times: np.ndarray, x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> None:
        if not len(times):
            return
        with self._lock:
            self._chunks.append((times, x, y, valid))
            self._count += len(times)
            while self._count > self.max_samples and len(self._chunks) > 1:
                old = self._chunks.popleft()
                self._count -= len(old[0])
                self.dropped += len(old[0])

    def take(self, until: float) -> GazeSamples:
        """Every queued sample with time <= ``until``, in order; later ones stay queued."""
        parts = []
        with self._lock:
            while self._chunks:
                times, x, y, valid = self._chunks[0]
                if times[-1] <= until:
                    parts.append(self._chunks.popleft())
                    self._count -= len(times)
                    continue
                cut = int(np.searchsorted(times, until, side="right"))
                if cut:
                    parts.append((times[:cut], x[:cut], y[:cut], valid[:cut]))
                    self._chunks[0] = (times[cut:], x[cut:], y[cut:], valid[cut:])
                    self._count -= cut
                break
        if not parts:
            return GazeSamples.empty()
        if len(parts) == 1:
            return GazeSamples(*parts[0])
        return GazeSamples(*(np.concatenate(column) for column in zip(*parts)))

    def __len__(self) -> int:
        return self._count


# --------------------------------------------------------------------------- the ZeroMQ path


class ReceiveClock:
    """One stream's sample numbers on ``time.monotonic``: ``offset`` is the lower envelope of ``receive_time -
    end_sample / rate`` over the last ``window_s`` of callbacks (a sliding minimum; see the module docstring)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._window: deque[tuple[float, float]] = deque()  # (receive time, offset), offsets increasing
        self.rate: float | None = None
        self.last_end: int | None = None
        #: Acquisition restarts seen (sample numbers stepped back, or the rate changed).
        self.restarts = 0
        #: How late the latest callback arrived above the envelope (s): transport jitter, scheduling.
        self.last_excess_s = 0.0

    def observe(self, end_sample: int, rate: float, receive_time: float) -> None:
        if self.last_end is not None and (end_sample < self.last_end or rate != self.rate):
            self.restarts += 1
            self._window.clear()
        self.rate, self.last_end = rate, end_sample
        value = receive_time - end_sample / rate
        window = self._window
        while window and window[-1][1] >= value:
            window.pop()
        window.append((receive_time, value))
        while window[0][0] < receive_time - self.window_s:
            window.popleft()
        self.last_excess_s = value - window[0][1]

    @property
    def offset(self) -> float:
        """Add to ``sample / rate`` to get time.monotonic (before any known delay is taken off)."""
        return self._window[0][1]


@dataclass
class AnalogStats:
    """What the tap saw: messages decoded, samples queued, and every kind of sample it could not use."""

    messages: int = 0
    samples: int = 0
    invalid_samples: int = 0
    #: An X or Y block whose partner (same sample_num) never came: a lost or malformed message.
    unpaired: int = 0
    #: Breaks in the sample numbers between paired blocks (the averaging started again).
    gaps: int = 0
    restarts: int = 0
    #: Samples dropped because the clock's envelope moved down after later ones had been stamped.
    out_of_order: int = 0
    #: The latest clock offset (time.monotonic - sample / rate, s) and how late the latest callback came above it.
    offset_s: float | None = None
    excess_s: float = 0.0
    max_excess_s: float = 0.0
    #: When the latest paired block arrived (time.monotonic).
    last_receive_time: float | None = None


class AnalogGazeTap:
    """A :class:`~rig.recording.live.ChannelTap` turning channels ``x`` and ``y`` into raw gaze samples (volts, NaN
    where invalid) on the display's clock, in the reader's thread (see the module docstring); :meth:`take` is the
    trial machine's side."""

    def __init__(self, x: str, y: str, *, valid_volts: tuple[float, float] = (-5.0, 5.0), rate_hz: float = 1000.0,
                 delay_s: float = 0.0, window_s: float = 10.0, monotonic_offset: float = 0.0) -> None:
        if x == y:
            raise ValueError(f"the X and Y channels must differ, got {x!r} twice")
        self.x, self.y = x, y
        self.channels = frozenset((x, y))
        self.low, self.high = valid_volts
        self.rate_hz, self.delay_s, self.window_s = rate_hz, delay_s, window_s
        self.monotonic_offset = monotonic_offset
        self.stats = AnalogStats()
        self.queue = SampleQueue(int(MAX_QUEUED_S * (rate_hz or 30_000.0)))
        self.closed = False
        self._clocks: dict[str, ReceiveClock] = {}
        self._waiting: tuple[str, int, str, np.ndarray] | None = None  # (stream, sample_num, channel, volts)
        self._next_sample: int | None = None
        self._restarts_seen = 0
        self._decimator: Decimator | None = None
        self._rate: float | None = None
        self._last_time = -math.inf

    # -- the reader's thread -----------------------------------------------------------------------------------

    def _clock(self, stream: str) -> ReceiveClock:
        clock = self._clocks.get(stream)
        if clock is None:
            clock = self._clocks[stream] = ReceiveClock(self.window_s)
        return clock

    def watermark(self, stream: str, end_sample: int, rate: float, receive_time: float) -> None:
        if not self.closed:
            self._clock(stream).observe(end_sample, rate, receive_time)

    def data(self, stream: str, channel: str, sample_num: int, rate: float, payload: bytes,
             receive_time: float) -> None:
        if self.closed:
            return
        self.stats.messages += 1
        clock = self._clock(stream)
        clock.observe(sample_num + len(payload) // 4, rate, receive_time)
        volts = np.frombuffer(payload, dtype="<f4")
        waiting = self._waiting
        if waiting is None or waiting[0] != stream or waiting[1] != sample_num or waiting[2] == channel:
            if waiting is not None:
                self.stats.unpaired += 1
            self._waiting = (stream, sample_num, channel, volts.copy())
            return
        self._waiting = None
        first = waiting[3]
        u, v = (first, volts) if waiting[2] == self.x else (volts, first)
        if len(u) != len(v):
            self.stats.unpaired += 2
            return
        self._pair(clock, sample_num, rate, u, v, receive_time)

    def _pair(self, clock: ReceiveClock, sample_num: int, rate: float, u32: np.ndarray, v32: np.ndarray,
              receive_time: float) -> None:
        stats = self.stats
        if clock.restarts != self._restarts_seen or rate != self._rate:
            if clock.restarts != self._restarts_seen:
                stats.restarts += clock.restarts - self._restarts_seen
            self._restarts_seen = clock.restarts
            self._rate = rate
            self._decimator = Decimator(round(rate / self.rate_hz) if self.rate_hz else 1)
            self._next_sample = None
        elif self._next_sample != sample_num:
            stats.gaps += 1
            self._decimator.reset()
        n = len(u32)
        self._next_sample = sample_num + n
        u, v = u32.astype(np.float64), v32.astype(np.float64)
        with np.errstate(invalid="ignore"):
            ok = (u > self.low) & (u < self.high) & (v > self.low) & (v < self.high)  # NaN compares False
        samples = np.arange(sample_num, sample_num + n, dtype=np.float64)
        samples, u, v, ok = self._decimator.push(samples, u, v, ok)
        stats.last_receive_time = receive_time
        stats.offset_s, stats.excess_s = clock.offset, clock.last_excess_s
        stats.max_excess_s = max(stats.max_excess_s, clock.last_excess_s)
        if not len(samples):
            return
        times = samples / rate + (clock.offset - self.delay_s - self.monotonic_offset)
        x, y = np.where(ok, u, np.nan), np.where(ok, v, np.nan)
        later = times > self._last_time
        if not later.all():
            stats.out_of_order += int((~later).sum())
            times, x, y, ok = times[later], x[later], y[later], ok[later]
            if not len(times):
                return
        self._last_time = float(times[-1])
        stats.samples += len(times)
        stats.invalid_samples += int((~ok).sum())
        self.queue.put(times, x, y, ok)

    # -- the trial machine's side ------------------------------------------------------------------------------

    def take(self, until: float) -> GazeSamples:
        return self.queue.take(until)

    def close(self) -> None:
        self.closed = True

    def health(self) -> dict[str, Any]:
        return {**asdict(self.stats), "queued": len(self.queue), "dropped_unread": self.queue.dropped,
                "clock_restarts": {s: c.restarts for s, c in self._clocks.items()}}


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class RecordingGazeOptions(RawOptions):
    """``[gaze] source = "recording"``: eye signals on the recording's continuous channels (module docstring);
    ``calibration`` (volts -> degrees) and ``drift_correction`` are every raw source's."""

    #: The continuous channels carrying X and Y, by the name their DATA messages carry (``channel_name``).
    channels: tuple[str, str] = option(("ADC1", "ADC2"), valid="[X, Y]: two different channel names, e.g. "
                                                               "[\"ADC1\", \"ADC2\"]")
    #: Samples per second delivered: means of blocks of rate / rate_hz samples (0: every sample).
    rate_hz: float = option(1000.0, low=0.0, high=100_000.0, valid="samples per second in [0, 100000] (0: all)")
    #: Known delay (ms) from a callback's last sample to its DATA message leaving the acquisition computer.
    delay_ms: float = option(0.0, low=0.0, high=1000.0, valid="milliseconds in [0, 1000]")
    #: A sample at or beyond either bound (volts) is no gaze: a tracker's loss level, the board's rails.
    valid_volts: tuple[float, float] = option((-5.0, 5.0), low=-1e6, high=1e6, valid="[low, high] volts, low < high")
    #: The clock offset is the lowest seen over this many seconds of callbacks.
    clock_window_s: float = option(10.0, low=0.5, high=3600.0, valid="seconds in [0.5, 3600]")

    def check(self) -> None:
        if self.channels[0] == self.channels[1] or not all(self.channels):
            self.invalid("channels", f"[X, Y]: two different, non-empty channel names, got {list(self.channels)}")
        if not self.valid_volts[0] < self.valid_volts[1]:
            self.invalid("valid_volts", f"[low, high] with low < high, got {list(self.valid_volts)}")


class FedGazeSource(RawGazeSource):
    """A raw gaze source whose samples a feed queues as they arrive (an ADC tap, an LSL inlet): what the
    ``recording`` and ``lsl`` kinds share. A subclass opens its feed in :meth:`_open_feed`."""

    realtime: ClassVar[bool] = True

    def __init__(self, raw: bool = False, **options: Any) -> None:
        super().__init__(raw=raw, **options)  # the calibration is loaded here: a missing file fails at build
        #: Display time = time.monotonic() - ``monotonic_offset``; None: found from the display's clock at start.
        self.monotonic_offset: float | None = None
        #: The offset in use once started.
        self.display_offset: float | None = None
        self._feed: Any = None

    def _open_feed(self, offset: float) -> Any:
        """The feed (``take(until)``, ``health()``, ``close()``) stamping samples ``time.monotonic() - offset``."""
        raise NotImplementedError

    def start(self, task: GazeTask) -> None:
        super().start(task)
        if self._feed is None:
            offset = self.monotonic_offset if self.monotonic_offset is not None else display_clock_offset(task.clock)
            self._feed = self._open_feed(offset)
            self.display_offset = offset

    def _read_raw(self, until: float) -> GazeSamples:
        if self._feed is None:
            raise GazeError(f"{type(self).__name__}: start() it before reading")
        return self._feed.take(until)

    def health(self) -> dict[str, Any]:
        """The feed's counters: samples, gaps, samples out of order, its clock."""
        return self._feed.health() if self._feed is not None else {}

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "display_offset_s": self.display_offset, "health": self.health()}


@GAZE_SOURCES.register("recording", RecordingGazeOptions)
class RecordingGaze(FedGazeSource):
    """Gaze from the recording's analog channels (``realtime``: samples come as the recording delivers them).

    Args:
        raw: Deliver volts, uncalibrated (``rig calibrate``; :class:`~rig.behavior.gaze.raw.RawGazeSource`).
        **options: :class:`RecordingGazeOptions`.
    """

    def __init__(self, raw: bool = False, **options: Any) -> None:
        super().__init__(raw=raw, **options)
        self._recording: Any = None

    def attach_recording(self, recording: Any, monotonic_offset: float | None = None) -> None:
        """Read the eye signals from ``recording`` (a :class:`~rig.recording.source.StreamRecording`, entered or not).

        ``monotonic_offset``: display time = ``time.monotonic() - monotonic_offset`` (e.g. the PsychoPy display's
        ``monotonic_offset``); None: found from the display's clock name at :meth:`start`.
        """
        if recording is None or getattr(recording, "reader", None) is None:
            raise GazeError(NEEDS_RECORDING)
        self._recording = recording
        self.monotonic_offset = monotonic_offset

    def start(self, task: GazeTask) -> None:
        if self._recording is None:
            raise GazeError(NEEDS_RECORDING)
        super().start(task)

    def _open_feed(self, offset: float) -> Any:
        o = self.options
        reader = self._recording.reader
        if getattr(getattr(self._recording, "transport", None), "scheme", None) == "lsl":
            from rig.behavior.gaze.lsl import LslGazeFeed

            feed = LslGazeFeed(f"{reader.name}-analog", o.channels, valid_range=o.valid_volts, rate_hz=o.rate_hz,
                               monotonic_offset=offset)
            feed.open()
            return feed
        tap = AnalogGazeTap(*o.channels, valid_volts=o.valid_volts, rate_hz=o.rate_hz,
                            delay_s=o.delay_ms / 1000.0, window_s=o.clock_window_s, monotonic_offset=offset)
        try:
            reader.add_tap(tap)
        except ValueError as exc:
            raise GazeError(f"[gaze] source = \"recording\": {exc}") from None
        return tap
