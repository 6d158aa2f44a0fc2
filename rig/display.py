"""Displays: show a block's stimuli and say when each one was on screen.

``Display.present`` validates once and hands subclasses a clean block; the
headless display is the one for in-silico sessions, PsychoPy comes later
behind the same interface.
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from protocols.base import Block


@dataclass
class Presentations:
    """When each stimulus of a block was shown, on the display's own clock (seconds)."""

    onset_times: np.ndarray
    offset_times: np.ndarray
    dropped_frames: np.ndarray
    valid: np.ndarray
    clock: str

    def __post_init__(self) -> None:
        self.onset_times = np.asarray(self.onset_times, dtype=np.float64)
        self.offset_times = np.asarray(self.offset_times, dtype=np.float64)
        self.dropped_frames = np.asarray(self.dropped_frames, dtype=np.int64)
        self.valid = np.asarray(self.valid, dtype=bool)
        n = len(self.onset_times)
        for name in ("offset_times", "dropped_frames", "valid"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Presentations: {n} onsets but {len(getattr(self, name))} {name}")


class Display(abc.ABC):
    """Shows stimuli. Subclasses implement :meth:`_show`."""

    def present(self, block: Block) -> Presentations:
        """Show every stimulus of ``block`` in order and return their timing."""
        if len(block) == 0:
            raise ValueError(f"block {block.index} has no stimuli to show")
        presentations = self._show(block)
        if len(presentations.onset_times) != len(block):
            raise RuntimeError(
                f"{type(self).__name__} reported {len(presentations.onset_times)} presentations "
                f"for a block of {len(block)} stimuli"
            )
        return presentations

    def add_onset_listener(self, listener: "Callable[[Block, int, float], None]") -> None:
        """Call ``listener(block, position, onset_time)`` at each stimulus onset (display clock, seconds)."""
        self.__dict__.setdefault("_onset_listeners", []).append(listener)

    def _notify_onset(self, block: Block, position: int, onset_time: float) -> None:
        """Subclasses call this right after the flip that put stimulus ``position`` on screen."""
        for listener in self.__dict__.get("_onset_listeners", ()):
            listener(block, position, onset_time)

    def describe(self) -> dict:
        """Provenance for the session file."""
        return {"class": type(self).__name__}

    def close(self) -> None:
        """Release the screen, if any."""

    @abc.abstractmethod
    def _show(self, block: Block) -> Presentations: ...


class HeadlessDisplay(Display):
    """No screen: every stimulus is "shown" at once, for in-silico sessions.

    With ``pace=(on_s, off_s)`` stimuli follow each other in real time instead
    (on for ``on_s``, then blank for ``off_s``), so a recording stream, e.g.
    ``rig sim-rig``, sees onsets spaced as a screen would space them.
    """

    def __init__(self, pace: tuple[float, float] | None = None) -> None:
        if pace is not None and (len(pace) != 2 or not all(v > 0 for v in pace)):
            raise ValueError(f"pace must be (on_s, off_s) with both > 0, got {pace!r}")
        self.pace = None if pace is None else (float(pace[0]), float(pace[1]))

    def describe(self) -> dict:
        # Its clock is time.monotonic itself (PsychoPy's is offset from it; see PsychoPyDisplay).
        return {**super().describe(), "pace_s": list(self.pace) if self.pace else None,
                "clock": "time.monotonic", "monotonic_offset_s": 0.0}

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
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(left - 0.001 if left > 0.002 else 0)
