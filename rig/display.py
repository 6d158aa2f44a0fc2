"""Displays: show a block's stimuli and say when each one was on screen.

``Display.present`` validates once and hands subclasses a clean block; the
headless display is the one for in-silico sessions, PsychoPy comes later
behind the same interface.
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass

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

    def describe(self) -> dict:
        """Provenance for the session file."""
        return {"class": type(self).__name__}

    def close(self) -> None:
        """Release the screen, if any."""

    @abc.abstractmethod
    def _show(self, block: Block) -> Presentations: ...


class HeadlessDisplay(Display):
    """No screen: every stimulus is "shown" at once, for in-silico sessions."""

    def _show(self, block: Block) -> Presentations:
        now = time.monotonic()
        n = len(block)
        return Presentations(
            onset_times=np.full(n, now),
            offset_times=np.full(n, now),
            dropped_frames=np.zeros(n, dtype=np.int64),
            valid=np.ones(n, dtype=bool),
            clock="time.monotonic",
        )
