"""Display-clock times of a session as seconds since its start, for files that share data (NWB).

Stimulus times are stored as the display measured them: seconds on its own
clock (``time.monotonic``, or PsychoPy's clock, offset from it by the
display's recorded ``monotonic_offset_s``), whose origin is arbitrary. A
session records a :func:`~rig.session.layout.clock_anchor` when it is created
and at each resume, so each run's display times map to Unix time::

    unix = display_time + monotonic_offset_s - anchor.monotonic_s + anchor.unix_s

A run is the process that wrote blocks ``first_block`` up to the next resume's.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rig.session.layout import SessionFileError
from rig.session.reader import RecordedSession

__all__ = ["Run", "SessionClock"]


@dataclass(frozen=True)
class Run:
    """One process's share of a session and how its display clock maps to Unix time."""

    first_block: int
    unix_minus_display_s: float  # add to a display time to get Unix time


@dataclass(frozen=True)
class SessionClock:
    """Maps a session's display times to seconds since its start."""

    start_unix_s: float
    runs: tuple[Run, ...]

    @classmethod
    def from_session(cls, session: RecordedSession) -> "SessionClock | None":
        """The session's clock, or None for a file written before sessions recorded clock anchors.

        Raises:
            SessionFileError: an anchor or a display offset is present but malformed.
        """
        if "clock_anchor" not in session.attrs:
            return None
        where = f"{session.path}: root attribute clock_anchor"
        anchor = _anchor(_json(session.attrs["clock_anchor"], where), where)
        runs = [Run(0, anchor["unix_s"] - anchor["monotonic_s"] + _display_offset(session.provenance, session))]
        resumes = _json(session.attrs.get("resumes", "[]"), f"{session.path}: root attribute resumes")
        for number, resume in enumerate(resumes if isinstance(resumes, list) else []):
            if not isinstance(resume, dict) or "clock_anchor" not in resume:
                return None  # resumed by a rig that did not record anchors: the runs cannot be told apart
            where = f"{session.path}: resume {number}"
            anchor_k = _anchor(resume["clock_anchor"], where)
            first = resume.get("blocks_found")
            if type(first) is not int or first < runs[-1].first_block:
                raise SessionFileError(f"{where}: blocks_found {first!r} is not a block count after the last run's")
            runs.append(Run(first, anchor_k["unix_s"] - anchor_k["monotonic_s"]
                            + _display_offset(resume, session)))
        return cls(anchor["unix_s"], tuple(runs))

    @property
    def start(self) -> dt.datetime:
        """The session's start, UTC (timezone-aware)."""
        return dt.datetime.fromtimestamp(self.start_unix_s, tz=dt.timezone.utc)

    def run_of(self, block: int) -> int:
        """Index of the run that wrote ``block``."""
        return max(i for i, run in enumerate(self.runs) if run.first_block <= block)

    def since_start(self, display_times: np.ndarray | float, block: int) -> np.ndarray:
        """Display times of ``block`` as seconds since the session's start (NaN stays NaN)."""
        run = self.runs[self.run_of(block)]
        return np.asarray(display_times, dtype=np.float64) + (run.unix_minus_display_s - self.start_unix_s)


def _json(text: Any, where: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise SessionFileError(f"{where} is not JSON: {str(text)[:80]!r}") from None


def _anchor(value: Any, where: str) -> dict[str, float]:
    ok = isinstance(value, dict) and all(
        isinstance(value.get(k), (int, float)) and not isinstance(value.get(k), bool) and math.isfinite(value[k])
        for k in ("monotonic_s", "unix_s"))
    if not ok:
        raise SessionFileError(f"{where}: expected {{\"monotonic_s\": float, \"unix_s\": float}}, got {value!r}")
    return {k: float(value[k]) for k in ("monotonic_s", "unix_s")}


def _display_offset(holder: dict[str, Any], session: RecordedSession) -> float:
    """The display's ``monotonic_offset_s`` from a provenance or resume record (0 for time.monotonic)."""
    display = holder.get("display") if isinstance(holder, dict) else None
    if not isinstance(display, dict):
        raise SessionFileError(f"{session.path}: no display recorded to say which clock its times are on")
    offset = display.get("monotonic_offset_s", 0.0 if display.get("clock") == "time.monotonic" else None)
    if not isinstance(offset, (int, float)) or isinstance(offset, bool) or not math.isfinite(offset):
        raise SessionFileError(f"{session.path}: display {display.get('class')!r} records no usable "
                               f"monotonic_offset_s ({offset!r})")
    return float(offset)
