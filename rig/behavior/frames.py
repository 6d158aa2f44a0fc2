"""Frame clocks the trial machine runs on: what draws a :class:`~rig.behavior.machine.Scene` and flips it.

- :class:`SimulatedFrames`: in silico; a flip advances a simulated clock by one
  frame period and nothing waits in real time.
- :class:`PacedFrames`: headless in front of a recording; real time on
  ``time.monotonic``, flips on a ``refresh_hz`` grid.
- The PsychoPy display is a surface itself (:mod:`rig.display.psychopy`).

Every surface says when gaze may be read before the next frame is drawn
(:meth:`FrameSurface.horizon`): a real one waits until just before the next
flip, so the newest samples decide what that flip shows.
"""
from __future__ import annotations

import abc
import math
import time

from protocols.base import Block
from rig.behavior.machine import Scene

__all__ = ["FrameSurface", "PacedFrames", "SimulatedFrames", "wait_until"]

#: How long before the next flip a real surface reads gaze and draws: time enough to draw a frame, late enough
#: that a break seen then is acted on by that flip.
DRAW_MARGIN_S = 0.004


class FrameSurface(abc.ABC):
    """Draws scenes and flips frames on a clock of its own."""

    #: The clock flip times are on (a session file names it).
    clock: str = ""
    #: Seconds per frame.
    period: float = 1 / 60
    #: True when flips take real time.
    realtime: bool = True

    def begin(self, block: Block) -> None:
        """A showing of ``block``'s stimuli starts (upload what it needs)."""

    def end(self) -> None:
        """The showing is over."""

    @abc.abstractmethod
    def last_flip(self) -> float:
        """The time of the latest flip (or the clock's start, before any)."""

    def next_flip(self) -> float:
        """When the next flip is expected."""
        return self.last_flip() + self.period

    @abc.abstractmethod
    def horizon(self) -> float:
        """Wait, if real, until gaze should be read for the next frame; return up to when it may be read."""

    @abc.abstractmethod
    def draw(self, scene: Scene, position: int) -> None:
        """Draw ``scene`` for the next flip; ``position`` is its stimulus's position in the block (-1: none)."""

    @abc.abstractmethod
    def flip(self) -> float:
        """Show what was drawn; return the flip time."""


class SimulatedFrames(FrameSurface):
    """In silico: each flip is exactly one period after the last, on a clock that starts at ``start``."""

    clock = "simulated"
    realtime = False

    def __init__(self, refresh_hz: float = 60.0, start: float = 0.0) -> None:
        self.period = 1.0 / refresh_hz
        self._frames = 0
        self._start = start

    def last_flip(self) -> float:
        return self._start + self._frames * self.period

    def horizon(self) -> float:
        # Gaze is read up to the next flip itself: a sample at that very time still decides the frame.
        return self.next_flip()

    def draw(self, scene: Scene, position: int) -> None:
        pass

    def flip(self) -> float:
        self._frames += 1
        return self.last_flip()


class PacedFrames(FrameSurface):
    """Headless in real time: flips on a ``refresh_hz`` grid of ``time.monotonic``, nothing drawn."""

    clock = "time.monotonic"
    realtime = True

    def __init__(self, refresh_hz: float = 60.0) -> None:
        self.period = 1.0 / refresh_hz
        self._origin = time.monotonic()
        self._last = self._origin

    def last_flip(self) -> float:
        return self._last

    def next_flip(self) -> float:
        ticks = max(1, math.ceil((time.monotonic() - self._origin) / self.period))
        return max(self._origin + ticks * self.period, self._last + self.period)

    def horizon(self) -> float:
        wait_until(self.next_flip() - DRAW_MARGIN_S)
        return time.monotonic()

    def draw(self, scene: Scene, position: int) -> None:
        pass

    def flip(self) -> float:
        target = self.next_flip()
        wait_until(target)
        self._last = target
        return target


def wait_until(deadline: float) -> None:
    """Sleep until ``deadline`` (time.monotonic), spinning the last millisecond for accuracy."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(left - 0.001 if left > 0.002 else 0)
