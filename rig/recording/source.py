"""``StreamRecording``: responses scored from a live recording, whatever its transport.

A transport (:mod:`rig.recording.transports`: ``zmq://`` for the Open Ephys
ZMQ Interface, ``lsl://`` for Lab Streaming Layer) supplies the live reader;
everything else here is the same for all of them. How one showing (a pass
of the display over some stimuli) is scored:

1. From :meth:`StreamRecording.start` on, the reader's thread receives
   all the time (e.g. :class:`~rig.recording.openephys.reader.ZmqReader`), the display's
   frames included, so nothing waits in a queue.
2. At each onset the display calls :meth:`StreamRecording.on_onset`, which
   stamps ``time.monotonic()`` (the display's own clock may differ, e.g.
   PsychoPy's) and nothing else, so frames stay on time.
3. :meth:`StreamRecording.record` feeds the records to the
   :class:`~rig.recording.scorer.StreamScorer` until the watermark has passed
   the end of every stimulus's windows at the latest TTL the pairing window
   allows, or ``timeout_s`` after that should have happened.
4. The scorer pairs the onsets with TTL edges as a sequence (a shifted pairing
   is refused, never accepted), marks stimuli invalid with a reason (shown
   again by the controller, never scored as zero), and scores the rest.

A stream that sends nothing at all raises :class:`StreamAbsentError` (at
:meth:`StreamRecording.start`) or :class:`StreamSilentError` (during a showing),
naming the endpoint and what to check.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from protocols.base import Block, ByteStrings, Responses, TextStrings
from protocols.spec import RecordingSpec
from rig.display import Presentations
from rig.recording.scorer import StreamScorer
from rig.recording.stream_log import StreamLog
from rig.recording.units import UnitSelector
from rig.recording.transports import Transport, transport_for
from rig.sources import ResponseSource

__all__ = ["RecordedResponses", "RecordingError", "StreamAbsentError", "StreamRecording", "StreamSilentError",
           "UnitSelector", "ZmqRecording"]


class RecordingError(RuntimeError):
    """The recording stream cannot deliver responses."""


class StreamAbsentError(RecordingError, ValueError):
    """No message ever arrived from the stream (a setup mistake: reported like bad input, before anything runs)."""


class StreamSilentError(RecordingError):
    """The stream stopped sending during a showing."""


@dataclass
class RecordedResponses(Responses):
    """Responses plus what the recording saw: the stream's log, why stimuli were invalid, diagnostics."""

    stream_log: StreamLog = field(default_factory=StreamLog)
    #: Each stimulus's onset on time.monotonic, as stamped at the flip (what the pairing used).
    onset_monotonic: np.ndarray = field(default_factory=lambda: np.zeros(0))
    invalid_reasons: list[str] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def showing_record(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The stream's log, each onset on time.monotonic, why stimuli were invalid, and the diagnostics."""
        datasets = self.stream_log.to_arrays()
        datasets["raw_frames"] = ByteStrings(datasets["raw_frames"])
        for key in ("data_run_streams", "malformed_messages"):
            datasets[key] = TextStrings(datasets[key])
        datasets["malformed_count"] = np.array([datasets["malformed_count"]], dtype=np.int64)
        datasets["onset_monotonic"] = np.asarray(self.onset_monotonic, dtype=np.float64)
        datasets["invalid_reasons"] = TextStrings(self.invalid_reasons)
        return datasets, {"recording": json.dumps(self.diagnostics, default=str)}


class StreamRecording(ResponseSource):
    """A response source reading a live recording through ``transport``'s reader (DESIGN.md §3-4)."""

    def __init__(self, spec: RecordingSpec, transport: Transport, options: Any) -> None:
        self.transport, self.options = transport, options
        self.spec = transport.configure(spec, options)
        self.scorer = StreamScorer(self.spec)
        self.windows = self.scorer.windows
        self.selectors = self.scorer.selectors
        self.channel_names = list(self.spec.units)
        self.reader = transport.open_reader(self.spec, options)
        self._open = False
        self._onsets: dict[tuple[int, str], float] = {}  # (block, stimulus id) -> monotonic onset
        self.last_refusal = ""
        self._warned_garbage = False
        self.showings = 0
        self.lag_s: list[float] = []
        self.last_scoring_s = 0.0

    @property
    def sample_rate(self) -> float | None:
        return self.scorer.sample_rate

    @property
    def watermark(self) -> int:
        return self.scorer.watermark

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
            if self.sample_rate is not None and self.scorer.lower_bound() is not None:
                return
            self.reader.wait(0.02)
        heard = self.reader.stats.messages
        hint = self.transport.absent_hint(self.spec, self.options, self.reader)
        self.close()
        raise StreamAbsentError(
            f"no continuous data from {self.reader.endpoint} within {self.spec.connect_timeout_s:g} s "
            f"({heard} messages of any kind, {hint}")

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
                "transport": {"scheme": self.transport.scheme, **asdict(self.options)},
                "reader": self.reader.get_initial(), "stream": self.reader.stats.as_dict(),
                "sample_rate": self.sample_rate}

    def explain_invalid(self) -> str:
        """Why the last showings' stimuli could not be scored, for the controller's error message."""
        return self.last_refusal

    # ------------------------------------------------------------------ stream

    def on_onset(self, block: Block, position: int, onset_time: float) -> None:
        """Onset listener: note when (on time.monotonic) the stimulus appeared; nothing else, between frames."""
        self._onsets[(block.index, block.stimulus_ids[position])] = time.monotonic()

    def _poll(self) -> int:
        records = self.reader.read_next()
        self.scorer.feed(records)
        return len(records)

    # ------------------------------------------------------------------ scoring

    def _record(self, block: Block, presentations: Presentations) -> Responses:
        if not self._open:
            self.start()
        onset_m = self._onset_clock(block, presentations)
        spec = self.spec
        span_end = max(self.windows.span_ms()[1], 0.0)
        deadline = (float(np.nanmax(onset_m)) + (spec.pairing_window_ms + span_end + spec.ttl_tolerance_ms) / 1000.0
                    + spec.timeout_s)
        while True:
            self._poll()
            if self.scorer.ready(onset_m):
                break
            if time.monotonic() > deadline:
                last = self.reader.stats.last_receive_time
                if last is None or last < float(np.nanmin(onset_m)):
                    raise StreamSilentError(
                        f"no message from {self.reader.endpoint} for {time.monotonic() - (last or 0):.1f} s, "
                        f"through a whole showing of {len(block)} stimuli plus {spec.timeout_s:g} s "
                        f"([recording] timeout_s): the stream is silent; is acquisition still running?")
                break
            self.reader.wait(0.005)
        records, log, counters = self.reader.take()
        self.scorer.feed(records)
        self._measure_lag()
        started = time.perf_counter()
        closed = self.scorer.close_showing(onset_m, presentations.valid, presentations.onset_times)
        scoring_s = self.last_scoring_s = time.perf_counter() - started
        for sid in block.stimulus_ids:
            self._onsets.pop((block.index, sid), None)
        self.showings += 1
        self._note(closed.diagnostics)
        self._check_garbage(log)
        diagnostics = {**closed.diagnostics, "stream": counters,
                       "reader": self.reader.health.as_dict(), "lag_s": self.lag_s[-1] if self.lag_s else None,
                       "scoring_s": scoring_s, "malformed_in_showing": log.malformed, "messages_in_showing": len(log)}
        return RecordedResponses(scores=closed.scores, valid=closed.valid, channel_names=list(self.channel_names),
                                 stream_log=log, onset_monotonic=onset_m, invalid_reasons=closed.reasons,
                                 diagnostics=diagnostics)

    def _measure_lag(self) -> None:
        """How far the scorer's watermark trails the recording clock now (the freshest arrival's estimate)."""
        bound = self.scorer.lower_bound()
        if bound is not None and self.sample_rate:
            now_sample = self.sample_rate * time.monotonic() + bound
            self.lag_s.append(max(0.0, (now_sample - self.scorer.watermark) / self.sample_rate))

    def _note(self, diagnostics: dict[str, Any]) -> None:
        """Keep what the operator needs: why the latest stimuli were invalid (a refused pairing first)."""
        pairing = diagnostics["pairing"]
        if pairing["refused"]:
            self.last_refusal = f"TTL pairing refused: {pairing['refused']}"
        elif diagnostics["invalid"]:
            self.last_refusal = f"invalid stimuli by reason: {diagnostics['invalid']}"

    def _check_garbage(self, log: StreamLog) -> None:
        """Say so, once, when most of what arrives is not the transport's format (a wrong port, another publisher)."""
        if log.malformed * 2 > len(log) and not self._warned_garbage:
            self._warned_garbage = True
            first = log.malformed_kept[0] if log.malformed_kept else ""
            print(f"rig: warning: the stream from {self.reader.endpoint} is mostly malformed: {log.malformed} of "
                  f"{len(log)} messages in the last showing could not be read as {self.transport.wire}; "
                  f"they are counted and skipped. First: {first[:200]}",
                  file=sys.stderr, flush=True)
            self.last_refusal = f"the stream is mostly malformed ({log.malformed} of {len(log)} messages)"

    def _onset_clock(self, block: Block, presentations: Presentations) -> np.ndarray:
        """Each stimulus's onset on time.monotonic, stamped by :meth:`on_onset` (or the display's own times
        when its clock is time.monotonic)."""
        stamped = [self._onsets.get((block.index, sid)) for sid in block.stimulus_ids]
        # A stimulus never put on screen (a trial broke before it) has no onset: NaN, "not shown" to the scorer.
        shown = np.isfinite(np.asarray(presentations.onset_times, dtype=np.float64))
        if all(t is not None for t, on in zip(stamped, shown) if on) and shown.any():
            return np.array([t if on and t is not None else np.nan for t, on in zip(stamped, shown)],
                            dtype=np.float64)
        if presentations.clock == "time.monotonic":
            return np.asarray(presentations.onset_times, dtype=np.float64)
        raise RuntimeError(
            f"{type(self).__name__} needs onset times on time.monotonic: register it with display.add_onset_listener "
            f"(the display's clock is {presentations.clock!r})")


def recording_from_url(spec: RecordingSpec, url: str) -> StreamRecording:
    """The recording ``url`` names (``zmq://HOST:PORT``, ``lsl://NAME``, ...), scored as ``spec`` says."""
    transport = transport_for(url)
    return StreamRecording(spec, transport, transport.parse(url))


def ZmqRecording(spec: RecordingSpec | None = None) -> StreamRecording:  # noqa: N802 - the older class's name
    """A recording over the Open Ephys ZMQ Interface at ``spec``'s host and data port (the name tests use)."""
    spec = spec or RecordingSpec()
    return recording_from_url(spec, f"zmq://{spec.host}:{spec.data_port}")
