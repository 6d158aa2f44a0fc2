"""Score a recorded session again from its raw spikes, with other windows or baselines (``rig replay --rescore``).

The raw stream stored in the session is replayed through the live parser
(:class:`~rig.recording.replay_reader.SessionReplayReader`) into the same
:class:`~rig.recording.scorer.StreamScorer` that scored it live, showing by
showing, with the onsets as the live run stamped them:

- each showing's onsets are paired with TTL edges as a sequence, exactly as
  live (same records, same arrival bound, same edges already paired);
- a stimulus is rescored only if it was valid when recorded (a dropped frame,
  gap, restart or missing TTL stays a lost stimulus), and its new windows are
  final and overlap no gap;
- the ``early`` baseline is the running mean over every valid trial so far,
  showing by showing, per channel, exactly as live.

With the recorded windows this reproduces the recorded scores; nothing is
ever written into the session file.
"""
from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protocols.spec import RecordingSpec
from rig.recording.records import Record
from rig.recording.replay_reader import COUNTERS, NoRawStreamError, SessionReplayReader, recorded_counters
from rig.recording.scorer import ClosedShowing, StreamScorer
from rig.recording.scoring import Windows
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
    kwargs.setdefault("ttl_edges", "rising")  # files from before ttl_edges paired rising edges only
    try:
        return RecordingSpec(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SessionFileError(f"{session.path}: provenance neuron.recording is not a valid recording spec: "
                               f"{exc}") from None


def recorded_windows(spec: RecordingSpec) -> Windows:
    """The windows the session was scored with live."""
    return Windows(tuple(spec.response_window_ms), spec.baseline, tuple(spec.baseline_window_ms))


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


def replay_showings(session: RecordedSession, spec: RecordingSpec, windows: Windows | None = None,
                    on_records: Callable[[list[Record], SessionReplayReader], None] | None = None,
                    mismatches: list[str] | None = None) -> Iterator[tuple[int, int, dict[str, Any], ClosedShowing]]:
    """Each stored showing closed by a :class:`StreamScorer` fed the stored stream: (block, showing, stored, closed).

    A resumed run began a fresh live source (fresh epochs and early baseline), so a fresh scorer starts there.
    ``on_records`` sees every batch of records as the scorer does. Each showing's replayed counters are
    checked against what the live reader stored; differences are appended to ``mismatches``.
    """
    stored = {(b.index, k): showing for b in session.blocks for k, showing in enumerate(b.showings)}
    counters = recorded_counters(session) if mismatches is not None else {}
    scorer = StreamScorer(spec, windows)
    with SessionReplayReader(session) as reader:
        for records in reader:
            if reader.new_reader:
                scorer = StreamScorer(spec, windows)
            if on_records is not None:
                on_records(records, reader)
            scorer.feed(records)
            if not reader.at_showing_end:
                continue
            block, number = reader.showing
            showing = stored[(block, number)]
            live = counters.get((block, number))
            if live is not None:
                replayed = {k: getattr(reader.stats, k) for k in COUNTERS}
                if replayed != live:
                    mismatches.append(f"block {block} showing {number:02d}: live reader counted {live}, "
                                      f"the replay {replayed}")
            yield block, number, showing, close_stored_showing(scorer, showing)
        if scorer.sample_rate is None:
            raise SessionFileError(f"{session.path}: the raw stream has no continuous-data message, so its sample "
                                   f"rate is unknown; set [recording] sample_rate")


def close_stored_showing(scorer: StreamScorer, showing: dict[str, Any]) -> ClosedShowing:
    """Close a stored showing as live did: onsets as stamped on time.monotonic, the display's own verdict."""
    display_times = np.asarray(showing["onset_times"], dtype=np.float64)
    display_valid = np.asarray(showing["presentation_valid"], dtype=bool)
    if "onset_monotonic" in showing:
        return scorer.close_showing(np.asarray(showing["onset_monotonic"], dtype=np.float64), display_valid,
                                    display_times)
    # Written before onsets were stamped for the pairing: display times, with no arrival bound.
    return scorer.close_showing(display_times, display_valid, display_times, lower_bound=None)


def stored_reasons(showing: dict[str, Any]) -> list[str]:
    """Why the live run found each stimulus of a stored showing invalid ("" where valid)."""
    return [r.decode() if isinstance(r, bytes) else str(r) for r in showing["invalid_reasons"]]


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
    mismatches: list[str] = []
    closed: dict[tuple[int, int], tuple[dict[str, Any], ClosedShowing]] = {}
    stream: dict[str, Any] = {}

    def remember(records: list[Record], reader: SessionReplayReader) -> None:
        stream.update(reader.stats.as_dict(), messages_replayed=reader.messages_replayed)

    for block, number, showing, result in replay_showings(session, spec, windows, remember, mismatches):
        closed[(block, number)] = (showing, result)
    channels = len(spec.units)
    showings: list[ShowingScores] = []
    blocks: list[BlockScores] = []
    for block in session.blocks:
        n = len(block.stimulus_ids)
        final_showing = np.full(n, -1)
        block_reasons = ["not shown"] * n
        rescored_block = np.full((n, channels), np.nan)
        for number in range(len(block.showings)):
            if (block.index, number) not in closed:
                continue
            stored, result = closed[(block.index, number)]
            positions = np.asarray(stored["positions"], dtype=np.int64)
            reasons = stored_reasons(stored)
            recorded_valid = np.array([r == "" for r in reasons], dtype=bool)
            why = [f"recorded {r}" if r else ("unfinished" if new == "silent" else new)
                   for r, new in zip(reasons, result.reasons)]
            valid = np.array([w == "" for w in why], dtype=bool)
            scores = np.where(valid[:, None], result.scores, np.nan)
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
