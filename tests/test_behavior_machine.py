"""The trial machine on a simulated frame clock, driven by scripted gaze: every rule at a known time.

The script is written from DESIGN.md §9 (what a trial is at a monkey rig), not from the machine: gaze lands in
the window at a set latency after the fixation point appears, and leaves (or goes missing) at set times.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from protocols.base import Block
from protocols.spec import BehaviorSpec
from rig.behavior.frames import SimulatedFrames
from rig.behavior.gaze.base import GazeSamples, GazeSource
from rig.behavior.gaze.none import NoGaze
from rig.behavior.machine import StimulusTiming
from rig.behavior.operator import Operator
from rig.behavior.outcomes import TrialOutcome
from rig.behavior.reward.base import RewardOutput
from rig.behavior.runner import TrialRunner
from rig.display.psychopy import dropped_frames

FRAME = 1 / 60
RATE = 500


class ScriptedEyes(GazeSource):
    """Gaze at 500 Hz: off the window until ``latency`` after each fixation-point onset, then on the point.

    ``away``: (start, stop) intervals with gaze 5° off; ``missing``: intervals with no gaze (blinks);
    ``never``: never look at the point.
    """

    realtime = False

    def __init__(self, latency: float = 0.2, away=(), missing=(), never: bool = False) -> None:
        self.latency, self.away, self.missing, self.never = latency, list(away), list(missing), never
        self.fixation_on: float | None = None
        self.k = 0

    def start(self, task) -> None:
        super().start(task)
        self.origin = task.now

    def scene(self, time: float, fixation_on: bool, stimulus_on: bool) -> None:
        if fixation_on and self.fixation_on is None:
            self.fixation_on = time
        elif not fixation_on:
            self.fixation_on = None

    def _read(self, until: float) -> GazeSamples:
        stop = int(math.floor((until - self.origin) * RATE + 1e-9))
        times = self.origin + np.arange(self.k + 1, stop + 1) / RATE
        self.k = max(self.k, stop)
        x = np.full(len(times), 12.0)
        if self.fixation_on is not None and not self.never:
            x[times >= self.fixation_on + self.latency] = 0.0
        for a, b in self.away:
            x[(times >= a) & (times < b)] = 5.0
        valid = np.ones(len(times), dtype=bool)
        for a, b in self.missing:
            valid[(times >= a) & (times < b)] = False
        return GazeSamples(times, np.where(valid, x, np.nan), np.where(valid, 0.0, np.nan), valid)


class Rewards(RewardOutput):
    def __init__(self) -> None:
        self.given = []

    def _deliver(self, reward) -> None:
        self.given.append(reward)


def _block(n: int) -> Block:
    return Block(0, [f"s{i}" for i in range(n)], ["generated"] * n, np.zeros(n), np.arange(n),
                 torch.zeros(n, 3, 8, 8), np.zeros((n, 2)))


def _run(eyes: GazeSource, n: int = 4, operator: Operator | None = None, **spec: object):
    rewards = Rewards()
    runner = TrialRunner(BehaviorSpec(**spec), StimulusTiming(6, 9, 0.2), SimulatedFrames(), eyes, rewards,
                         dropped_frames=dropped_frames, operator=operator, say=lambda message: None)
    onsets = []
    result = runner.run(_block(n), lambda position, t: onsets.append((position, t)))
    return result, rewards, onsets


def test_a_held_trial_shows_every_stimulus_at_frame_times_and_rewards_once():
    result, rewards, onsets = _run(ScriptedEyes(latency=0.2))
    assert result.valid.all() and not result.log.position_lost.any()
    # Fixation point at the first flip (1 frame), gaze in at +200 ms, 300 ms hold, then 6 on + 9 off frames.
    assert result.onsets[0] == pytest.approx(FRAME + 0.2 + 0.3, abs=FRAME + 1e-9)
    assert np.diff(result.onsets) == pytest.approx(np.full(3, 15 * FRAME))
    assert result.offsets - result.onsets == pytest.approx(np.full(4, 6 * FRAME))
    assert [p for p, _ in onsets] == [0, 1, 2, 3]
    assert result.log.trials["outcome"] == [TrialOutcome.COMPLETED]
    assert len(rewards.given) == 1 and rewards.given[0].pulses == 1
    # The reward waits for the last response window (onset + 200 ms), not just the last blank.
    assert rewards.given[0].time >= result.onsets[-1] + 0.2 - 1e-9


def test_a_break_invalidates_the_stimulus_on_screen_and_those_after_it_and_removes_it_on_the_next_frame():
    # Stimuli at ~0.517 + k * 0.25; gaze leaves at 1.05, during stimulus 2 (on 1.017..1.117).
    result, rewards, _ = _run(ScriptedEyes(latency=0.2, away=[(1.05, 9.0)]))
    trial = result.log.trials
    assert trial["outcome"] == [TrialOutcome.BROKE_FIXATION]
    assert trial["break_time"][0] == pytest.approx(1.05, abs=1 / RATE)
    # Stimulus 0's window ended (onset + 0.2) before the break; stimulus 1's (0.767 + 0.2 = 0.967) too.
    assert list(result.valid) == [True, True, False, False]
    assert list(result.log.position_lost) == [False, False, True, True]
    assert math.isfinite(result.onsets[2]) and math.isnan(result.onsets[3])
    # Off at the first flip after the break: within one frame.
    assert 0 <= result.offsets[2] - 1.05 <= FRAME + 1e-9
    assert rewards.given == []


def test_a_blink_within_the_grace_is_forgiven_and_a_longer_one_is_a_break():
    held, _, _ = _run(ScriptedEyes(latency=0.2, missing=[(0.9, 0.98)]), blink_grace_ms=100)
    assert held.valid.all()
    broke, _, _ = _run(ScriptedEyes(latency=0.2, missing=[(0.9, 1.2)]), blink_grace_ms=100)
    assert broke.log.trials["outcome"] == [TrialOutcome.BROKE_FIXATION]
    # The break dates from the first missing sample, and is decided once the grace has run out.
    assert broke.log.trials["break_time"][0] == pytest.approx(0.9, abs=1 / RATE)


def test_a_break_during_the_baseline_hold_shows_nothing():
    result, _, onsets = _run(ScriptedEyes(latency=0.2, away=[(0.3, 9.0)]), hold_ms=300)
    assert result.log.trials["outcome"] == [TrialOutcome.BROKE_FIXATION]
    assert onsets == [] and not result.valid.any() and result.log.position_lost.all()


def test_no_fixation_ends_the_trial_after_the_acquire_time_and_the_same_stimuli_are_tried_again():
    class LateEyes(ScriptedEyes):
        """Ignores the first fixation point; looks at the next ones."""

        def scene(self, time, fixation_on, stimulus_on):
            self.seen = getattr(self, "seen", 0) + (fixation_on and self.fixation_on is None)
            super().scene(time, fixation_on, stimulus_on)
            self.never = self.seen < 2

    result, _, _ = _run(LateEyes(latency=0.2), acquire_ms=500)
    trials = result.log.trials
    assert trials["outcome"] == [TrialOutcome.NO_FIXATION, TrialOutcome.COMPLETED]
    assert trials["stop"][0] - trials["start"][0] == pytest.approx(0.5 + 1.0 + 1.0, abs=2 * FRAME)  # + timeout, iti
    assert result.valid.all() and (result.log.position_trial == 1).all()


def test_reward_per_stimulus_pays_for_each_stimulus_held_even_when_the_trial_breaks():
    _, rewards, _ = _run(ScriptedEyes(latency=0.2, away=[(1.05, 9.0)]), reward_per="stimulus", reward_pulses=2)
    assert [r.pulses for r in rewards.given] == [4]  # two stimuli held, two pulses each


def test_stimuli_are_split_into_trials_and_rewards_follow_each_completed_trial():
    result, rewards, _ = _run(ScriptedEyes(latency=0.2), n=10, stimuli_per_trial=4)
    assert result.log.trials["stimuli"] == [4, 4, 2]
    assert list(result.log.position_trial) == [0] * 4 + [1] * 4 + [2] * 2
    assert len(rewards.given) == 3


def test_without_gaze_trials_run_ungated():
    result, _, _ = _run(NoGaze(), n=4)
    assert result.valid.all()
    assert result.log.trials["acquired"][0] == result.log.trials["start"][0]


def test_the_operator_can_stop_after_the_current_trial_and_give_a_manual_reward():
    operator = Operator()
    operator.request("reward")
    operator.request("stop")
    result, rewards, _ = _run(ScriptedEyes(latency=0.2), n=8, operator=operator, stimuli_per_trial=4)
    assert [r.manual for r in rewards.given] == [True]
    # The stop came before the first trial: nothing shown, nothing lost to behaviour.
    assert result.log.trial_count == 0 and not result.log.position_lost.any()
    kinds = [kind for _, kind, *_ in result.log.events]
    assert kinds[:2] == ["operator_reward", "manual_reward"] and "operator_stop" in kinds


def test_a_monkey_that_does_not_work_pauses_the_session_and_it_carries_on_when_he_does():
    class Resting(ScriptedEyes):
        def _read(self, until):
            self.never = until < 40.0
            return super()._read(until)

    said = []
    runner = TrialRunner(BehaviorSpec(not_working_s=10, not_working_pause_s=5, acquire_ms=1000),
                         StimulusTiming(6, 9, 0.2), SimulatedFrames(), Resting(latency=0.2), Rewards(),
                         dropped_frames=dropped_frames, say=said.append)
    result = runner.run(_block(4), lambda p, t: None)
    assert result.valid.all()
    events = [kind for _, kind, *_ in result.log.events]
    assert events.count("not_working") >= 2 and "offering_fixation" in events
    assert any("has not fixated" in m for m in said) and any("working again" in m for m in said)


def test_listeners_hear_each_trial_event_in_order_and_a_failing_one_stops_nothing():
    rewards = Rewards()
    runner = TrialRunner(BehaviorSpec(), StimulusTiming(6, 9, 0.2), SimulatedFrames(),
                         ScriptedEyes(latency=0.2, away=[(1.05, 9.0)]), rewards, dropped_frames=dropped_frames,
                         say=lambda message: None)
    heard = []
    runner.add_listener(lambda kind, t, info: heard.append((kind, t, info)))
    runner.add_listener(lambda kind, t, info: 1 / 0)
    result = runner.run(_block(4), lambda position, t: None)
    kinds = [k for k, _, _ in heard if k != "scene"]
    assert kinds == ["trial_start", "fixation_acquired", "stimulus_onset", "stimulus_onset", "stimulus_onset",
                     "break", "trial_end"]
    onsets = [t for k, t, _ in heard if k == "stimulus_onset"]
    np.testing.assert_array_equal(onsets, result.onsets[:3])
    assert [t for k, t, _ in heard if k == "break"] == [result.log.trials["break_time"][0]]
    assert runner.listener_failures == sum(1 for _ in heard)  # the failing listener was called every time
    scenes = [(info["fixation"], info["stimulus"]) for k, _, info in heard if k == "scene"]
    assert scenes[:3] == [(True, -1), (True, 0), (True, -1)]


def test_gaze_leaving_just_after_the_last_window_ends_is_not_a_break():
    # The last stimulus's window (onset + 0.2 s) ends between two frames; gaze leaves 4 ms after it. The samples
    # read for the next frame include that exit, but fixation had to hold only to the window's end.
    first, _, _ = _run(ScriptedEyes(latency=0.2))
    window_end = first.onsets[-1] + 0.2
    result, rewards, _ = _run(ScriptedEyes(latency=0.2, away=[(window_end + 0.004, 9.0)]))
    assert result.log.trials["outcome"] == [TrialOutcome.COMPLETED]
    assert result.valid.all() and len(rewards.given) == 1
