"""The trial state machine: fixation → hold → stimuli → reward → interval, declared once, run on any frame clock.

As in pyControl, the machine is a declaration: each state has a handler that
reacts to events and calls :meth:`TrialMachine.goto`; the engine owns time and
logs every transition with its time. The events are:

- ``"entry"``: the state was entered (at the time of the event that caused it);
- ``"shown"``: the first flip showing the state's scene (its flip time);
- ``"flip"``: every later flip in the state;
- ``"acquired"``/``"lost"``: gaze entered the window, or left it (or was lost
  longer than the blink grace), at a sample's time;
- ``"timer"``: the state's timer ran out.

The runner (:mod:`rig.behavior.runner`) feeds it gaze before drawing each
frame, asks it for the :class:`Scene` to draw, and tells it each flip. It never
reads a clock itself, so the same machine runs on a simulated clock in silico
and on a screen's flips in vivo, and a recorded session re-runs through it
exactly (:mod:`rig.behavior.check`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from protocols.spec import BehaviorSpec
from rig.behavior.gaze.base import GazeSamples
from rig.behavior.outcomes import TrialOutcome

__all__ = ["BLANK", "FixationMonitor", "Scene", "StimulusTiming", "TrialMachine"]

#: Gaze sources that deliver in real time may lag; this long without any sample beyond the blink grace is a loss.
GAZE_STALL_ALLOWANCE_S = 0.1


@dataclass(frozen=True)
class Scene:
    """What a frame shows: the fixation point or not, and which of the trial's stimuli (-1: none)."""

    fixation: bool
    stimulus: int = -1


BLANK = Scene(False, -1)


@dataclass(frozen=True)
class StimulusTiming:
    """How stimuli are flashed within a trial, and how long fixation must hold after each onset."""

    on_frames: int
    off_frames: int
    #: The end of the response window after an onset (s): fixation must hold until then for a valid stimulus.
    window_end_s: float


class FixationMonitor:
    """Classifies gaze samples against the fixation window: when it was entered, and when fixation was lost.

    A valid sample outside the window is a loss at its time. Missing samples
    (a blink, lost tracking) are a loss only once they last longer than the
    blink grace, and then the loss dates from the first missing sample.
    """

    def __init__(self, centre: tuple[float, float], radius: float, grace_s: float) -> None:
        self.centre, self.radius, self.grace_s = centre, radius, grace_s
        self.gap_start: float | None = None

    def inside(self, samples: GazeSamples) -> np.ndarray:
        """Per sample: valid and within the window."""
        # Invalid samples are NaN: NaN <= radius is False, without a warning (no np.errstate: it costs per frame).
        dx, dy = samples.x - self.centre[0], samples.y - self.centre[1]
        return samples.valid & (dx * dx + dy * dy <= self.radius * self.radius)

    def first_inside(self, samples: GazeSamples, start: int, not_before: float) -> int | None:
        """Index of the first sample from ``start`` inside the window at or after ``not_before``."""
        hits = np.flatnonzero(self.inside(samples)[start:] & (samples.times[start:] >= not_before))
        return None if len(hits) == 0 else start + int(hits[0])

    def first_loss(self, samples: GazeSamples, start: int, stop: int | None = None) -> float | None:
        """The time fixation was lost among samples ``start:stop`` (None: held throughout); keeps blink state."""
        inside = self.inside(samples)
        for i in range(start, len(samples) if stop is None else stop):
            t = float(samples.times[i])
            if samples.valid[i]:
                if not inside[i]:
                    return t
                self.gap_start = None
            else:
                if self.gap_start is None:
                    self.gap_start = t
                if t - self.gap_start > self.grace_s:
                    return self.gap_start
        return None

    def reset(self) -> None:
        """Forget a gap in progress (a new fixation begins)."""
        self.gap_start = None


@dataclass
class TrialRecord:
    """What one trial did, filled in as it runs (times on the frame clock, s; NaN: did not happen)."""

    start: float = math.nan
    acquired: float = math.nan
    break_time: float = math.nan
    stop: float = math.nan
    outcome: TrialOutcome | None = None
    reward_pulses: int = 0
    onsets: list[float] = field(default_factory=list)
    #: (time, state) for every transition.
    transitions: list[tuple[float, str]] = field(default_factory=list)


class TrialMachine:
    """One trial of ``n_stimuli`` stimuli; :meth:`scene` says what to draw, the ``on_*`` methods drive it.

    ``reward`` is called with (time, pulses) when the reward state is entered.
    ``monitors_gaze`` False (the ``none`` gaze source) takes fixation as held.
    ``realtime_gaze`` True means samples arrive late, so "seen until" is the
    last sample's time, and a stall longer than the grace is a loss.
    """

    def __init__(self, spec: BehaviorSpec, timing: StimulusTiming, n_stimuli: int, *,
                 reward: Callable[[float, int], None], monitors_gaze: bool = True,
                 realtime_gaze: bool = False) -> None:
        if n_stimuli < 1:
            raise ValueError(f"a trial needs at least one stimulus, got {n_stimuli}")
        self.spec, self.timing, self.n = spec, timing, n_stimuli
        self._reward, self.monitors, self.realtime = reward, monitors_gaze, realtime_gaze
        self.monitor = FixationMonitor(spec.fixation_point_deg, spec.window_deg, spec.blink_grace_ms / 1000)
        self.record = TrialRecord()
        self.state = ""
        self.timer: float | None = None
        self.shown = False
        self.frames = 0
        self.current = -1
        #: Gaze has been read up to this time (the last sample's, or the horizon read for on-demand sources).
        self.seen_until = -math.inf
        self.handlers: dict[str, Callable[[str, float], None]] = {
            "wait_fixation": self._wait_fixation,
            "hold": self._hold,
            "stimulus": self._stimulus,
            "blank": self._blank,
            "hold_to_window": self._hold_to_window,
            "reward": self._reward_state,
            "timeout": self._timeout,
            "interval": self._interval,
            "done": lambda event, t: None,
        }
        self.scenes = {"wait_fixation": Scene(True), "hold": Scene(True), "blank": Scene(True),
                       "hold_to_window": Scene(True), "reward": BLANK, "timeout": BLANK, "interval": BLANK,
                       "done": BLANK}

    # -- the engine ------------------------------------------------------------------------------------

    def start(self, time: float) -> None:
        """Begin the trial (``time``: now on the frame clock); its first frame shows the fixation point."""
        self.goto("wait_fixation", time)

    @property
    def finished(self) -> bool:
        """The trial's interval is over."""
        return self.state == "done"

    @property
    def monitoring(self) -> bool:
        """Fixation must be held now: from acquisition to the end of the last response window."""
        return self.monitors and self.state in ("hold", "stimulus", "blank", "hold_to_window")

    @property
    def watching(self) -> bool:
        """Gaze matters now: fixation is awaited or must hold. Between trials (reward, timeout, interval) it does
        not, so the runner need not read it every frame; the samples wait for the next read."""
        return self.state in ("wait_fixation", "hold", "stimulus", "blank", "hold_to_window")

    def scene(self) -> Scene:
        """What the next frame shows."""
        if self.state == "stimulus":
            return Scene(True, self.current)
        return self.scenes[self.state]

    def goto(self, state: str, time: float) -> None:
        """Enter ``state`` at ``time``: log it, clear the timer, run its entry handler."""
        self.state, self.timer, self.shown, self.frames = state, None, False, 0
        self.record.transitions.append((time, state))
        self.handlers[state]("entry", time)

    def on_gaze(self, samples: GazeSamples, until: float) -> None:
        """Samples read up to ``until``: fixation acquired or lost at a sample's time moves the machine on."""
        i = 0
        while i < len(samples) and not self.finished:
            if self.state == "wait_fixation" and self.shown:
                hit = self.monitor.first_inside(samples, i, self.record.start)
                if hit is None:
                    break
                self.monitor.reset()
                self.handlers[self.state]("acquired", float(samples.times[hit]))
                i = hit + 1
            elif self.monitoring:
                # Fixation must hold only to the end of the last response window: gaze read beyond it (up to a
                # frame's worth) belongs to the reward that follows, not to the trial.
                stop = len(samples)
                if len(self.record.onsets) == self.n:  # the last stimulus is shown: its window ends the watch
                    watch_end = self.record.onsets[-1] + self.timing.window_end_s
                    stop = int(np.searchsorted(samples.times, watch_end, side="left"))
                lost = self.monitor.first_loss(samples, i, stop)
                if lost is None:
                    break
                self.handlers[self.state]("lost", lost)
            else:
                break
        if len(samples):
            self.seen_until = max(self.seen_until, float(samples.times[-1]))
        if not self.realtime:
            self.seen_until = max(self.seen_until, until)

    def on_time(self, next_flip: float) -> None:
        """Before drawing: fire timers that run out by ``next_flip``, and a real-time source's stall."""
        if self.monitoring and self.realtime and next_flip - self.seen_until > self.monitor.grace_s + \
                GAZE_STALL_ALLOWANCE_S and math.isfinite(self.seen_until):
            self.handlers[self.state]("lost", self.seen_until)
        for _ in range(len(self.handlers) + 2):  # a chain of zero-length states ends; a loop would be a bug
            if self.timer is None or self.timer > next_flip or self.finished:
                return
            if self.state == "hold_to_window" and self.monitors and self.seen_until < self.timer:
                return  # gaze up to the window's end has not been seen yet
            when, self.timer = self.timer, None
            self.handlers[self.state]("timer", when)
        raise RuntimeError(f"trial machine: timers chain without end in state {self.state!r}")

    def on_flip(self, time: float) -> None:
        """The frame :meth:`scene` asked for is on screen since ``time``."""
        event = "flip" if self.shown else "shown"
        self.shown = True
        self.frames += 1
        self.handlers[self.state](event, time)

    def abort(self, time: float) -> None:
        """The operator ends the trial now."""
        if not self.finished and self.record.outcome is None:
            self._end(TrialOutcome.ABORTED, time)
            self.goto("interval", time)

    # -- the declaration ------------------------------------------------------------------------------

    def _wait_fixation(self, event: str, t: float) -> None:
        if event == "shown":
            self.record.start = t
            self.timer = t + self.spec.acquire_ms / 1000
            if not self.monitors:
                self._wait_fixation("acquired", t)
        elif event == "acquired":
            self.record.acquired = t
            self.goto("hold", t)
        elif event == "timer":
            self._end(TrialOutcome.NO_FIXATION, t)
            self.goto("timeout", t)

    def _hold(self, event: str, t: float) -> None:
        if event == "entry":
            self.timer = t + self.spec.hold_ms / 1000
        elif event == "timer":
            self.current = 0
            self.goto("stimulus", t)
        elif event == "lost":
            self._broke(t)

    def _stimulus(self, event: str, t: float) -> None:
        if event == "shown":
            self.record.onsets.append(t)
        if event in ("shown", "flip") and self.frames >= self.timing.on_frames:
            self.goto("blank", t)
        elif event == "lost":
            self._broke(t)

    def _blank(self, event: str, t: float) -> None:
        if event in ("shown", "flip") and self.frames >= self.timing.off_frames:
            if self.current + 1 < self.n:
                self.current += 1
                self.goto("stimulus", t)
            else:
                self.goto("hold_to_window", t)
        elif event == "lost":
            self._broke(t)

    def _hold_to_window(self, event: str, t: float) -> None:
        if event == "entry":
            self.timer = max(self.record.onsets[-1] + self.timing.window_end_s, t)
        elif event == "timer":
            self._end(TrialOutcome.COMPLETED, t)
            self._rewarded_or("interval", t)
        elif event == "lost":
            self._broke(t)

    def _reward_state(self, event: str, t: float) -> None:
        if event == "entry":
            self._reward(t, self.record.reward_pulses)
        elif event == "shown":
            spec = self.spec
            pulses = self.record.reward_pulses
            self.timer = t + (pulses * spec.reward_ms + (pulses - 1) * spec.reward_pause_ms) / 1000
        elif event == "timer":
            self.goto("timeout" if self.record.outcome is TrialOutcome.BROKE_FIXATION else "interval", t)

    def _timeout(self, event: str, t: float) -> None:
        if event == "shown":
            self.timer = t + self.spec.timeout_ms / 1000
        elif event == "timer":
            self.goto("interval", t)

    def _interval(self, event: str, t: float) -> None:
        if event == "shown":
            self.timer = t + self.spec.iti_ms / 1000
        elif event == "timer":
            self.record.stop = t
            self.goto("done", t)

    # -- outcomes -------------------------------------------------------------------------------------

    def valid_stimuli(self) -> int:
        """Stimuli held from onset to the end of their response window (so far)."""
        window = self.timing.window_end_s
        brk = self.record.break_time
        return sum(1 for onset in self.record.onsets if math.isnan(brk) or brk >= onset + window)

    def _end(self, outcome: TrialOutcome, t: float) -> None:
        self.record.outcome = outcome
        spec = self.spec
        if outcome is TrialOutcome.COMPLETED:
            held = self.n if spec.reward_per == "stimulus" else 1
        elif outcome is TrialOutcome.BROKE_FIXATION and spec.reward_per == "stimulus":
            held = self.valid_stimuli()
        else:
            held = 0
        self.record.reward_pulses = held * spec.reward_pulses

    def _broke(self, t: float) -> None:
        self.record.break_time = t
        self._end(TrialOutcome.BROKE_FIXATION, t)
        self._rewarded_or("timeout", t)

    def _rewarded_or(self, state: str, t: float) -> None:
        self.goto("reward" if self.record.reward_pulses > 0 else state, t)
