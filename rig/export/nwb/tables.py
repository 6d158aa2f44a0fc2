"""The stimuli and presentations tables, and the clock their times are written on.

- ``stimulus/presentation/stimuli``: one row per stimulus of each block, with its code.
- ``intervals/presentations``: one row per showing of a stimulus, every pass of
  the display included; its ``stimulus`` column points into ``stimuli``.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rig.session import RecordedSession, SessionFileError
from rig.session.clock import Run, SessionClock


@dataclass
class Columns:
    """Columns of a table as lists, one entry per row."""

    values: dict[str, list] = field(default_factory=lambda: defaultdict(list))

    def add(self, **row: Any) -> None:
        for key, value in row.items():
            self.values[key].append(value)

    def __len__(self) -> int:
        return len(next(iter(self.values.values()), []))


def _reference_id(stimulus_id: str, kind: str) -> str:
    return stimulus_id.split("/", 1)[1] if kind == "reference" and stimulus_id.startswith("ref/") else (
        stimulus_id if kind == "reference" else "")


def stimulus_rows(session: RecordedSession) -> tuple[Columns, dict[int, int], int]:
    """One row per stimulus of each block; the first row of each block; the code length."""
    code_dim = max((b.codes.shape[2] for b in session.blocks if b.codes.ndim == 3), default=0)
    rows, first = Columns(), {}
    for b in session.blocks:
        first[b.index] = len(rows)
        for i, sid in enumerate(b.stimulus_ids):
            t, c = int(b.threads[i]), int(b.code_index[i])
            code = b.codes[t, c] if t >= 0 else np.full(code_dim, np.nan)
            rows.add(block=b.index, position=i, stimulus_id=sid, kind=b.kinds[i], thread=t, code_index=c,
                     reference_id=_reference_id(sid, b.kinds[i]), code=code, scores=b.scores[i],
                     valid=bool(b.valid[i]))
    return rows, first, code_dim


def checked_showings(block, path: Path) -> list[dict[str, np.ndarray]]:
    """Every showing of a block, checked; a file with none stored (schema 1) had exactly one, the final one.

    ``read_session`` checks a block's final arrays but not its showings', so a
    damaged showing is caught here rather than as an IndexError mid-export.
    """
    n = len(block.stimulus_ids)
    for number, s in enumerate(block.showings):
        where = f"{path}: /blocks/{block.index:06d}/showings/{number:02d}"
        needed = ("positions", "onset_times", "dropped_frames", "presentation_valid", "scores", "valid")
        missing = [k for k in needed if k not in s]
        if missing:
            raise SessionFileError(f"{where}: missing {missing}")
        positions = np.asarray(s["positions"])
        m = len(positions)
        wrong = {k: np.shape(s[k]) for k in needed[1:] + ("invalid_reasons",) if k in s and len(s[k]) != m}
        if np.ndim(s["scores"]) != 2 or np.shape(s["scores"])[1] != len(block.channel_names):
            wrong["scores"] = np.shape(s["scores"])
        if positions.ndim != 1 or (m and (positions.min() < 0 or positions.max() >= n)):
            wrong["positions"] = f"not 1-D indices below {n}"
        if wrong:
            raise SessionFileError(f"{where}: {m} positions but {wrong}")
    if block.showings:
        return block.showings
    return [{"positions": np.arange(n), "onset_times": block.onset_times, "dropped_frames": block.dropped_frames,
             "presentation_valid": block.presentation_valid if block.presentation_valid is not None
             else np.ones(n, bool), "scores": block.scores, "valid": block.valid}]


@dataclass(frozen=True)
class Times:
    """How the file's times relate to the session: seconds since its start, or (older files) the display clock."""

    clock: SessionClock | None
    display_clock: str

    @classmethod
    def of(cls, session: RecordedSession) -> "Times":
        display_clock = next((b.clock for b in session.blocks if b.clock), "unknown")
        if display_clock == SIMULATED_CLOCK and "clock_anchor" in session.attrs:
            # In silico trials run on a simulated frame clock from 0 at the session's start, carried on by each
            # resume: it is tied to no real clock, so its seconds are the file's seconds since the start.
            start = float(json.loads(session.attrs["clock_anchor"])["unix_s"])
            return cls(SessionClock(start, (Run(0, start),)), display_clock)
        return cls(SessionClock.from_session(session), display_clock)

    @property
    def reference(self) -> str:
        """The time base, in words, for the file's descriptions."""
        if self.clock is not None and self.display_clock == SIMULATED_CLOCK:
            return ("s since session_start_time, in simulated seconds: in silico trials run on a simulated frame "
                    "clock that starts at 0 with the session, is carried on by each resume, and runs faster than "
                    "real time")
        if self.clock is not None:
            return "s since session_start_time"
        return (f"s on the display clock {self.display_clock!r}, whose origin is arbitrary (this session was "
                f"recorded before sessions stored clock anchors, so its times cannot be tied to session_start_time)")

    def convert(self, display_times: np.ndarray | float, block: int) -> np.ndarray:
        """Display times of ``block`` in the file's time base."""
        if self.clock is None:
            return np.asarray(display_times, dtype=np.float64)
        return self.clock.since_start(display_times, block)


#: The clock of the trial machine's frames in silico (rig/behavior/frames.py ``SimulatedFrames``).
SIMULATED_CLOCK = "simulated"


def presentation_rows(session: RecordedSession, first_row: dict[int, int],
                      pairing: dict[tuple[int, int], tuple[np.ndarray, int]] | None, times: Times) -> Columns:
    """One row per showing of each stimulus, in the order they were shown."""
    rows = Columns()
    for b in session.blocks:
        showings = checked_showings(b, session.path)
        final = np.full(len(b.stimulus_ids), -1)
        for number, s in enumerate(showings):  # as merge_showings: a stimulus's last showing is its final one
            final[np.asarray(s["positions"], dtype=np.int64)] = number
        for number, s in enumerate(showings):
            positions = np.asarray(s["positions"], dtype=np.int64)
            reasons = [r.decode() if isinstance(r, bytes) else str(r) for r in s.get("invalid_reasons", [])]
            ttl, epoch = pairing.get((b.index, number), (None, -1)) if pairing is not None else (None, -1)
            for j, i in enumerate(positions.tolist()):
                is_final = final[i] == number
                # Files written before showings had offsets store them for the final showing only.
                if "offset_times" in s:
                    offset = s["offset_times"][j]
                else:
                    offset = b.offset_times[i] if is_final and b.offset_times is not None else np.nan
                row = dict(start_time=float(times.convert(s["onset_times"][j], b.index)),
                           stop_time=float(times.convert(offset, b.index)), block=b.index,
                           showing=number, position=i, stimulus=first_row[b.index] + i,
                           stimulus_id=b.stimulus_ids[i], kind=b.kinds[i], thread=int(b.threads[i]),
                           code_index=int(b.code_index[i]), dropped_frames=int(s["dropped_frames"][j]),
                           presentation_valid=bool(s["presentation_valid"][j]), valid=bool(s["valid"][j]),
                           final=bool(is_final), scores=np.asarray(s["scores"][j], dtype=np.float64))
                if pairing is not None:
                    paired = ttl is not None and ttl[j] >= 0
                    row.update(invalid_reason=reasons[j] if j < len(reasons) else "",
                               ttl_sample=int(ttl[j]) if paired else -1, recording_epoch=epoch if paired else -1)
                rows.add(**row)
    return rows


def add_stimuli(nwb, stimuli: Columns, code_dim: int, channels: list[str]):
    """``stimulus/presentation/stimuli``; returns the table, which ``presentations`` points into."""
    from hdmf.common import DynamicTable, VectorData

    table = DynamicTable(name="stimuli", description=(
        "One row per stimulus of each block. code: the latent code shown (NaN for reference images); "
        f"scores/valid: the block's final responses per channel ({', '.join(channels)})."), columns=[
        VectorData(name=k, description=d, data=_data(stimuli.values[k])) for k, d in _STIMULUS_COLUMNS
        if k != "code" or code_dim > 0])
    nwb.add_stimulus(table)
    return table


def add_presentations(nwb, shown: Columns, stimuli_table, times: Times, channels: list[str],
                      recorded_from: str) -> None:
    """``intervals/presentations``, its ``stimulus`` column a region of ``stimuli_table``."""
    from hdmf.common import DynamicTableRegion, VectorData
    from pynwb.epoch import TimeIntervals

    columns = [VectorData(name=k, description=d.format(time=times.reference, channels=", ".join(channels)),
                          data=_data(shown.values[k])) for k, d in _PRESENTATION_COLUMNS if k in shown.values]
    columns.append(DynamicTableRegion(name="stimulus", data=_data(shown.values["stimulus"]), table=stimuli_table,
                                      description="row of stimulus/presentation/stimuli shown"))
    nwb.add_time_intervals(TimeIntervals(name="presentations", columns=columns, description=(
        f"Every showing of every stimulus (re-shows of stimuli whose responses were lost included), times in "
        f"{times.reference}. Responses from {recorded_from}.")))


_STIMULUS_COLUMNS = (
    ("block", "block (generation) index"),
    ("position", "position of the stimulus in its block"),
    ("stimulus_id", "stimulus id, e.g. g0003/t0/c017 or ref/<id>"),
    ("kind", "generated or reference"),
    ("thread", "evolution thread of a generated stimulus; -1 for reference images"),
    ("code_index", "index of the code within its thread's block; -1 for reference images"),
    ("reference_id", "identity of a reference image; empty for generated stimuli"),
    ("code", "latent code given to the generator; NaN for reference images"),
    ("scores", "the block's final scored response per channel; NaN where invalid"),
    ("valid", "the stimulus got a usable response in some showing"),
)

_PRESENTATION_COLUMNS = (
    ("start_time", "onset, {time}"),
    ("stop_time", "offset, {time}; NaN for an earlier showing in files written "
                  "before showings stored their offsets"),
    ("block", "block (generation) index"),
    ("showing", "pass of the display over the block: 0 shows every stimulus, later ones re-show lost stimuli"),
    ("position", "position of the stimulus in its block"),
    ("stimulus_id", "stimulus id, e.g. g0003/t0/c017 or ref/<id>"),
    ("kind", "generated or reference"),
    ("thread", "evolution thread; -1 for reference images"),
    ("code_index", "index of the code within its thread; -1 for reference images"),
    ("dropped_frames", "frames the display dropped while showing it"),
    ("presentation_valid", "the display showed it as intended"),
    ("valid", "the response of this showing was usable"),
    ("final", "this showing's response is the block's response for the stimulus"),
    ("scores", "scored response per channel ({channels}); NaN where invalid"),
    ("invalid_reason", "why the response was lost: display, missing-ttl, gap, restart, silent; empty if valid"),
    ("ttl_sample", "onset TTL paired with this showing, sample number on the recording clock; -1 if unpaired"),
    ("recording_epoch", "recording clock epoch of ttl_sample (acquisition restarts and resumes begin one); -1 "
                        "if unpaired"),
)


def _data(values: list) -> np.ndarray | list:
    """A column's values as an array (strings stay a list, which pynwb writes as UTF-8 text)."""
    if values and isinstance(values[0], str):
        return list(values)
    return np.asarray(values)
