"""Show a block's stimuli as trials: the one engine that drives the trial machine on any frame surface.

:class:`TrialRunner` takes the stimuli of a showing in order, a few per trial
(``[behavior] stimuli_per_trial``), and runs each trial through
:class:`~rig.behavior.machine.TrialMachine`: before every frame it reads gaze
up to the surface's horizon and lets the machine act on it, then draws what
the machine asks for and flips. A trial without fixation is tried again with
the same stimuli; after a break, the stimulus on screen and those after it are
returned invalid (lost to behaviour) and the controller shows them again later.

It also keeps the session going when the monkey is not: after
``not_working_s`` without fixation it pauses (blank screen, a console
message) and then offers fixation again; and it takes the operator's
requests between frames.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from protocols.base import Block
from protocols.spec import BehaviorSpec
from rig.behavior.frames import FrameSurface
from rig.behavior.gaze.base import GazeSource, GazeTask
from rig.behavior.gaze.raw import baseline_hold
from rig.behavior.log import BehaviorLog
from rig.behavior.machine import BLANK, Scene, StimulusTiming, TrialMachine
from rig.behavior.operator import Operator
from rig.behavior.outcomes import TrialOutcome
from rig.behavior.reward.base import RewardDelivery, RewardOutput

__all__ = ["SessionStopped", "ShowingResult", "TrialRunner"]


class SessionStopped(Exception):
    """The operator asked to stop after the current trial."""


@dataclass
class ShowingResult:
    """Per position of a showing: onset and offset (NaN: not shown), dropped frames, validity; and the log."""

    onsets: np.ndarray
    offsets: np.ndarray
    dropped: np.ndarray
    valid: np.ndarray
    log: BehaviorLog


class _LoggedFrames:
    """The surface as the runner sees it during one showing: every value it answers is kept in the log."""

    def __init__(self, surface: FrameSurface, log: BehaviorLog) -> None:
        self.surface, self.log = surface, log
        self.period, self.realtime, self.clock = surface.period, surface.realtime, surface.clock

    def last_flip(self) -> float:
        return self.surface.last_flip()

    def next_flip(self) -> float:
        due = self.surface.next_flip()
        self.log.dues.append(due)
        return due

    def horizon(self) -> float:
        return self.surface.horizon()

    def draw(self, scene: Scene, position: int) -> None:
        self.surface.draw(scene, position)

    def flip(self) -> float:
        return self.surface.flip()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class TrialRunner:
    """Runs showings as trials on ``surface`` with gaze from ``gaze`` and rewards through ``reward``.

    ``say`` prints console messages (the monkey not working, pauses); ``dropped_frames(flip_times, period)``
    counts frames missed while a stimulus was on (a stimulus with any is invalid, as without behaviour).
    """

    def __init__(self, spec: BehaviorSpec, timing: StimulusTiming, surface: FrameSurface, gaze: GazeSource,
                 reward: RewardOutput, *, dropped_frames: Callable[[np.ndarray, float], int],
                 operator: Operator | None = None, say: Callable[[str], None] = _stderr,
                 session_seed: int = 0, first_trial: int = 0) -> None:
        self.spec, self.timing, self.surface, self.gaze, self.reward = spec, timing, surface, gaze, reward
        self.operator = operator if operator is not None else Operator()
        self.say = say
        self._dropped_frames = dropped_frames
        self.session_seed = session_seed
        #: The number the next trial gets (a resumed session continues the count).
        self.next_trial = first_trial
        self.stop_requested = False
        self._paused = False
        self._started = False
        self._last_work: float | None = None
        self._not_working_since: float | None = None
        self._listeners: list[Callable[[str, float, dict], None]] = []
        self._corrections_logged = 0
        #: Listener calls that raised (counted; a listener never stops a trial).
        self.listener_failures = 0
        self.last_listener_error = ""

    def add_listener(self, listener: Callable[[str, float, dict], None]) -> None:
        """Call ``listener(kind, time, info)`` at each trial event, e.g. to mark it on the recording.

        Kinds: ``trial_start`` (the fixation point's first flip; info ``trial``), ``fixation_acquired``,
        ``stimulus_onset`` (info ``position``, ``index`` in the trial), ``break``, ``reward`` (info ``pulses``,
        ``manual``), ``trial_end`` (info ``outcome``), and ``scene`` at every change of what is on screen (info
        ``fixation``, ``stimulus``, ``fixation_deg``). Times are on the frame clock. A listener must return at
        once; one that raises is counted (``listener_failures``) and the trial goes on.
        """
        self._listeners.append(listener)

    def _emit(self, kind: str, time_: float, **info: object) -> None:
        for listener in self._listeners:
            try:
                listener(kind, time_, info)
            except Exception as exc:  # a marker line or a viewer must never stop the monkey's trial
                self.listener_failures += 1
                self.last_listener_error = f"{type(exc).__name__}: {exc}"

    def describe(self) -> dict:
        """Provenance: the behaviour parameters, the timing, and the gaze source and reward output as built."""
        return {"spec": asdict(self.spec), "timing": asdict(self.timing), "gaze": self.gaze.describe(),
                "reward": self.reward.describe(), "clock": self.surface.clock, "period_s": self.surface.period}

    def carry_on(self, carry: tuple[float, float, float]) -> None:
        """Take up the state a recorded showing began with (:attr:`BehaviorLog.carry`), to re-run it exactly."""
        last_work, since, paused = (float(v) for v in carry)
        self._last_work = None if math.isnan(last_work) else last_work
        self._not_working_since = None if math.isnan(since) else since
        self._paused = bool(paused) if not math.isnan(paused) else False

    def start(self) -> None:
        """Start the gaze source (once): a tracker that does not answer fails here, before the first block."""
        if not self._started:
            self.gaze.start(GazeTask(self.spec.fixation_point_deg, self.spec.window_deg, self.surface.clock,
                                     self.surface.last_flip(), self.session_seed))
            self._started = True

    def close(self) -> None:
        """Stop the gaze source and release the reward device."""
        self.gaze.close()
        self.reward.close()

    # -- a showing ------------------------------------------------------------------------------------

    def run(self, block: Block, on_onset: Callable[[int, float], None]) -> ShowingResult:
        """Show every stimulus of ``block`` once, as trials; ``on_onset(position, time)`` at each onset flip."""
        self.start()
        n = len(block)
        log = BehaviorLog(n)
        log.start = self.surface.last_flip()
        log.carry = tuple(math.nan if v is None else float(v)
                          for v in (self._last_work, self._not_working_since, self._paused))
        self._frames = _LoggedFrames(self.surface, log)
        onsets, offsets = np.full(n, np.nan), np.full(n, np.nan)
        dropped = np.zeros(n, dtype=np.int64)
        valid = np.zeros(n, dtype=bool)
        queue = list(range(n))
        self.surface.begin(block)
        try:
            while queue and not self.stop_requested:
                self._between_trials(log)
                if self.stop_requested:
                    break
                positions = queue[:self.spec.stimuli_per_trial]
                machine = self._trial(positions, log, on_onset)
                record = machine.record
                shown = len(record.onsets)
                held = machine.valid_stimuli() if record.outcome is not TrialOutcome.ABORTED else 0
                log.add_trial(self.next_trial, record, positions, shown, held)
                self._emit("trial_end", record.stop, trial=self.next_trial, outcome=int(record.outcome))
                if not math.isnan(record.acquired):
                    self._working(record.acquired)
                    hold = baseline_hold(record.acquired, record.onsets[0] if record.onsets else math.nan,
                                         record.break_time)
                    if hold is not None:
                        self.gaze.held_fixation(*hold, self.spec.fixation_point_deg)
                        self._log_corrections(log)
                if record.outcome is TrialOutcome.NO_FIXATION:
                    self.next_trial += 1
                    continue
                for i, position in enumerate(positions):
                    log.position_trial[position] = self.next_trial if i < shown else log.position_trial[position]
                    if i < shown:
                        onsets[position] = record.onsets[i]
                    valid[position] = i < held
                    log.position_lost[position] = i >= held
                self.next_trial += 1
                queue = queue[len(positions):]
        finally:
            self.surface.end()
        # Stimuli the operator's stop left unshown are not lost to behaviour: they were never tried.
        frame_times = np.asarray(log.frame_times)
        frame_position = np.asarray(log.frame_position)
        for position in np.flatnonzero(np.isfinite(onsets)):
            on = np.flatnonzero(frame_position == position)
            first, last = int(on[0]), int(on[-1])
            removed = min(last + 1, len(frame_times) - 1)
            offsets[position] = frame_times[removed] if last + 1 < len(frame_times) else math.nan
            dropped[position] = self._dropped_frames(frame_times[first:removed + 1], self.surface.period)
        valid &= dropped == 0
        return ShowingResult(onsets, offsets, dropped, valid, log)

    # -- one trial ------------------------------------------------------------------------------------

    def _trial(self, positions: list[int], log: BehaviorLog, on_onset: Callable[[int, float], None]) -> TrialMachine:
        surface = self._frames
        machine = TrialMachine(self.spec, self.timing, len(positions),
                               reward=lambda t, pulses: self._give(t, pulses, log),
                               monitors_gaze=self.gaze.monitors_gaze, realtime_gaze=self.gaze.realtime)
        machine.start(surface.last_flip())
        last_scene: Scene | None = None
        while True:
            self._take_requests(log, machine)
            started, acquired, broke = (math.isnan(machine.record.start), math.isnan(machine.record.acquired),
                                        math.isnan(machine.record.break_time))
            if machine.watching or not self.gaze.monitors_gaze:
                until = surface.horizon()
                samples = self.gaze.read(until)
                log.add_gaze(samples, until)
                machine.on_gaze(samples, until)
            machine.on_time(surface.next_flip())
            if machine.finished:
                self._emit_gaze_events(machine, acquired, broke)
                return machine
            scene = machine.scene()
            position = positions[scene.stimulus] if scene.stimulus >= 0 else -1
            onsets_before = len(machine.record.onsets)
            surface.draw(scene, position)
            flip = surface.flip()
            log.add_frame(flip, scene, position)
            machine.on_flip(flip)
            if scene != last_scene:
                self.gaze.scene(flip, scene.fixation, scene.stimulus >= 0)
                self._emit("scene", flip, fixation=scene.fixation, stimulus=position,
                           fixation_deg=self.spec.fixation_point_deg)
                last_scene = scene
            if started and not math.isnan(machine.record.start):
                self._emit("trial_start", flip, trial=self.next_trial)
            if len(machine.record.onsets) > onsets_before:
                on_onset(position, flip)
                self._emit("stimulus_onset", flip, position=position, index=scene.stimulus, trial=self.next_trial)
            self._emit_gaze_events(machine, acquired, broke)

    def _log_corrections(self, log: BehaviorLog) -> None:
        """A calibrated source's new drift corrections, as events (their x and y shifts in degrees)."""
        corrections = getattr(self.gaze, "corrections", ())
        for correction in corrections[self._corrections_logged:]:
            log.add_event(correction.time, "drift_correction_x", correction.dx)
            log.add_event(correction.time, "drift_correction_y", correction.dy)
        self._corrections_logged = len(corrections)

    def _emit_gaze_events(self, machine: TrialMachine, acquired_before: bool, broke_before: bool) -> None:
        """Acquisition and break happened at a sample's time, decided before this frame: say so once."""
        record = machine.record
        if acquired_before and not math.isnan(record.acquired):
            self._emit("fixation_acquired", record.acquired, trial=self.next_trial)
        if broke_before and not math.isnan(record.break_time):
            self._emit("break", record.break_time, trial=self.next_trial)

    def _give(self, time_: float, pulses: int, log: BehaviorLog, manual: bool = False) -> None:
        spec = self.spec
        self.reward.deliver(RewardDelivery(time_, pulses, spec.reward_ms, spec.reward_pause_ms, manual))
        self.gaze.rewarded(time_, pulses)
        log.add_event(time_, "manual_reward" if manual else "reward", pulses)
        self._emit("reward", time_, pulses=pulses, manual=manual)

    # -- between trials -------------------------------------------------------------------------------

    def _take_requests(self, log: BehaviorLog, machine: TrialMachine | None = None) -> None:
        now = self._frames.last_flip()
        log.takes += 1
        for command in self.operator.take():
            log.add_event(now, f"operator_{command}")
            if command == "reward":
                self._give(now, self.spec.reward_pulses, log, manual=True)
            elif command == "pause":
                self._paused = True
            elif command == "resume":
                self._paused = False
            elif command == "stop":
                self.stop_requested = True
            elif command == "abort" and machine is not None:
                machine.abort(now)

    def _between_trials(self, log: BehaviorLog) -> None:
        """Operator pauses, and the pause when the monkey has not fixated for ``not_working_s``."""
        self._take_requests(log)
        if self._paused:
            self.say(f"behavior: paused by the operator before trial {self.next_trial}; waiting for resume")
            while self._paused and not self.stop_requested:
                self._blank_frame(log)
                if not self._frames.realtime:
                    time.sleep(0.02)  # a simulated clock must not race ahead while a person decides
                self._take_requests(log)
            self.say(f"behavior: resumed at trial {self.next_trial}")
        now = self._frames.last_flip()
        if self._last_work is None:
            self._last_work = now
        idle = now - self._last_work
        if idle >= self.spec.not_working_s:
            if self._not_working_since is None:
                self._not_working_since = self._last_work
            self.say(f"behavior: the monkey has not fixated for {idle:.0f} s (trial {self.next_trial}); the session "
                     f"is paused for {self.spec.not_working_pause_s:g} s, then fixation is offered again. Nothing "
                     f"recorded is lost; stop with the operator's stop if the monkey is done for the day")
            log.add_event(now, "not_working", idle)
            end = now + self.spec.not_working_pause_s
            while self._frames.next_flip() <= end and not self.stop_requested:
                self._blank_frame(log)
                self._take_requests(log)
            self._last_work = self._frames.last_flip()
            log.add_event(self._last_work, "offering_fixation")

    def _blank_frame(self, log: BehaviorLog) -> None:
        """A blank frame outside trials; gaze is still read, so every sample is kept."""
        until = self._frames.horizon()
        log.add_gaze(self.gaze.read(until), until)
        self._frames.draw(BLANK, -1)
        log.add_frame(self._frames.flip(), BLANK, -1)

    def _working(self, acquired: float) -> None:
        if self._not_working_since is not None:
            self.say(f"behavior: the monkey is working again (fixation at trial {self.next_trial}, after "
                     f"{acquired - self._not_working_since:.0f} s)")
            self._not_working_since = None
        self._last_work = acquired
