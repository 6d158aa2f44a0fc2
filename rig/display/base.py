"""The display interface: show a block's stimuli and say when each one was on screen.

``Display.present`` validates once, both ways: it hands subclasses a clean
block and checks what :meth:`Display._show` returns (one presentation per
stimulus, a named clock, a finite onset for every stimulus reported shown), so
implementations stay thin. The implementations register by kind in
:data:`DISPLAYS`, beside their code: :mod:`rig.display.headless` (in silico, or
paced in front of a recording) and :mod:`rig.display.psychopy` (a real screen).
:mod:`rig.display.recorded` (a replay) is built from a session, not by name, so
it is not registered.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from protocols.base import Block
from protocols.registry import Options, Registry


@dataclass
class Presentations:
    """When each stimulus of a block was shown, on the display's own clock (seconds)."""

    onset_times: np.ndarray
    offset_times: np.ndarray
    dropped_frames: np.ndarray
    valid: np.ndarray
    clock: str
    #: The trials that showed them (a :class:`rig.behavior.log.BehaviorLog`), when a block runs as trials.
    behavior: Any = None

    def __post_init__(self) -> None:
        self.onset_times = np.asarray(self.onset_times, dtype=np.float64)
        self.offset_times = np.asarray(self.offset_times, dtype=np.float64)
        self.dropped_frames = np.asarray(self.dropped_frames, dtype=np.int64)
        self.valid = np.asarray(self.valid, dtype=bool)
        n = len(self.onset_times)
        for name in ("offset_times", "dropped_frames", "valid"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Presentations: {n} onsets but {len(getattr(self, name))} {name}")

    @property
    def lost_to_behavior(self) -> np.ndarray:
        """Per stimulus: invalid because fixation was not held (always False without behaviour).

        Such stimuli are shown again without limit: a monkey that breaks is normal, not a fault of the rig.
        """
        if self.behavior is None:
            return np.zeros(len(self.onset_times), dtype=bool)
        return np.asarray(self.behavior.position_lost, dtype=bool)


class Display(abc.ABC):
    """Shows stimuli. Subclasses implement :meth:`_show`; :meth:`present` checks what it returns."""

    #: Set on instances built by :data:`DISPLAYS` (the kind, its options and version, for :meth:`describe`).
    kind: ClassVar[str | None] = None
    options: Options | None = None
    version: ClassVar[int] = 1

    def present(self, block: Block) -> Presentations:
        """Show every stimulus of ``block`` in order and return their timing."""
        if len(block) == 0:
            raise ValueError(f"block {block.index} has no stimuli to show")
        presentations = self._show(block)
        self._check_presentations(block, presentations)
        return presentations

    def _check_presentations(self, block: Block, shown: Any) -> None:
        """What every display must return: one presentation per stimulus, a clock, finite onsets where shown."""
        who = f"{type(self).__name__} (block {block.index})"
        if not isinstance(shown, Presentations):
            raise RuntimeError(f"{who} returned {type(shown).__name__}, not Presentations")
        if len(shown.onset_times) != len(block):
            raise RuntimeError(f"{who} reported {len(shown.onset_times)} presentations "
                               f"for a block of {len(block)} stimuli")
        if not isinstance(shown.clock, str) or not shown.clock:
            raise RuntimeError(f"{who} named no clock for its times, got {shown.clock!r}")
        bad = np.flatnonzero(shown.valid & ~np.isfinite(shown.onset_times))
        if len(bad):
            raise RuntimeError(f"{who} reported {len(bad)} stimuli shown without a finite onset time, "
                               f"first at position {int(bad[0])}: {shown.onset_times[bad[0]]}")
        if np.any(shown.dropped_frames < 0):
            raise RuntimeError(f"{who} reported a negative dropped-frame count: {shown.dropped_frames.min()}")

    def add_onset_listener(self, listener: "Callable[[Block, int, float], None]") -> None:
        """Call ``listener(block, position, onset_time)`` at each stimulus onset (display clock, seconds)."""
        self.__dict__.setdefault("_onset_listeners", []).append(listener)

    def _notify_onset(self, block: Block, position: int, onset_time: float) -> None:
        """Subclasses call this right after the flip that put stimulus ``position`` on screen."""
        for listener in self.__dict__.get("_onset_listeners", ()):
            listener(block, position, onset_time)

    def describe(self) -> dict:
        """Provenance for the session file: the class, and the registered kind and version when built by kind."""
        kind = {"kind": self.kind, "version": self.version} if self.kind is not None else {}
        return {"class": type(self).__name__, **kind}

    def close(self) -> None:
        """Release the screen, if any."""

    @abc.abstractmethod
    def _show(self, block: Block) -> Presentations: ...


#: Every display kind, registered beside its code (``@DISPLAYS.register("headless")``); ``--display`` offers these.
DISPLAYS: Registry[Display] = Registry("display")
