"""One scorer for recorded responses, fed by the live reader or by a session file (DESIGN.md §4).

:class:`StreamScorer` takes normalised records (spikes, TTLs, watermarks,
discontinuities) in the order they arrived, from
:class:`~rig.recording.openephys.reader.ZmqReader` live or
:class:`~rig.recording.replay_reader.SessionReplayReader` offline, and closes
one showing at a time: it pairs the showing's onsets with TTL edges
(:mod:`rig.recording.pairing`), decides which stimuli are valid, and scores
the valid ones per channel. Live scoring, ``rig replay --rescore`` and the
NWB export's spike times all go through it, so they cannot disagree.

**Clocks.** Onsets are on ``time.monotonic()`` (stamped at each flip), the
stream on its own sample clock. Every watermark says "sample W had been
acquired by the time this message came off the socket", so
``W - rate * receive_time`` bounds the clock offset from below (the least
delayed message is tightest; only the last :data:`BOUND_WINDOW_S` seconds
count, so clock drift does not accumulate). A TTL edge cannot precede its
onset, so offsets below the bound are impossible, and the pairing window
(``pairing_window_ms``: display latency plus acquisition latency) bounds
them from above. The latency each showing implies is reported.

**Epochs.** An acquisition restart begins a new sample clock: nothing
recorded before it pairs with anything after it. An onset belongs to the
current epoch only if the bound puts its TTL at or after the epoch's sample 0;
others are invalid ("restart") and shown again.

**Validity.** A stimulus is scored only when its TTL was paired by an
accepted sequence pairing, no other edge crowds it, no message gap touches
its windows or its TTL, and the watermark has passed the end of its windows
plus one processing callback (the Spike Detector sends spikes near a
buffer's end one callback late). Otherwise it is invalid with a reason and
shown again; never scored as zero.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocols.spec import RecordingSpec
from rig.recording.records import Discontinuity, Record, Spike, Ttl, Watermark
from rig.recording.pairing import Pairing, edge_matches, pair_sequence
from rig.recording.scoring import Windows, fit_clock, ms_to_samples, overlaps, window_rates
from rig.recording.units import UnitSelector

#: Arrival bounds older than this (seconds, by receive time) no longer count: clocks drift.
BOUND_WINDOW_S = 30.0
#: Spikes, edges and gaps further than this behind the watermark are forgotten (seconds).
KEEP_S = 30.0
#: The late-spike allowance before any callback length is known (samples at 30 kHz: one 23 ms callback).
DEFAULT_CALLBACK_S = 0.0235


@dataclass
class _Epoch:
    """What was recorded on one sample clock."""

    spikes: list[list[int]]
    edges: list[int] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    watermark: int = 0
    #: Edges at or before this sample were paired by an earlier showing.
    consumed: int = -1
    #: (receive time, watermark - rate * receive time) per watermark, for the offset's lower bound.
    bounds: deque = field(default_factory=deque)
    callback: int = 0


@dataclass
class ClosedShowing:
    """One closed showing: per stimulus a score per channel (NaN when invalid), why invalid, its TTL sample."""

    scores: np.ndarray
    valid: np.ndarray
    reasons: list[str]
    ttl_samples: np.ndarray
    epoch: int
    pairing: Pairing
    diagnostics: dict[str, Any]


class StreamScorer:
    """Routes records by epoch and scores showings; see the module docstring."""

    def __init__(self, spec: RecordingSpec, windows: Windows | None = None) -> None:
        self.spec = spec
        self.windows = windows or Windows(tuple(spec.response_window_ms), spec.baseline,
                                          tuple(spec.baseline_window_ms))
        self.selectors = [UnitSelector.parse(u) for u in spec.units]
        self.sample_rate: float | None = spec.sample_rate
        self.epoch_number = 0
        self._epoch = _Epoch([[] for _ in self.selectors])
        self._early_sum = np.zeros(len(self.selectors))
        self._early_n = 0
        self.last_latency_ms: float | None = None

    # ------------------------------------------------------------------ records

    @property
    def watermark(self) -> int:
        """Everything of the current epoch before this sample has arrived."""
        return self._epoch.watermark

    def feed(self, records: list[Record]) -> None:
        """Route records, in arrival order, into the current epoch."""
        stream = self.spec.stream
        epoch = self._epoch
        for record in records:
            if stream is not None and record.stream != stream:
                continue
            if isinstance(record, Spike):
                for channel, selector in enumerate(self.selectors):
                    if selector.matches(record):
                        epoch.spikes[channel].append(record.sample)
            elif isinstance(record, Ttl):
                if record.line == self.spec.ttl_line and edge_matches(record.state, self.spec.ttl_edges):
                    epoch.edges.append(record.sample)
            elif isinstance(record, Watermark):
                self._watermark(epoch, record)
            elif isinstance(record, Discontinuity):
                if record.kind == "restart":
                    self.epoch_number += 1
                    epoch = self._epoch = _Epoch([[] for _ in self.selectors])
                else:
                    epoch.gaps.append((record.from_sample, record.to_sample + 1))

    def _watermark(self, epoch: _Epoch, record: Watermark) -> None:
        if self.spec.sample_rate is None:
            self.sample_rate = record.sample_rate
        rate = self.sample_rate
        if record.sample > epoch.watermark:
            if epoch.watermark:
                epoch.callback = max(epoch.callback, min(record.sample - epoch.watermark, int(rate)))
            epoch.watermark = record.sample
        bounds = epoch.bounds
        bounds.append((record.receive_time, record.sample - rate * record.receive_time))
        while bounds and bounds[0][0] < record.receive_time - BOUND_WINDOW_S:
            bounds.popleft()

    def lower_bound(self) -> float | None:
        """The smallest offset (TTL sample - rate * onset time) the arrivals allow; None before any data."""
        bounds = self._epoch.bounds
        return max(b for _, b in bounds) if bounds else None

    # ------------------------------------------------------------------ showings

    def _window_samples(self) -> int:
        return ms_to_samples(self.spec.pairing_window_ms, self.sample_rate)

    def _late_margin(self) -> int:
        """One processing callback: spikes near a buffer's end come with the next one."""
        return self._epoch.callback or int(round(DEFAULT_CALLBACK_S * self.sample_rate))

    def current(self, onset_m: np.ndarray) -> np.ndarray:
        """Which onsets fall in the current epoch (their TTL at or after its sample 0)."""
        bound = self.lower_bound()
        if bound is None:
            return np.zeros(len(onset_m), dtype=bool)
        return self.sample_rate * onset_m + bound >= 0

    def ready(self, onset_m: np.ndarray) -> bool:
        """Whether every onset's windows are final even at the latest TTL the pairing window allows."""
        shown = np.isfinite(onset_m)
        current = self.current(onset_m) & shown
        if not current.any():
            # Onsets before this epoch's sample 0 can never be paired; once the epoch has data, that is known.
            return self.lower_bound() is not None
        rate, bound = self.sample_rate, self.lower_bound()
        span_end = max(self.windows.span_ms()[1], 0.0)
        need = (rate * float(np.max(onset_m[current])) + bound + self._window_samples()
                + ms_to_samples(self.spec.ttl_tolerance_ms + span_end, rate) + self._late_margin())
        return self.watermark >= need

    def close_showing(self, onset_m: np.ndarray, display_valid: np.ndarray,
                      display_times: np.ndarray | None = None, lower_bound: float | None | str = "arrivals") \
            -> ClosedShowing:
        """Pair, validate and score one showing; edges it pairs are not offered to later showings.

        ``onset_m``: onsets on time.monotonic (NaN: not shown); ``display_valid``: the display's own verdict;
        ``display_times``: onsets on the display's clock, for the clock map. ``lower_bound="arrivals"`` uses
        the arrivals' bound; None pairs with no bound (files written before onsets were stamped on
        time.monotonic).
        """
        onset_m = np.asarray(onset_m, dtype=np.float64)
        n = len(onset_m)
        epoch, rate = self._epoch, self.sample_rate
        reasons = np.where(np.asarray(display_valid, dtype=bool), "", "display").astype(object)
        shown = np.isfinite(onset_m)
        reasons[~shown & (reasons == "")] = "display"
        bound = self.lower_bound() if lower_bound == "arrivals" else lower_bound
        current = shown & (self.current(onset_m) if lower_bound == "arrivals" else True)
        reasons[(reasons == "") & shown & ~current] = "restart"
        ttl_samples = np.full(n, -1, dtype=np.int64)
        if rate is None or not current.any():
            reasons[reasons == ""] = "silent" if rate is None else "restart"
            return self._closed(onset_m, reasons, ttl_samples, Pairing(np.full(n, -1)), display_times, 0)
        tol = ms_to_samples(self.spec.ttl_tolerance_ms, rate)
        if bound is not None:
            # An onset whose latest possible TTL lies beyond the watermark cannot be paired yet: the stream
            # went quiet, or the showing was closed early. It is "silent", never "missing-ttl".
            due = current & (rate * onset_m + bound + self._window_samples() + tol <= epoch.watermark)
            reasons[(reasons == "") & current & ~due] = "silent"
            current = due
        edges = np.sort(np.asarray(epoch.edges, dtype=np.int64))
        edges = edges[edges > epoch.consumed]
        pairing = pair_sequence(onset_m[current], edges, rate, tol, bound,
                                None if bound is None else self._window_samples())
        index = np.full(n, -1, dtype=np.int64)
        index[current] = pairing.ttl_index
        crowded = np.zeros(n, dtype=bool)
        crowded[current] = pairing.crowded if pairing.crowded.size else False
        paired = index >= 0
        ttl_samples[paired] = edges[index[paired]]
        span = self.windows.span_ms()
        predicted = np.full(n, np.nan)
        if pairing.offset is not None:
            predicted[current] = pairing.offset + rate * onset_m[current]
        anchors = np.where(paired, ttl_samples, np.rint(np.nan_to_num(predicted)).astype(np.int64))
        start = anchors + ms_to_samples(span[0], rate)
        stop = anchors + ms_to_samples(span[1], rate)
        in_gap = overlaps(epoch.gaps, np.minimum(start, anchors - tol), np.maximum(stop, anchors + tol))
        final = stop + self._late_margin() <= epoch.watermark
        for i in np.flatnonzero(reasons == ""):
            if not pairing.accepted:
                reasons[i] = "unpaired"
            elif in_gap[i]:
                reasons[i] = "gap"
            elif not paired[i]:
                reasons[i] = "silent" if predicted[i] + tol > epoch.watermark else "missing-ttl"
            elif crowded[i]:
                reasons[i] = "ambiguous-ttl"
            elif not final[i]:
                reasons[i] = "silent"
        if pairing.accepted:
            self.last_latency_ms = pairing.latency_ms
            epoch.consumed = max(epoch.consumed, int(ttl_samples[paired].max()) if paired.any() else -1)
        return self._closed(onset_m, reasons, ttl_samples, pairing, display_times, int(tol))

    def _closed(self, onset_m: np.ndarray, reasons: np.ndarray, ttl_samples: np.ndarray, pairing: Pairing,
                display_times: np.ndarray | None, tol: int) -> ClosedShowing:
        valid = reasons == ""
        scores = np.full((len(onset_m), len(self.selectors)), np.nan)
        if valid.any():
            scores[valid] = self._score(ttl_samples[valid])
        diagnostics = self._diagnostics(onset_m, reasons, ttl_samples, pairing, display_times)
        self._prune()
        return ClosedShowing(scores, valid, [str(r) for r in reasons], ttl_samples, self.epoch_number, pairing,
                             diagnostics)

    def _score(self, anchors: np.ndarray) -> np.ndarray:
        rate, windows = self.sample_rate, self.windows
        scores = np.zeros((len(anchors), len(self.selectors)))
        baseline = np.zeros_like(scores)
        for c, spikes in enumerate(self._epoch.spikes):
            ordered = np.sort(np.asarray(spikes, dtype=np.int64))
            scores[:, c] = window_rates(ordered, anchors, windows.response_ms, rate)
            if windows.baseline != "none":
                baseline[:, c] = window_rates(ordered, anchors, windows.baseline_ms, rate)
        if windows.baseline == "pre":
            return scores - baseline
        if windows.baseline == "early":
            # The early window averaged over every valid trial so far, per channel.
            self._early_sum += baseline.sum(axis=0)
            self._early_n += len(anchors)
            return scores - self._early_sum / self._early_n
        return scores

    def _diagnostics(self, onset_m: np.ndarray, reasons: np.ndarray, ttl_samples: np.ndarray, pairing: Pairing,
                     display_times: np.ndarray | None) -> dict[str, Any]:
        paired = ttl_samples >= 0
        times = onset_m if display_times is None else np.asarray(display_times, dtype=np.float64)
        counts = {r: int((reasons == r).sum()) for r in set(reasons.tolist()) if r}
        return {
            "onsets": int(np.isfinite(onset_m).sum()),
            "paired": int(paired.sum()),
            "invalid": counts,
            "pairing": {"accepted": pairing.accepted, "refused": pairing.refused,
                        "latency_ms": pairing.latency_ms, "residual_ms": pairing.residual_ms,
                        "pairing_window_ms": self.spec.pairing_window_ms, "ttl_edges": self.spec.ttl_edges,
                        "competitors": pairing.competitors},
            "ttl_samples": ttl_samples.tolist(),
            "watermark": int(self.watermark),
            "epoch": self.epoch_number,
            "sample_rate": self.sample_rate,
            "clock_map": fit_clock(times[paired], ttl_samples[paired]),
        }

    def _prune(self) -> None:
        epoch = self._epoch
        before = epoch.watermark - int(KEEP_S * self.sample_rate)
        epoch.spikes = [[s for s in spikes if s >= before] for spikes in epoch.spikes]
        epoch.edges = [s for s in epoch.edges if s >= before and s > epoch.consumed]
        epoch.gaps = [(a, b) for a, b in epoch.gaps if b >= before]
