"""The headless display: no screen, for in-silico sessions and, paced, in front of a recording."""
from __future__ import annotations

import time

import numpy as np

from protocols.base import Block
from rig.display.base import DISPLAYS, Display, Presentations


@DISPLAYS.register("headless")
class HeadlessDisplay(Display):
    """No screen: every stimulus is "shown" at once, for in-silico sessions.

    With ``pace=(on_s, off_s)`` stimuli follow each other in real time instead
    (on for ``on_s``, then blank for ``off_s``), so a recording stream, e.g.
    ``rig sim-rig``, sees onsets spaced as a screen would space them. It takes
    no options from the protocol (``[display]`` lays out a screen); ``pace``
    comes from ``--pace-ms`` or the recording it stands in front of.
    """

    def __init__(self, pace: tuple[float, float] | None = None) -> None:
        if pace is not None and (len(pace) != 2 or not all(v > 0 for v in pace)):
            raise ValueError(f"pace must be (on_s, off_s) with both > 0, got {pace!r}")
        self.pace = None if pace is None else (float(pace[0]), float(pace[1]))

    def describe(self) -> dict:
        # Its clock is time.monotonic itself (PsychoPy's is offset from it; see PsychoPyDisplay).
        return {**super().describe(), "pace_s": list(self.pace) if self.pace else None,
                "clock": "time.monotonic", "monotonic_offset_s": 0.0}

    def frames(self, refresh_hz: float, start: float = 0.0):
        """Single frames for a trial machine: a simulated clock in silico (from ``start``: a resumed session
        carries on from its last flip), real time when paced."""
        from rig.behavior.frames import PacedFrames, SimulatedFrames

        if getattr(self, "pace", None) is not None:
            return PacedFrames(refresh_hz)
        return SimulatedFrames(refresh_hz, start)

    def _show_paced(self, block: Block, on_s: float, off_s: float) -> Presentations:
        n = len(block)
        onsets, offsets = np.zeros(n), np.zeros(n)
        due = time.monotonic()
        for position in range(n):
            _wait_until(due)
            onsets[position] = time.monotonic()
            self._notify_onset(block, position, onsets[position])
            _wait_until(onsets[position] + on_s)
            offsets[position] = time.monotonic()
            due = onsets[position] + on_s + off_s
        _wait_until(due)
        return Presentations(onsets, offsets, np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool), "time.monotonic")

    def _show(self, block: Block) -> Presentations:
        if getattr(self, "pace", None) is not None:
            return self._show_paced(block, *self.pace)
        now = time.monotonic()
        n = len(block)
        for position in range(n):
            self._notify_onset(block, position, now)
        return Presentations(
            onset_times=np.full(n, now),
            offset_times=np.full(n, now),
            dropped_frames=np.zeros(n, dtype=np.int64),
            valid=np.ones(n, dtype=bool),
            clock="time.monotonic",
        )


def _wait_until(deadline: float) -> None:
    """Sleep until ``deadline`` (time.monotonic), spinning the last millisecond for accuracy."""
    from rig.behavior.frames import wait_until  # the one definition

    wait_until(deadline)
