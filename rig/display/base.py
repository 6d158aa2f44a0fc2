"""The display interface: show a block's stimuli and say when each one was on screen.

``Display.present`` validates once and hands subclasses a clean block. The
implementations: :mod:`rig.display.headless` (in silico, or paced in front of a
recording), :mod:`rig.display.psychopy` (a real screen) and
:mod:`rig.display.recorded` (a replay).
"""
from __future__ import annotations

import abc
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
