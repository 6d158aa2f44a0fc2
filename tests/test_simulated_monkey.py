"""The simulated monkey behaves as its options say: latencies, blinks, breaks, rests, fixational stability.

Each test drives the monkey as the trial machine would (scene changes after the
reads up to their time) and checks its samples and its event log against the
distributions its options name, with tolerances of a few standard errors.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.gaze_conformance import assert_same_samples, drive, trials

from protocols.registry import OptionError
from rig.behavior.gaze import GAZE_SOURCES, GazeError, GazeSamples, GazeTask
from rig.behavior.gaze.simulated import EVENT_KINDS, SimulatedMonkey

TASK = GazeTask(fixation_deg=(0.0, 0.0), window_deg=1.5, clock="test", now=0.0, session_seed=1)
#: A monkey that never blinks, breaks or rests.
PERFECT = dict(blink_rate_hz=0.0, break_hazard_hz=0.0, rest_hazard_hz=0.0, rest_hazard_per_reward_hz=0.0)


def monkey(task: GazeTask = TASK, **options) -> SimulatedMonkey:
    """A started monkey with ``options`` (seed 0 unless given)."""
    built = GAZE_SOURCES.build("simulated", {"seed": 0, **options})
    built.start(task)
    return built


def times_of(m: SimulatedMonkey, kind: str) -> np.ndarray:
    return np.array([t for t, k in m.events if k == kind])


def inside(samples: GazeSamples, radius: float = TASK.window_deg) -> np.ndarray:
    """Valid samples within ``radius`` of the fixation point."""
    return samples.valid & (np.hypot(samples.x, samples.y) < radius)


def three_trials(m: SimulatedMonkey) -> GazeSamples:
    return GazeSamples.concat(drive(m, list(np.arange(1, 361) / 60), trials(0.0, 3)))


def test_the_same_seed_gives_the_same_monkey_and_another_seed_another():
    first, again, other = monkey(seed=5), monkey(seed=5), monkey(seed=6)
    samples = three_trials(first)
    assert_same_samples(three_trials(again), samples)
    assert again.events == first.events
    assert not np.array_equal(three_trials(other).x, samples.x, equal_nan=True)


def test_the_seed_it_reports_rebuilds_it_exactly():
    derived = GAZE_SOURCES.build("simulated", {})
    derived.start(GazeTask((0.0, 0.0), 1.5, "test", 0.0, session_seed=7))
    described = json.loads(json.dumps(derived.describe()))  # as the session file stores it
    seed = described["options"]["seed"]
    assert isinstance(seed, int)
    rebuilt = GAZE_SOURCES.build(described["kind"], described["options"])
    rebuilt.start(GazeTask((0.0, 0.0), 1.5, "test", 0.0, session_seed=99))  # its own seed wins
    assert_same_samples(three_trials(rebuilt), three_trials(derived))
    same_session = GAZE_SOURCES.build("simulated", {})
    same_session.start(GazeTask((0.0, 0.0), 1.5, "test", 0.0, session_seed=7))
    other_session = GAZE_SOURCES.build("simulated", {})
    other_session.start(GazeTask((0.0, 0.0), 1.5, "test", 0.0, session_seed=8))
    assert same_session.options.seed == seed != other_session.options.seed


def test_samples_are_on_the_rate_grid_from_task_now():
    m = monkey(GazeTask((0.0, 0.0), 1.5, "test", now=12.25), rate_hz=1000.0)
    samples = GazeSamples.concat([m.read(12.25 + i / 7) for i in range(1, 15)])
    np.testing.assert_allclose(samples.times, 12.25 + np.arange(2001) / 1000.0, rtol=0, atol=1e-12)


def test_a_scene_change_shapes_only_the_samples_after_it():
    told, untold = monkey(), monkey()
    before = told.read(2.0)
    assert_same_samples(untold.read(2.0), before)
    told.scene(2.0, True, False)
    assert len(times_of(told, "acquire")) == 0  # nothing yet: the latency runs from 2.0
    assert not np.array_equal(told.read(4.0).x, untold.read(4.0).x, equal_nan=True)


@pytest.mark.timeout(30)
def test_acquire_latency_follows_the_options_and_gaze_arrives_with_the_saccade():
    m = monkey(**PERFECT, acquire_latency_ms=250.0, acquire_latency_sd_ms=80.0, acquire_latency_min_ms=80.0,
               look_interval_s=(0.05, 0.1))
    latencies, arrivals = [], []
    t = 1.0
    for _ in range(400):
        m.read(t)
        m.scene(t, True, False)
        samples = m.read(t + 1.2)
        acquire = times_of(m, "acquire")[-1]
        fixate = times_of(m, "fixate")[-1]
        latencies.append(acquire - t)
        entered = samples.times[np.argmax(inside(samples))]
        arrivals.append((acquire < entered <= fixate + 1 / 500, fixate - acquire))
        m.scene(t + 1.2, False, False)
        t += 1.5
    latencies = np.array(latencies) * 1e3
    assert latencies.min() >= 80.0 - 1e-6
    assert abs(latencies.mean() - 250.0) < 15.0  # SE 4 ms; the floor at 80 ms adds 0.5
    assert abs(latencies.std() - 80.0) < 12.0
    assert all(ok for ok, _ in arrivals)
    durations = np.array([d for _, d in arrivals]) * 1e3
    assert np.all((durations > 21.0) & (durations < 21.0 + 2.2 * 20))  # the main sequence, from within 17 deg


@pytest.mark.timeout(30)
def test_blinks_blank_the_samples_between_their_events_as_often_as_the_rate_says():
    m = monkey(blink_rate_hz=1.0, blink_ms=100.0, blink_sd_ms=20.0, blink_min_ms=30.0, long_blink_fraction=0.0)
    samples = m.read(600.0)
    starts, ends = times_of(m, "blink_start"), times_of(m, "blink_end")
    assert len(starts) == len(ends) or len(starts) == len(ends) + 1
    # Exactly the samples at or after a blink's start and before its end are invalid.
    shut = np.searchsorted(starts, samples.times, side="right") > np.searchsorted(ends, samples.times, side="right")
    np.testing.assert_array_equal(samples.valid, ~shut)
    assert np.all(np.isnan(samples.x[shut]))
    # Blinks start at blink_rate_hz per second of open eyes: rate x duration / (1 + rate x duration) of the time.
    expected = 1.0 * 0.1 / (1 + 1.0 * 0.1)
    assert abs((~samples.valid).mean() - expected) < 0.12 * expected
    durations = (ends - starts[:len(ends)]) * 1e3
    assert abs(durations.mean() - 100.0) < 5.0 and durations.min() >= 30.0


def test_a_fraction_of_blinks_is_long():
    m = monkey(blink_rate_hz=2.0, long_blink_fraction=0.3, long_blink_ms=(300.0, 600.0), blink_ms=80.0)
    m.read(600.0)
    durations = (times_of(m, "blink_end") - times_of(m, "blink_start")[:len(times_of(m, "blink_end"))]) * 1e3
    long = durations >= 300.0
    assert abs(long.mean() - 0.3) < 0.06
    assert durations[long].max() <= 600.0


@pytest.mark.timeout(30)
def test_breaks_come_at_the_hazard_rate_and_the_monkey_comes_back_only_when_the_point_reappears():
    m = monkey(blink_rate_hz=0.0, rest_hazard_hz=0.0, rest_hazard_per_reward_hz=0.0, break_hazard_hz=0.5)
    fixating_s, t = 0.0, 1.0
    for _ in range(120):
        m.read(t)
        m.scene(t, True, False)
        samples = m.read(t + 6.0)
        fixate = times_of(m, "fixate")[-1]
        breaks = times_of(m, "break")
        broke = breaks[-1] if len(breaks) and breaks[-1] > fixate else None
        fixating_s += (broke if broke is not None else t + 6.0) - fixate
        if broke is not None:
            after = samples.times > broke + 0.1
            assert not inside(samples)[after].any()  # it looked away and stayed away with the point still on
            assert times_of(m, "acquire")[-1] < broke
        m.scene(t + 6.0, False, False)
        t += 7.0
    expected = 0.5 * fixating_s
    assert abs(len(times_of(m, "break")) - expected) < 3 * np.sqrt(expected)


@pytest.mark.timeout(30)
def test_drift_and_microsaccades_keep_gaze_in_the_window():
    m = monkey(**PERFECT, microsaccade_rate_hz=1.0, drift_deg_per_sqrt_s=0.1)
    m.read(0.5)
    m.scene(0.5, True, False)
    samples = m.read(300.0)
    fixating = samples.times >= times_of(m, "fixate")[0]
    assert inside(samples)[fixating].mean() > 0.99
    assert np.hypot(samples.x, samples.y)[fixating].max() < 1.5
    assert abs(len(times_of(m, "microsaccade")) - 300) < 3 * np.sqrt(300)


def test_without_microsaccades_the_drift_wanders_as_a_random_walk():
    m = monkey(**PERFECT, microsaccade_rate_hz=0.0, drift_deg_per_sqrt_s=0.1, noise_deg=0.0, landing_error_deg=0.0)
    m.read(0.5)
    m.scene(0.5, True, False)
    samples = m.read(400.0)
    x = samples.x[samples.times >= times_of(m, "fixate")[0]]
    steps = np.diff(x[::500])  # one second apart
    assert abs(steps.std() - 0.1) < 0.01


@pytest.mark.timeout(30)
def test_rests_come_sooner_after_many_rewards():
    def first_rest(seed: int, pulses: int) -> float:
        m = monkey(seed=seed, rest_hazard_hz=0.01, rest_hazard_per_reward_hz=0.001)
        m.read(0.5)
        if pulses:
            m.rewarded(0.5, pulses)
        until = 0.5
        while not len(times_of(m, "rest_start")) and until < 3000:
            until += 50.0
            m.read(until)
        return float(times_of(m, "rest_start")[0])

    sated = np.mean([first_rest(seed, 100) for seed in range(20)])
    fresh = np.mean([first_rest(seed, 0) for seed in range(20)])
    assert sated < 25.0  # hazard 0.11/s: a mean of 9 s after the reward
    assert fresh > 3 * sated  # hazard 0.01/s: a mean of 100 s


def test_a_resting_monkey_ignores_the_fixation_point_and_a_rest_during_fixation_is_a_break():
    m = monkey(**{**PERFECT, "rest_hazard_per_reward_hz": 10.0, "rest_mean_s": 1000.0})
    m.read(1.0)
    m.scene(1.0, True, False)
    m.read(2.0)
    assert len(times_of(m, "fixate")) == 1
    m.rewarded(2.0, 1)  # a hazard of 10 per second: it rests almost at once
    samples = m.read(3.0)
    rest = times_of(m, "rest_start")[0]
    assert times_of(m, "break")[0] == rest and rest < 3.0
    m.scene(3.0, False, False)
    m.scene(3.5, True, False)  # offered again while resting
    samples = m.read(20.0)
    assert len(times_of(m, "acquire")) == 1
    assert not inside(samples).any()
    assert len(times_of(m, "look")) > 10  # it looks around


def test_rests_last_rest_mean_s_on_average():
    durations = []
    for seed in range(5):
        m = monkey(seed=seed, rest_hazard_hz=10.0, rest_mean_s=20.0, look_interval_s=(5.0, 10.0))
        m.read(2000.0)
        starts, ends = times_of(m, "rest_start"), times_of(m, "rest_end")
        assert np.all(starts[1:len(ends) + 1] > ends[:len(starts) - 1])  # one rest at a time
        durations += list(ends - starts[:len(ends)])
    assert len(durations) > 400
    assert abs(np.mean(durations) - 20.0) < 3 * 20.0 / np.sqrt(len(durations))


def test_events_are_in_time_order_and_of_the_documented_kinds():
    m = monkey(blink_rate_hz=2.0, break_hazard_hz=1.0, rest_hazard_hz=0.05, rest_mean_s=2.0)
    GazeSamples.concat(drive(m, list(np.arange(1, 1201) / 20), trials(0.0, 30)))
    times = [t for t, _ in m.events]
    assert times == sorted(times)
    assert {k for _, k in m.events} == set(EVENT_KINDS)


@pytest.mark.parametrize("table, field", [
    ({"break_hazard_hz": -0.1}, "break_hazard_hz"),
    ({"rate_hz": 0}, "rate_hz"),
    ({"microsaccade_deg": [0.5, 0.2]}, "microsaccade_deg"),
    ({"break_distance_deg": [4.0]}, "break_distance_deg"),
    ({"long_blink_fraction": 1.5}, "long_blink_fraction"),
    ({"seed": -1}, "seed"),
])
def test_options_out_of_bounds_name_the_field(table, field):
    with pytest.raises(OptionError, match=rf"gaze source 'simulated': {field} = .* is invalid") as raised:
        GAZE_SOURCES.options("simulated", table)
    assert raised.value.field == field


def test_an_unknown_option_names_its_close_match():
    with pytest.raises(OptionError, match=r"unknown option\(s\) 'brek_hazard_hz'.*did you mean 'break_hazard_hz'"):
        GAZE_SOURCES.options("simulated", {"brek_hazard_hz": 0.1})


def test_a_monkey_not_started_says_so():
    m = GAZE_SOURCES.build("simulated", {})
    with pytest.raises(GazeError, match=r"start\(\) it before"):
        m.read(1.0)
    with pytest.raises(GazeError, match=r"start\(\) it before"):
        m.scene(1.0, True, False)
