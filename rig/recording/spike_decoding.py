"""Every spike of a session's recorded raw stream, and the display-clock time of each.

The stored ZeroMQ frames go through the live parser (``SessionReplayReader``);
onsets are paired with TTLs as ``rig replay --rescore`` does
(:func:`rig.recording.rescore.pair_showing`), and one linear map from sample
to display time is fitted per recording epoch (an acquisition restart or a
resumed run begins a new one).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rig.recording.openephys_wire import Discontinuity, Spike, Ttl, Watermark
from rig.recording.replay_reader import SessionReplayReader
from rig.recording.rescore import pair_showing, recorded_recording_spec
from rig.recording.scoring import ms_to_samples
from rig.session import RecordedSession, SessionFileError

__all__ = ["DecodedSpikes", "decode_spikes"]


@dataclass
class _Epoch:
    """What was recorded on one sample clock (an acquisition restart or a resumed run begins a new one)."""

    first_block: int = 0  # the block being shown when the epoch began: it says which run (process) recorded it
    ttls: list[int] = field(default_factory=list)
    watermark: int = 0
    consumed: int = -1  # TTLs at or before this sample were paired by an earlier showing
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
    """Replay the stored raw frames through the live parser; pair onsets with TTLs as ``rig replay --rescore`` does.

    Raises:
        NoRawStreamError: the session was not recorded from a stream.
        SessionFileError: the stream's sample rate is unknown.
    """
    spec = recorded_recording_spec(session)
    units: dict[tuple[str, str, int], list[tuple[int, int]]] = defaultdict(list)
    epochs = [_Epoch()]
    at_end: dict[tuple[int, int], tuple[int, int]] = {}
    rate = spec.sample_rate
    with SessionReplayReader(session) as reader:
        for records in reader:
            if reader.new_reader and epochs[-1].watermark:
                epochs.append(_Epoch(reader.showing[0]))  # a resumed run: not paired with what came before
            for record in records:
                ours = spec.stream is None or record.stream == spec.stream
                if isinstance(record, Spike):
                    units[(record.stream, record.electrode, record.unit)].append(
                        (len(epochs) - 1 if ours else -1, record.sample))
                elif not ours:
                    continue
                elif isinstance(record, Ttl):
                    if record.line == spec.ttl_line and record.state == 1:
                        epochs[-1].ttls.append(record.sample)
                elif isinstance(record, Watermark):
                    rate = rate if spec.sample_rate is not None else record.sample_rate
                    epochs[-1].watermark = max(epochs[-1].watermark, record.sample)
                elif isinstance(record, Discontinuity) and record.kind == "restart":
                    epochs.append(_Epoch(reader.showing[0]))
            if reader.at_showing_end:
                at_end[reader.showing] = (len(epochs) - 1, len(epochs[-1].ttls))
    if rate is None:
        raise SessionFileError(f"{session.path}: the raw stream has no continuous-data message, so its sample rate "
                               f"is unknown; set [recording] sample_rate")
    tol = ms_to_samples(spec.ttl_tolerance_ms, rate)
    pairing: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
    for block in session.blocks:
        for number, stored in enumerate(block.showings):
            if (block.index, number) not in at_end:
                continue
            e, ttl_count = at_end[(block.index, number)]
            epoch = epochs[e]
            showing = pair_showing(epoch, ttl_count, stored, rate, tol)
            available, ttl_index, onsets = showing.available, showing.ttl_index, showing.onsets
            paired = ttl_index >= 0
            ttl = np.where(paired, available[np.maximum(ttl_index, 0)] if available.size else -1, -1)
            if paired.any():
                epoch.onsets.extend(onsets[paired].tolist())
                epoch.samples.extend(ttl[paired].tolist())
            pairing[(block.index, number)] = (ttl, e)
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
