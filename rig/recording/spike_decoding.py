"""Every spike of a session's recorded raw stream, and the display-clock time of each.

The stored ZeroMQ frames go through the live parser (``SessionReplayReader``);
onsets are paired with TTLs by the scorer that paired them live
(:func:`rig.recording.rescore.replay_showings`), and one linear map from
sample to display time is fitted per recording epoch (an acquisition restart
or a resumed run begins a new one).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rig.recording.records import Discontinuity, Record, Spike
from rig.recording.replay_reader import SessionReplayReader
from rig.recording.rescore import recorded_recording_spec, replay_showings
from rig.session import RecordedSession

__all__ = ["DecodedSpikes", "decode_spikes"]


@dataclass
class _Epoch:
    """The onset-TTL pairs of one sample clock (an acquisition restart or a resumed run begins a new one)."""

    first_block: int = 0  # the block being shown when the epoch began: it says which run (process) recorded it
    onsets: list[float] = field(default_factory=list)  # display time of each paired onset ...
    samples: list[int] = field(default_factory=list)  # ... and its TTL sample


@dataclass
class DecodedSpikes:
    """Every spike of the raw stream, the onset-TTL pairing of every showing and the clock maps."""

    #: (stream, electrode, sorted id) -> [(epoch, sample)], epoch -1 for a stream other than the TTLs'.
    units: dict[tuple[str, str, int], list[tuple[int, int]]]
    #: (block, showing) -> (TTL sample per stimulus, -1 when unpaired; epoch).
    pairing: dict[tuple[int, int], tuple[np.ndarray, int]]
    #: Per epoch: display time = (sample - intercept) / slope + display_mean, or None without two pairs.
    clocks: list[dict[str, Any] | None]
    #: Per epoch, the block being shown when it began (which run recorded it, for rig.session.clock).
    epoch_first_block: list[int]
    sample_rate: float
    selectors: list[str]


def decode_spikes(session: RecordedSession) -> DecodedSpikes:
    """Replay the stored raw frames through the live parser; pair onsets with TTLs as the live run did.

    Raises:
        NoRawStreamError: the session was not recorded from a stream.
        SessionFileError: the stream's sample rate is unknown.
    """
    spec = recorded_recording_spec(session)
    units: dict[tuple[str, str, int], list[tuple[int, int]]] = defaultdict(list)
    epochs = [_Epoch()]

    def collect(records: list[Record], reader: SessionReplayReader) -> None:
        if reader.new_reader and (epochs[-1].samples or len(epochs) > 1 or units):
            epochs.append(_Epoch(reader.showing[0]))  # a resumed run: not paired with what came before
        for record in records:
            ours = spec.stream is None or record.stream == spec.stream
            if isinstance(record, Spike):
                units[(record.stream, record.electrode, record.unit)].append(
                    (len(epochs) - 1 if ours else -1, record.sample))
            elif ours and isinstance(record, Discontinuity) and record.kind == "restart":
                epochs.append(_Epoch(reader.showing[0]))

    pairing: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
    rate = spec.sample_rate
    for block, number, showing, closed in replay_showings(session, spec, on_records=collect):
        e = len(epochs) - 1
        onsets = np.asarray(showing["onset_times"], dtype=np.float64)
        paired = closed.ttl_samples >= 0
        epochs[e].onsets.extend(onsets[paired].tolist())
        epochs[e].samples.extend(closed.ttl_samples[paired].tolist())
        pairing[(block, number)] = (closed.ttl_samples, e)
        rate = closed.diagnostics["sample_rate"]
    return DecodedSpikes(units=dict(units), pairing=pairing, clocks=[_fit_clock(e) for e in epochs],
                         epoch_first_block=[e.first_block for e in epochs], sample_rate=rate,
                         selectors=[str(u) for u in spec.units])


def _fit_clock(epoch: _Epoch) -> dict[str, Any] | None:
    """Least-squares ``sample = slope * (display - display_mean) + intercept`` over the epoch's onset-TTL pairs."""
    t = np.asarray(epoch.onsets, dtype=np.float64)
    s = np.asarray(epoch.samples, dtype=np.float64)
    if len(t) < 2 or np.ptp(t) == 0:
        return None
    mean = float(t.mean())
    slope, intercept = np.polyfit(t - mean, s, 1)
    residual_ms = (s - (slope * (t - mean) + intercept)) / slope * 1000.0
    return {"pairs": int(len(t)), "samples_per_display_second": float(slope), "sample_at_display_mean": float(intercept),
            "display_mean": mean, "residual_ms_max": float(np.max(np.abs(residual_ms)))}
