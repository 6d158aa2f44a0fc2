"""Score a recorded session again from its raw spikes, with other windows or baselines (``rig replay --rescore``).

The raw stream stored in the session is replayed through the live parser
(:class:`~rig.recording.replay_reader.SessionReplayReader`), and every
showing is scored with the functions of :mod:`rig.recording.scoring`, as
:class:`~rig.recording.zmq_source.ZmqRecording` scored it live:

- each onset is paired with a TTL rising edge on the recorded ``ttl_line``.
  Offline the display's onset times are aligned with the showing's TTLs (the
  offset that pairs the most onsets within ``ttl_tolerance_ms``, refined to
  the median), then :func:`~rig.recording.scoring.pair_onsets` pairs them one
  to one; TTLs paired by an earlier showing are not offered again;
- a stimulus is rescored only if it was valid when recorded (a dropped frame,
  gap, restart or missing TTL stays a lost stimulus), is paired, its new
  windows end before the stream's last watermark and overlap no gap;
- the ``early`` baseline is the running mean over every valid trial so far,
  showing by showing, per channel, exactly as live.

With the recorded windows this reproduces the recorded scores; nothing is
ever written into the session file.
"""
from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protocols.spec import RecordingSpec
from rig.recording.openephys_wire import Discontinuity, Spike, Ttl, Watermark
from rig.recording.replay_reader import COUNTERS, NoRawStreamError, SessionReplayReader, recorded_counters
from rig.recording.scoring import (Windows, estimate_offset, ms_to_samples, overlaps, pair_onsets,
                                   window_rates)
from rig.recording.zmq_source import UnitSelector
from rig.session import RecordedSession, SessionFileError, read_session


def recorded_recording_spec(session: RecordedSession) -> RecordingSpec:
    """The ``[recording]`` settings the session ran with (from its provenance)."""
    neuron = session.provenance.get("neuron", {})
    table = neuron.get("recording") if isinstance(neuron, dict) else None
    if not isinstance(table, dict):
        raise NoRawStreamError(f"{session.path}: provenance has no neuron.recording: the session was not "
                               f"recorded from a stream (--neuron zmq://...), so there is nothing to rescore")
    known = {f.name for f in dataclasses.fields(RecordingSpec)}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in table.items() if k in known}
    try:
        return RecordingSpec(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SessionFileError(f"{session.path}: provenance neuron.recording is not a valid recording spec: "
                               f"{exc}") from None


def recorded_windows(spec: RecordingSpec) -> Windows:
    """The windows the session was scored with live."""
    return Windows(tuple(spec.response_window_ms), spec.baseline, tuple(spec.baseline_window_ms))


@dataclass
class _Epoch:
    """Everything recorded on one sample clock (acquisition restarts begin a new one)."""

    spikes: list[list[int]]
    ttls: list[int] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    watermark: int = 0
    consumed: int = -1  # TTLs at or before this sample were paired by an earlier showing


@dataclass
class ShowingScores:
    """One showing rescored: block positions, recorded and rescored scores (stimuli x channels), validity."""

    block: int
    showing: int
    positions: np.ndarray
    recorded: np.ndarray
    rescored: np.ndarray
    recorded_valid: np.ndarray
    valid: np.ndarray
    #: Per stimulus, "" or why it was not rescored: the recorded reason, "missing-ttl", "gap" or "unfinished"
    #: (its new windows end after the stream's last watermark).
    reasons: list[str] = field(default_factory=list)


@dataclass
class BlockScores:
    """One block's final scores (each stimulus from the showing where it was recorded valid)."""

    index: int
    stimulus_ids: list[str]
    kinds: list[str]
    showing: np.ndarray
    recorded: np.ndarray
    rescored: np.ndarray
    reasons: list[str] = field(default_factory=list)


@dataclass
class RescoreResult:
    """What :func:`rescore_session` found."""

    path: Path
    channel_names: list[str]
    recorded_windows: Windows
    windows: Windows
    showings: list[ShowingScores]
    blocks: list[BlockScores]
    stream: dict[str, Any]
    #: Where the replayed stream's counters differ from those the live reader stored ("" when none do).
    stream_mismatches: list[str] = field(default_factory=list)

    def write_csv(self, out: str | Path) -> Path:
        """One row per block, stimulus and channel: recorded and rescored score (empty when invalid)."""
        out = Path(out)
        if out.resolve() == self.path.resolve():
            raise ValueError(f"--out {out}: that is the session file being read; choose another file")
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["block", "showing", "stimulus_id", "kind", "channel", "recorded_score",
                             "rescored_score", "not_rescored_because"])
            for b in self.blocks:
                for i, sid in enumerate(b.stimulus_ids):
                    for c, name in enumerate(self.channel_names):
                        writer.writerow([b.index, int(b.showing[i]), sid, b.kinds[i], name,
                                         _cell(b.recorded[i, c]), _cell(b.rescored[i, c]), b.reasons[i]])
        return out

    def summary(self) -> list[str]:
        """One line per block and channel: stimuli rescored, mean recorded and rescored score, correlation."""
        lines = []
        for b in self.blocks:
            for c, name in enumerate(self.channel_names):
                rec, new = b.recorded[:, c], b.rescored[:, c]
                both = np.isfinite(rec) & np.isfinite(new)
                r = (f"{np.corrcoef(rec[both], new[both])[0, 1]:.3f}"
                     if both.sum() > 2 and np.ptp(rec[both]) > 0 and np.ptp(new[both]) > 0 else "n/a")
                lines.append(f"block {b.index} {name}: {int(np.isfinite(new).sum())}/{len(b.stimulus_ids)} rescored, "
                             f"mean recorded {_mean(rec)} rescored {_mean(new)}, r={r}")
        return lines


def _cell(value: float) -> str:
    return repr(float(value)) if np.isfinite(value) else ""


def _mean(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    return f"{finite.mean():.2f}" if finite.size else "n/a"


def align_offset(onset_s: np.ndarray, ttl_samples: np.ndarray, sample_rate: float, tolerance: float) -> float | None:
    """Offset ``ttl - rate * onset`` (samples) that pairs the most onsets with a TTL within ``tolerance``.

    Offline there is no prior: every TTL is tried against each of the first
    few onsets (one of them may have lost its TTL), the offset pairing the
    most wins, and :func:`estimate_offset` refines it to the median.
    """
    ttl = np.sort(np.asarray(ttl_samples, dtype=np.float64))
    onset_s = np.asarray(onset_s, dtype=np.float64)
    if ttl.size == 0 or onset_s.size == 0:
        return None
    base = sample_rate * onset_s
    best: tuple[int, float, float] | None = None
    for anchor in base[:3]:
        for candidate in ttl - anchor:
            predicted = candidate + base
            idx = np.clip(np.searchsorted(ttl, predicted), 1, max(ttl.size - 1, 1))
            near = np.minimum(np.abs(ttl[idx - 1] - predicted), np.abs(ttl[np.minimum(idx, ttl.size - 1)] - predicted))
            close = near <= tolerance
            key = (int(close.sum()), -float(near[close].sum()), candidate)
            if best is None or key[:2] > best[:2]:
                best = key
    if best is None or best[0] == 0:
        return None
    return estimate_offset(onset_s, ttl, sample_rate, best[2], tolerance)


@dataclass
class PairedShowing:
    """One showing's onsets paired with its epoch's TTLs (see :func:`pair_showing`)."""

    available: np.ndarray  # the epoch's TTL samples this showing could use, sorted
    ttl_index: np.ndarray  # per stimulus, index into ``available``; -1: unpaired
    onsets: np.ndarray  # display clock, s; NaN where not shown
    reasons: list[str]  # why the live run found each stimulus's response invalid; "" if valid


def pair_showing(epoch: Any, ttl_count: int, stored: dict[str, Any], rate: float, tolerance: int) -> PairedShowing:
    """Pair a stored showing's onsets with the TTLs its epoch had received by the showing's end.

    ``epoch`` has ``ttls`` (samples, in arrival order) and ``consumed``: TTLs at
    or before that sample were paired by an earlier showing; it is advanced
    past the TTLs this showing pairs. Only onsets the live run found valid fix
    the offset, as live.
    """
    available = np.sort(np.asarray(epoch.ttls[:ttl_count], dtype=np.int64))
    available = available[available > epoch.consumed]
    onsets = np.asarray(stored["onset_times"], dtype=np.float64)
    reasons = [r.decode() if isinstance(r, bytes) else str(r) for r in stored["invalid_reasons"]]
    recorded_valid = np.array([r == "" for r in reasons], dtype=bool)
    shown = np.isfinite(onsets)
    ttl_index = np.full(len(onsets), -1)
    offset = align_offset(onsets[shown & recorded_valid], available, rate, tolerance)
    if offset is not None:
        ttl_index[shown] = pair_onsets(offset + rate * onsets[shown], available, tolerance)
    if (ttl_index >= 0).any():
        epoch.consumed = max(epoch.consumed, int(available[ttl_index.max()]))
    return PairedShowing(available, ttl_index, onsets, reasons)


def _replay(reader: SessionReplayReader, spec: RecordingSpec, selectors: list[UnitSelector],
            counters: dict[tuple[int, int], dict[str, Any]] | None = None,
            mismatches: list[str] | None = None) -> tuple[list[_Epoch], dict[tuple[int, int], tuple[int, int]],
                                                          float | None, set[int]]:
    """Every record of the stream, by epoch; per showing, the epoch and TTL count when its messages ended.

    Also returns the blocks where a resumed run (a fresh live reader, a fresh early baseline) began.

    Each showing's replayed counters are checked against ``counters`` (what
    the live reader stored); differences are appended to ``mismatches``.
    """
    epochs = [_Epoch([[] for _ in selectors])]
    at_end: dict[tuple[int, int], tuple[int, int]] = {}
    resumed: set[int] = set()
    rate = spec.sample_rate
    for records in reader:
        if reader.new_reader and epochs[-1].watermark:
            epochs.append(_Epoch([[] for _ in selectors]))  # a resumed run: what came before is not paired with it
            resumed.add(reader.showing[0])
        for record in records:
            if spec.stream is not None and record.stream != spec.stream:
                continue
            epoch = epochs[-1]
            if isinstance(record, Spike):
                for channel, selector in enumerate(selectors):
                    if selector.matches(record):
                        epoch.spikes[channel].append(record.sample)
            elif isinstance(record, Ttl):
                if record.line == spec.ttl_line and record.state == 1:
                    epoch.ttls.append(record.sample)
            elif isinstance(record, Watermark):
                rate = rate if spec.sample_rate is not None else record.sample_rate
                epoch.watermark = max(epoch.watermark, record.sample)
            elif isinstance(record, Discontinuity):
                if record.kind == "restart":
                    epochs.append(_Epoch([[] for _ in selectors]))
                else:
                    epoch.gaps.append((record.from_sample, record.to_sample + 1))
        if reader.at_showing_end:
            at_end[reader.showing] = (len(epochs) - 1, len(epochs[-1].ttls))
            live = (counters or {}).get(reader.showing)
            if live is not None and mismatches is not None:
                replayed = {k: getattr(reader.stats, k) for k in COUNTERS}
                if replayed != live:
                    block, number = reader.showing
                    mismatches.append(f"block {block} showing {number:02d}: live reader counted {live}, "
                                      f"the replay {replayed}")
    return epochs, at_end, rate, resumed


def rescore_session(path: str | Path, windows: Windows | None = None) -> RescoreResult:
    """Score every stimulus of a recorded session again from its raw stream (read-only).

    ``windows`` default to the recorded ones, which reproduce the recorded scores.

    Raises:
        SessionFileError: unreadable file, or (``NoRawStreamError``) a session with no raw stream.
    """
    session = read_session(path)
    spec = recorded_recording_spec(session)
    original = recorded_windows(spec)
    windows = windows or original
    selectors = [UnitSelector.parse(u) for u in spec.units]
    mismatches: list[str] = []
    with SessionReplayReader(session) as reader:
        epochs, at_end, rate, resumed = _replay(reader, spec, selectors, recorded_counters(session), mismatches)
        stream = {**reader.stats.as_dict(), "messages_replayed": reader.messages_replayed}
    if rate is None:
        raise SessionFileError(f"{session.path}: the raw stream has no continuous-data message, so its sample rate "
                               f"is unknown; set [recording] sample_rate")
    sorted_spikes = [[np.sort(np.asarray(s, dtype=np.int64)) for s in e.spikes] for e in epochs]
    tol = ms_to_samples(spec.ttl_tolerance_ms, rate)
    span = windows.span_ms()
    early_sum, early_n = np.zeros(len(selectors)), 0
    showings: list[ShowingScores] = []
    blocks: list[BlockScores] = []
    for block in session.blocks:
        if block.index in resumed:
            early_sum, early_n = np.zeros(len(selectors)), 0  # the resumed run's source started afresh
        n = len(block.stimulus_ids)
        final_showing = np.full(n, -1)
        block_reasons = ["not shown"] * n
        rescored_block = np.full((n, len(selectors)), np.nan)
        for number, stored in enumerate(block.showings):
            if (block.index, number) not in at_end:
                continue
            e, ttl_count = at_end[(block.index, number)]
            epoch = epochs[e]
            positions = np.asarray(stored["positions"], dtype=np.int64)
            paired = pair_showing(epoch, ttl_count, stored, rate, tol)
            available, ttl_index, reasons = paired.available, paired.ttl_index, paired.reasons
            recorded_valid = np.array([r == "" for r in reasons], dtype=bool)
            anchors = available[np.maximum(ttl_index, 0)] if available.size else np.zeros(len(positions), np.int64)
            start = anchors + ms_to_samples(span[0], rate)
            stop = anchors + ms_to_samples(span[1], rate)
            in_gap = overlaps(epoch.gaps, np.minimum(start, anchors - tol), np.maximum(stop, anchors + tol))
            why = [f"recorded {r}" if r else "missing-ttl" if ttl_index[i] < 0 else "gap" if in_gap[i]
                   else "unfinished" if stop[i] > epoch.watermark else "" for i, r in enumerate(reasons)]
            valid = np.array([w == "" for w in why], dtype=bool)
            scores = np.full((len(positions), len(selectors)), np.nan)
            if valid.any():
                scores[valid], early_sum, early_n = _score(sorted_spikes[e], anchors[valid], windows, rate,
                                                           early_sum, early_n)
            showings.append(ShowingScores(block.index, number, positions, np.asarray(stored["scores"], float),
                                          scores, recorded_valid, valid, why))
            rescored_block[positions[recorded_valid]] = scores[recorded_valid]
            final_showing[positions[recorded_valid]] = number
            for i in np.flatnonzero(recorded_valid):
                block_reasons[positions[i]] = why[i]
        blocks.append(BlockScores(block.index, block.stimulus_ids, block.kinds, final_showing, block.scores,
                                  rescored_block, block_reasons))
    return RescoreResult(session.path, list(session.blocks[0].channel_names) if session.blocks else list(spec.units),
                         original, windows, showings, blocks, stream, mismatches)


def _score(spikes: list[np.ndarray], anchors: np.ndarray, windows: Windows, rate: float, early_sum: np.ndarray,
           early_n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rates in the response window minus the baseline, as ``ZmqRecording._score`` computes them live."""
    scores = np.zeros((len(anchors), len(spikes)))
    baseline_rates = np.zeros_like(scores)
    for c, sorted_spikes in enumerate(spikes):
        scores[:, c] = window_rates(sorted_spikes, anchors, windows.response_ms, rate)
        if windows.baseline != "none":
            baseline_rates[:, c] = window_rates(sorted_spikes, anchors, windows.baseline_ms, rate)
    if windows.baseline == "pre":
        return scores - baseline_rates, early_sum, early_n
    if windows.baseline == "early":
        early_sum = early_sum + baseline_rates.sum(axis=0)
        early_n += len(anchors)
        return scores - early_sum / early_n, early_sum, early_n
    return scores, early_sum, early_n
