"""``ZmqRecording``: responses scored from a live Open Ephys ZMQ Interface stream.

How one showing (a pass of the display over some stimuli) is scored:

1. At each onset the display calls :meth:`ZmqRecording.on_onset`, which stamps
   ``time.monotonic()`` (the display's own clock may differ, e.g. PsychoPy's)
   and the stream epoch (restarts so far), and nothing else, so frames stay on time.
2. :meth:`ZmqRecording.record` polls the reader until the stream's watermark
   has passed the end of every stimulus's windows (a window is final only
   then), or until ``timeout_s`` after the last window should have closed.
3. Onsets are paired with TTL rising edges on ``ttl_line``: a rough offset
   between monotonic time and the sample clock (the previous showing's, or
   one derived from when data messages arrived) finds candidates within
   ``pairing_window_ms``; the median of their offsets pins the offset, and
   each onset takes the TTL within ``ttl_tolerance_ms`` of it. The pairs map
   the display clock onto the recording clock (stored with the showing).
4. A stimulus is invalid (NaN, shown again by the controller, never scored as
   zero) when: the display marked it (dropped frame), it has no TTL
   ("missing-ttl"), a message gap overlaps its windows or its expected TTL
   ("gap"), acquisition restarted during the showing ("restart"), or its
   windows were not final before the time-out ("silent").
5. Valid stimuli are scored per channel: spikes of the selected electrodes and
   sorted units in the response window, as a rate, minus the baseline.

A stream that sends nothing at all raises :class:`StreamAbsentError` (at
:meth:`ZmqRecording.start`) or :class:`StreamSilentError` (during a showing),
naming the endpoint and what to check.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from protocols.base import Block, Responses
from protocols.spec import RecordingSpec
from rig.display import Presentations
from rig.recording.openephys_wire import Discontinuity, Spike, Ttl, Watermark
from rig.recording.scoring import (Windows, estimate_offset, fit_clock, ms_to_samples, overlaps, pair_onsets,
                                   window_rates)
from rig.recording.zmq_reader import ZmqReader
from rig.responses import ResponseSource


class RecordingError(RuntimeError):
    """The recording stream cannot deliver responses."""


class StreamAbsentError(RecordingError, ValueError):
    """No message ever arrived from the stream (a setup mistake: reported like bad input, before anything runs)."""


class StreamSilentError(RecordingError):
    """The stream stopped sending during a showing."""


@dataclass(frozen=True)
class UnitSelector:
    """Spikes of ``electrode`` (None: any) with sorted id ``unit`` (None: any, unsorted included)."""

    electrode: str | None
    unit: int | None

    @classmethod
    def parse(cls, text: str) -> "UnitSelector":
        """``"*"`` (all spikes), ``"ELECTRODE"`` (all units on it) or ``"ELECTRODE:UNIT"`` (a sorted id)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"unit selector {text!r}: expected '*', 'ELECTRODE' or 'ELECTRODE:UNIT'")
        text = text.strip()
        if text == "*":
            return cls(None, None)
        electrode, sep, unit = text.rpartition(":")
        if not sep:
            return cls(text, None)
        if unit == "*":
            return cls(electrode or None, None)
        try:
            return cls(electrode if electrode not in ("", "*") else None, int(unit))
        except ValueError:
            raise ValueError(f"unit selector {text!r}: the part after ':' must be a sorted unit id "
                             f"(an integer, 0 = unsorted) or '*'") from None

    def matches(self, spike: Spike) -> bool:
        """Whether ``spike`` belongs to this channel."""
        return (self.electrode is None or spike.electrode == self.electrode) and (
            self.unit is None or spike.unit == self.unit)


@dataclass
class RecordedResponses(Responses):
    """Responses plus what the recording saw: raw frames, why stimuli were invalid, diagnostics."""

    raw_frames: list[list[bytes]] = field(default_factory=list)
    raw_receive_times: list[float] = field(default_factory=list)
    invalid_reasons: list[str] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)


class ZmqRecording(ResponseSource):
    """A response source reading an Open Ephys ZMQ Interface stream (DESIGN.md §3-4)."""

    #: How long the reader keeps spikes behind the watermark (s); enough for any window.
    KEEP_S = 30.0

    def __init__(self, spec: RecordingSpec | None = None) -> None:
        self.spec = spec or RecordingSpec()
        self.windows = Windows(self.spec.response_window_ms, self.spec.baseline, self.spec.baseline_window_ms)
        self.selectors = [UnitSelector.parse(u) for u in self.spec.units]
        self.channel_names = list(self.spec.units)
        heartbeat = None
        if self.spec.heartbeat:
            heartbeat = f"tcp://{self.spec.host}:{self.spec.heartbeat_port or self.spec.data_port + 1}"
        self.reader = ZmqReader(f"tcp://{self.spec.host}:{self.spec.data_port}", heartbeat,
                                keep_data_payloads=self.spec.keep_data_payloads)
        self.sample_rate: float | None = self.spec.sample_rate
        self.watermark = 0
        self._open = False
        self._epoch = 0
        self._spikes: list[list[int]] = [[] for _ in self.selectors]
        self._ttls: list[int] = []
        self._gaps: list[tuple[int, int]] = []
        self._arrivals: deque[float] = deque(maxlen=200)  # watermark - rate * receive time, per data message
        self._offset: float | None = None  # TTL sample - rate * monotonic onset, from the last showing
        self._onsets: dict[tuple[int, str], tuple[float, int]] = {}  # (monotonic onset, stream epoch)
        self._early_sum = np.zeros(len(self.selectors))
        self._early_n = 0
        self.showings = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect and wait for the first data message; :class:`StreamAbsentError` if none comes in time."""
        if self._open:
            return
        self.reader.__enter__()
        self._open = True
        deadline = time.monotonic() + self.spec.connect_timeout_s
        while time.monotonic() < deadline:
            self._poll()
            if self.sample_rate is not None and self._arrivals:
                return
            self.reader.wait(0.01)
        heard = self.reader.stats.messages
        beats = self.reader.heartbeat.replies if self.reader.heartbeat else 0
        self.close()
        raise StreamAbsentError(
            f"no continuous data from {self.reader.endpoint} within {self.spec.connect_timeout_s:g} s "
            f"({heard} messages of any kind, {beats} heartbeat replies from {self.reader.heartbeat_endpoint}): "
            f"is acquisition running, with the ZMQ Interface plugin on data port {self.spec.data_port} "
            f"and a continuous channel selected? (set [recording] host/data_port, or --neuron zmq://HOST:PORT)")

    def close(self) -> None:
        link = getattr(self, "sim_link", None)
        if link is not None:
            link.close()
            self.sim_link = None
        if self._open:
            self.reader.close()
            self._open = False

    def describe(self) -> dict:
        return {**super().describe(), "recording": {**asdict(self.spec), "units": list(self.spec.units)},
                "reader": self.reader.get_initial(), "stream": self.reader.stats.as_dict(),
                "sample_rate": self.sample_rate}

    # ------------------------------------------------------------------ stream

    def on_onset(self, block: Block, position: int, onset_time: float) -> None:
        """Onset listener: note when (on time.monotonic) the stimulus appeared.

        Nothing else happens here: this runs between frames, and the socket's
        unbounded receive queue holds the stream until :meth:`record` reads it.
        """
        self._onsets[(block.index, block.stimulus_ids[position])] = (time.monotonic(), self._epoch)

    def _poll(self, max_messages: int | None = None) -> int:
        reader = self.reader
        if max_messages is not None:
            saved, reader.max_messages_per_read = reader.max_messages_per_read, max_messages
        try:
            records = reader.read_next()
        finally:
            if max_messages is not None:
                reader.max_messages_per_read = saved
        stream = self.spec.stream
        for record in records:
            if stream is not None and record.stream != stream:
                continue
            if isinstance(record, Spike):
                for channel, selector in enumerate(self.selectors):
                    if selector.matches(record):
                        self._spikes[channel].append(record.sample)
            elif isinstance(record, Ttl):
                if record.line == self.spec.ttl_line and record.state == 1:
                    self._ttls.append(record.sample)
            elif isinstance(record, Watermark):
                if self.spec.sample_rate is None:
                    self.sample_rate = record.sample_rate
                self.watermark = max(self.watermark, record.sample)
                self._arrivals.append(record.sample - self.sample_rate * record.receive_time)
            elif isinstance(record, Discontinuity):
                if record.kind == "restart":
                    self._restart()
                else:
                    self._gaps.append((record.from_sample, record.to_sample + 1))
        return len(records)

    def _restart(self) -> None:
        # A new sample clock: nothing recorded before it can be paired with onsets after it.
        self._epoch += 1
        self._spikes = [[] for _ in self.selectors]
        self._ttls, self._gaps = [], []
        self._arrivals.clear()
        self._offset = None
        self.watermark = 0

    def _prune(self, before: int) -> None:
        self._spikes = [[s for s in spikes if s >= before] for spikes in self._spikes]
        self._ttls = [s for s in self._ttls if s >= before]
        self._gaps = [(a, b) for a, b in self._gaps if b >= before]

    # ------------------------------------------------------------------ scoring

    def _record(self, block: Block, presentations: Presentations) -> Responses:
        if not self._open:
            self.start()
        n = len(block)
        onset_m, onset_epoch = self._onset_clock(block, presentations)
        rate = self.sample_rate
        span = self.windows.span_ms()
        tol = ms_to_samples(self.spec.ttl_tolerance_ms, rate)
        deadline = float(np.max(onset_m)) + span[1] / 1000.0 + self.spec.ttl_tolerance_ms / 1000.0 + self.spec.timeout_s
        offset = None
        while True:
            self._poll()
            # Stimuli shown before an acquisition restart cannot be paired with the new clock.
            current = onset_epoch == self._epoch
            if not current.any():
                break
            offset = self._find_offset(onset_m[current])
            if offset is not None:
                need = float(np.max(offset + rate * onset_m[current])) + max(ms_to_samples(span[1], rate), tol)
                if self.watermark >= need:
                    break
            if time.monotonic() > deadline:
                last = self.reader.stats.last_receive_time
                if last is None or last < float(np.min(onset_m)):
                    raise StreamSilentError(
                        f"no message from {self.reader.endpoint} for {time.monotonic() - (last or 0):.1f} s, "
                        f"through a whole showing of {n} stimuli plus {self.spec.timeout_s:g} s "
                        f"([recording] timeout_s): the stream is silent; is acquisition still running?")
                break
            self.reader.wait(0.005)

        reasons = np.where(presentations.valid, "", "display").astype(object)
        reasons[(reasons == "") & ~current] = "restart"
        ttl_index = np.full(n, -1)
        ttls = np.sort(np.asarray(self._ttls, dtype=np.int64))
        predicted = np.full(n, np.nan)
        if offset is None:
            reasons[reasons == ""] = "missing-ttl" if self.watermark else "silent"
        else:
            predicted[current] = offset + rate * onset_m[current]
            ttl_index[current] = pair_onsets(predicted[current], ttls, tol)
            guess = np.rint(np.nan_to_num(predicted)).astype(np.int64)
            anchors = np.where(ttl_index >= 0, ttls[np.maximum(ttl_index, 0)] if ttls.size else 0, guess)
            start = anchors + ms_to_samples(span[0], rate)
            stop = anchors + ms_to_samples(span[1], rate)
            in_gap = overlaps(self._gaps, np.minimum(start, anchors - tol), np.maximum(stop, anchors + tol))
            unfinished = stop > self.watermark
            for i in range(n):
                if reasons[i]:
                    continue
                if in_gap[i]:
                    reasons[i] = "gap"
                elif ttl_index[i] < 0:
                    reasons[i] = "silent" if predicted[i] + tol > self.watermark else "missing-ttl"
                elif unfinished[i]:
                    reasons[i] = "silent"
        valid = reasons == ""
        scores = np.full((n, len(self.selectors)), np.nan)
        if valid.any():
            anchors = ttls[ttl_index[valid]]
            scores[valid] = self._score(anchors)
        diagnostics = self._diagnostics(block, presentations, onset_m, ttls, ttl_index, predicted, reasons, tol)
        if valid.any():
            # The offset that paired this showing predicts the next one (clocks drift slowly).
            self._offset = float(np.median(ttls[ttl_index[valid]] - rate * onset_m[valid]))
        if ttl_index.max() >= 0:
            self._ttls = [s for s in self._ttls if s > ttls[ttl_index.max()]]
        self._prune(self.watermark - int(self.KEEP_S * rate))
        for sid in block.stimulus_ids:
            self._onsets.pop((block.index, sid), None)
        raw = self.reader.take_raw()
        self.showings += 1
        return RecordedResponses(scores=scores, valid=valid, channel_names=list(self.channel_names),
                                 raw_frames=raw.frames, raw_receive_times=raw.receive_times,
                                 invalid_reasons=[str(r) for r in reasons], diagnostics=diagnostics)

    def _onset_clock(self, block: Block, presentations: Presentations) -> tuple[np.ndarray, np.ndarray]:
        """Each stimulus's onset on time.monotonic and the stream epoch (restarts so far) it fell in.

        Stamped by :meth:`on_onset`, or else the display's own times when its clock is time.monotonic.
        """
        stamped = [self._onsets.get((block.index, sid)) for sid in block.stimulus_ids]
        if all(t is not None for t in stamped):
            return (np.array([t for t, _ in stamped], dtype=np.float64),
                    np.array([e for _, e in stamped], dtype=np.int64))
        if presentations.clock == "time.monotonic":
            return np.asarray(presentations.onset_times, dtype=np.float64), np.full(len(block), self._epoch)
        raise RuntimeError(
            f"ZmqRecording needs onset times on time.monotonic: register it with display.add_onset_listener "
            f"(the display's clock is {presentations.clock!r})")

    def _find_offset(self, onset_m: np.ndarray) -> float | None:
        rate = self.sample_rate
        prior = self._offset
        if prior is None:
            if not self._arrivals:
                return None
            prior = max(self._arrivals)  # the least-delayed data message is the best guess of "now"
        search = ms_to_samples(self.spec.pairing_window_ms, rate)
        return estimate_offset(onset_m, np.asarray(self._ttls), rate, prior, search)

    def _score(self, anchors: np.ndarray) -> np.ndarray:
        rate = self.sample_rate
        scores = np.zeros((len(anchors), len(self.selectors)))
        baseline_rates = np.zeros_like(scores)
        for c, spikes in enumerate(self._spikes):
            sorted_spikes = np.sort(np.asarray(spikes, dtype=np.int64))
            scores[:, c] = window_rates(sorted_spikes, anchors, self.windows.response_ms, rate)
            if self.windows.baseline != "none":
                baseline_rates[:, c] = window_rates(sorted_spikes, anchors, self.windows.baseline_ms, rate)
        if self.windows.baseline == "pre":
            return scores - baseline_rates
        if self.windows.baseline == "early":
            # The early window averaged over every valid trial so far, per channel.
            self._early_sum += baseline_rates.sum(axis=0)
            self._early_n += len(anchors)
            return scores - self._early_sum / self._early_n
        return scores

    def _diagnostics(self, block: Block, presentations: Presentations, onset_m: np.ndarray, ttls: np.ndarray,
                     ttl_index: np.ndarray, predicted: np.ndarray, reasons: np.ndarray, tol: int) -> dict[str, Any]:
        paired = ttl_index >= 0
        in_span = 0
        if np.isfinite(predicted).any():
            lo, hi = np.nanmin(predicted) - tol, np.nanmax(predicted) + tol
            in_span = int(((ttls >= lo) & (ttls <= hi)).sum())
        counts = {r: int((reasons == r).sum()) for r in set(reasons.tolist()) if r}
        return {
            "onsets": int(len(onset_m)),
            "ttls_in_span": in_span,
            "paired": int(paired.sum()),
            "ttl_count_matches": bool(in_span == len(onset_m)),
            "invalid": counts,
            "watermark": int(self.watermark),
            "epoch": self._epoch,
            "sample_rate": self.sample_rate,
            "clock_map": {"display_clock": presentations.clock,
                          **fit_clock(presentations.onset_times[paired], ttls[ttl_index[paired]])},
            "stream": self.reader.stats.as_dict(),
        }
