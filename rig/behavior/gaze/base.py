"""The gaze interface: where the eyes are, sample by sample, on the display's clock.

Every gaze source (a simulated monkey, an eye tracker, analog eye signals on
the recording stream) delivers :class:`GazeSamples` through
:meth:`GazeSource.read`. Positions are degrees of visual angle from the screen
centre, +x right and +y up; a sample without gaze (a blink, lost tracking) is
``valid = False`` with NaN position. Times are seconds on the display's clock,
the clock its flips are stamped with, so the trial machine can compare a
sample with a flip directly.

Sources register by kind in :data:`GAZE_SOURCES`, beside their code, with an
:class:`~protocols.registry.Options` dataclass for the protocol's ``[gaze]``
table (``source = KIND`` plus that kind's options).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from protocols.registry import Configurable, Registry

__all__ = ["GAZE_SOURCES", "GazeError", "GazeSamples", "GazeSource", "GazeTask"]


class GazeError(RuntimeError):
    """A gaze source failed: a tracker stopped answering, or delivered samples out of order."""


@dataclass
class GazeSamples:
    """Samples in time order: times (s, display clock), x and y (deg from the screen centre), validity."""

    times: np.ndarray
    x: np.ndarray
    y: np.ndarray
    valid: np.ndarray

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, dtype=np.float64)
        self.x = np.asarray(self.x, dtype=np.float64)
        self.y = np.asarray(self.y, dtype=np.float64)
        self.valid = np.asarray(self.valid, dtype=bool)
        n = len(self.times)
        for name in ("x", "y", "valid"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"GazeSamples: {n} times but {name} has shape {getattr(self, name).shape}")

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def empty(cls) -> "GazeSamples":
        """No samples."""
        return cls(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool))

    @classmethod
    def concat(cls, parts: list["GazeSamples"]) -> "GazeSamples":
        """The samples of ``parts`` one after another."""
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("times", "x", "y", "valid")))

    def slice(self, start: int, stop: int) -> "GazeSamples":
        """Samples ``start:stop``."""
        return GazeSamples(self.times[start:stop], self.x[start:stop], self.y[start:stop], self.valid[start:stop])


@dataclass(frozen=True)
class GazeTask:
    """What a gaze source is told when a session starts: where the fixation point is and how wide its window."""

    #: The fixation point, degrees from the screen centre.
    fixation_deg: tuple[float, float]
    #: Radius of the fixation window, degrees.
    window_deg: float
    #: The clock samples must be stamped on (the display's), and its time now.
    clock: str
    now: float
    #: The session's seed, for sources that draw random numbers and were given no seed of their own.
    session_seed: int = 0


class GazeSource(Configurable, abc.ABC):
    """Delivers gaze samples on the display's clock. Subclasses implement :meth:`_read`.

    The protocol of use: :meth:`start` once, then :meth:`read` repeatedly with
    non-decreasing ``until`` (the trial machine reads before drawing each
    frame), :meth:`scene` whenever what the screen shows changes, and
    :meth:`close` at the end. :meth:`read` checks what :meth:`_read` returns:
    samples in time order, none at or before a time already delivered, none
    after ``until``, invalid ones with NaN positions.
    """

    interface: ClassVar[str] = "gaze source"
    #: False only for a source that delivers no gaze at all (``none``): fixation is then not monitored.
    monitors_gaze: ClassVar[bool] = True
    #: True when samples arrive in real time (a tracker); False when the source makes them on demand (a simulated
    #: monkey on a simulated clock), so nothing waits for them.
    realtime: ClassVar[bool] = True

    def start(self, task: GazeTask) -> None:
        """Begin: samples from ``task.now`` on, on ``task.clock``."""
        self.task = task
        self._last_time = -np.inf

    def read(self, until: float) -> GazeSamples:
        """Every sample not read yet with time <= ``until``, in time order.

        A real tracker returns what has arrived by now (later samples come with
        a later read); a simulated source makes exactly the samples up to ``until``.
        """
        samples = self._read(float(until))
        if not isinstance(samples, GazeSamples):
            raise GazeError(f"{type(self).__name__}.read(until={until:.6f}) returned {type(samples).__name__}, "
                            f"not GazeSamples")
        times = samples.times
        if len(times):
            # Called before every frame: few numpy calls. Times in order (a NaN fails the comparison too), after
            # the last delivered and not after `until`, so all of them are finite.
            first, last = float(times[0]), float(times[-1])
            if not (first > self._last_time and last <= until + 1e-9) or (len(times) > 1 and not
                                                                           (times[1:] >= times[:-1]).all()):
                self._refuse(samples, until)
            valid = samples.valid
            if not valid.all():
                shown = np.isfinite(samples.x) & np.isfinite(samples.y)
                if (valid & ~shown).any():
                    self._refuse(samples, until)
                samples.x[~valid] = np.nan
                samples.y[~valid] = np.nan
            elif not (np.isfinite(samples.x).all() and np.isfinite(samples.y).all()):
                self._refuse(samples, until)
            self._last_time = last
        return samples

    def _refuse(self, samples: GazeSamples, until: float) -> None:
        """Say exactly what is wrong with samples :meth:`read` refused."""
        who = f"{type(self).__name__}.read(until={until:.6f})"
        times = samples.times
        if not np.all(np.isfinite(times)):
            raise GazeError(f"{who}: a sample without a finite time")
        if np.any(np.diff(times) < 0) or times[0] <= self._last_time:
            raise GazeError(f"{who}: samples out of time order (first {times[0]:.6f}, "
                            f"last delivered {self._last_time:.6f})")
        if times[-1] > until + 1e-9:
            raise GazeError(f"{who}: a sample at {times[-1]:.6f}, after the time asked for")
        raise GazeError(f"{who}: a valid sample without a finite position")

    def scene(self, time: float, fixation_on: bool, stimulus_on: bool,
              fixation_deg: tuple[float, float] | None = None) -> None:
        """What the screen shows from ``time`` on (the fixation point at ``fixation_deg``; None: the task's).
        Real eyes need no telling; a simulated monkey reacts to it."""

    def held_fixation(self, start: float, stop: float, point: tuple[float, float]) -> None:
        """Fixation on ``point`` was held from ``start`` to ``stop`` (a trial's baseline hold): a source with a
        calibration may re-centre its drift here (MonkeyLogic's drift correction)."""

    def rewarded(self, time: float, pulses: int) -> None:
        """The monkey was given ``pulses`` of reward at ``time`` (a simulated monkey tires of working for it)."""

    def close(self) -> None:
        """Stop the source; safe to call twice."""

    @abc.abstractmethod
    def _read(self, until: float) -> GazeSamples: ...


#: Every gaze source kind, registered beside its code (``@GAZE_SOURCES.register("simulated", MonkeyOptions)``).
GAZE_SOURCES: Registry[GazeSource] = Registry("gaze source")
