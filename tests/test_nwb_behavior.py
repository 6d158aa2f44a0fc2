"""``rig export-nwb`` of a session with behaviour: trials, eye position and events, read back with pynwb and
checked against :func:`rig.behavior.tables.behavior_tables`; a session without behaviour gains nothing.

One in-silico session with a monkey that breaks fixation and rests (so every kind of trial outcome the
simulated monkey makes, rewards and not-working pauses are in it), and one without behaviour.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pynwb  # not importorskip: CI installs the nwb extra, and a silent skip would hide a broken export
import pytest

from helpers.protocols import run_tiny_session, tiny_protocol
from rig.behavior.outcomes import TrialOutcome
from rig.behavior.tables import BehaviorTables, behavior_tables
from rig.cli import main
from rig.export.nwb import NWB_BEHAVIOR_LAYOUT
from rig.export.nwb.behavior import EYE_REFERENCE_FRAME, on_timebase
from rig.export.nwb.tables import Times
from rig.session import read_session
from rig.session.clock import Run, SessionClock

#: Breaks about one trial in two, and rests often enough that the session pauses for it (not_working events).
RESTING = """
[behavior]
stimuli_per_trial = 3
not_working_s = 8
not_working_pause_s = 3

[gaze]
source = "simulated"
break_hazard_hz = 1.5
rest_hazard_hz = 0.1
rest_mean_s = 25
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(session, NWB file) of the resting monkey's session."""
    folder = tmp_path_factory.mktemp("nwb-behavior")
    (folder / "p.toml").write_text(tiny_protocol(generations=3, seed=3, popsize=6, references=2, extra=RESTING))
    session = folder / "s.h5"
    assert main(["run", str(folder / "p.toml"), "--out", str(session), "--quiet"]) == 0
    return session, _export(session, folder / "s.nwb")


def _export(session: Path, out: Path) -> Path:
    assert main(["export-nwb", str(session), str(out)]) == 0
    assert pynwb.validate(path=str(out)) == []  # the NWB schema, checked by pynwb itself
    return out


@pytest.fixture(scope="module")
def tables(exported) -> BehaviorTables:
    found = behavior_tables(read_session(exported[0]))
    assert found is not None
    return found


def test_the_trials_table_is_behavior_tables_on_the_presentations_timebase(exported, tables):
    session, out = exported
    trials = tables.trials
    assert set(trials["outcome"]) >= {TrialOutcome.COMPLETED, TrialOutcome.BROKE_FIXATION, TrialOutcome.NO_FIXATION}
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        rows = nwb.trials
        assert len(rows) == tables.count
        # In silico the trials' clock is simulated and starts at 0 with the session (one run): NWB times are the
        # recorded times themselves, NaN where a time did not happen.
        for column, name in (("start_time", "start"), ("stop_time", "stop"), ("acquired_time", "acquired"),
                             ("break_time", "break_time"), ("first_onset_time", "first_onset")):
            np.testing.assert_array_equal(rows[column].data[:], trials[name], err_msg=column)
        for name in ("outcome", "reward_pulses", "block", "showing", "stimuli", "shown", "held", "unfinished"):
            np.testing.assert_array_equal(rows[name].data[:], trials[name], err_msg=name)
        assert list(rows["outcome_label"].data[:]) == [TrialOutcome(int(c)).label for c in trials["outcome"]]
        assert np.isnan(rows["break_time"].data[:]).sum() == (trials["outcome"] != TrialOutcome.BROKE_FIXATION).sum()
        # One time base with the presentations: each trial's first onset is a presentation's start in the same
        # block, and every shown presentation (NaN: a break came first) starts within a trial of its block.
        shown = nwb.intervals["presentations"]
        starts, blocks = np.asarray(shown["start_time"].data[:]), np.asarray(shown["block"].data[:])
        starts, blocks = starts[np.isfinite(starts)], blocks[np.isfinite(starts)]
        assert starts.min() >= 0  # not seconds before the session began (the simulated clock is tied to its start)
        onsets = np.asarray(rows["first_onset_time"].data[:])
        for onset, block in zip(onsets[np.isfinite(onsets)], trials["block"][np.isfinite(onsets)]):
            assert onset in starts[blocks == block]
        start, stop = np.asarray(rows["start_time"].data[:]), np.asarray(rows["stop_time"].data[:])
        for t, b in zip(starts, blocks):
            assert np.any((trials["block"] == b) & (start <= t) & (t < stop))
        assert "ML2" in rows.description and "window_deg = 1.5" in rows.description


def test_eye_position_is_every_gaze_sample_in_degrees_with_blinks_as_nan(exported, tables):
    gaze = tables.gaze
    valid = gaze["valid"].astype(bool)
    assert (~valid).any() and valid.any()  # the simulated monkey blinks
    with pynwb.NWBHDF5IO(str(exported[1]), "r") as io:
        series = io.read().processing["behavior"]["EyeTracking"]["eye_position"]
        data = np.asarray(series.data[:])
        assert data.shape == (len(gaze["times"]), 2)
        np.testing.assert_array_equal(data[valid, 0], gaze["x"][valid])
        np.testing.assert_array_equal(data[valid, 1], gaze["y"][valid])
        assert np.isnan(data[~valid]).all()
        np.testing.assert_array_equal(series.timestamps[:], gaze["times"])
        assert series.unit == "degrees" and series.reference_frame == EYE_REFERENCE_FRAME
        assert "screen" in series.reference_frame and "+y up" in series.reference_frame


def test_rewards_and_not_working_pauses_are_events_tables(exported, tables):
    events = tables.events
    kinds = events["kinds"].astype(str)
    reward_ms = tables.spec["reward_ms"]
    with pynwb.NWBHDF5IO(str(exported[1]), "r") as io:
        nwb = io.read()
        assert set(nwb.events) == {"rewards", "not_working"}  # nobody pressed a key
        rewards = nwb.events["rewards"]
        given = np.isin(kinds, ("reward", "manual_reward"))
        np.testing.assert_array_equal(rewards["timestamp"].data[:], events["times"][given])
        np.testing.assert_array_equal(rewards["pulses"].data[:], events["values"][given])
        assert rewards["pulses"].data[:].sum() == tables.trials["reward_pulses"].sum()  # each earned pulse logged
        np.testing.assert_allclose(rewards["duration"].data[:], events["values"][given] * reward_ms / 1000)
        assert not np.any(rewards["manual"].data[:])
        pauses = nwb.events["not_working"]
        paused = kinds == "not_working"
        assert paused.sum() >= 2
        np.testing.assert_array_equal(pauses["timestamp"].data[:], events["times"][paused])
        np.testing.assert_array_equal(pauses["idle_s"].data[:], events["values"][paused])
        assert np.all(np.asarray(pauses["idle_s"].data[:]) >= tables.spec["not_working_s"])
        # Each pause lasts not_working_pause_s, to the frame, until fixation is offered again.
        np.testing.assert_allclose(pauses["duration"].data[:], tables.spec["not_working_pause_s"], atol=1 / 60 + 1e-9)
        np.testing.assert_array_equal(np.asarray(pauses["timestamp"].data[:]) + pauses["duration"].data[:],
                                      events["times"][kinds == "offering_fixation"])


def test_the_layout_names_every_behaviour_column(exported):
    with pynwb.NWBHDF5IO(str(exported[1]), "r") as io:
        nwb = io.read()
        for table in (nwb.trials, *nwb.events.values()):
            for column in table.colnames:
                assert f"`{column}`" in NWB_BEHAVIOR_LAYOUT, (table.name, column)
            assert f"`events/{table.name}`" in NWB_BEHAVIOR_LAYOUT or table.name == "trials"


def _objects(path: Path) -> dict[str, tuple]:
    """Every group and dataset of an HDF5 file, with each dataset's shape."""
    found: dict[str, tuple] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.setdefault(name, obj.shape if isinstance(obj, h5py.Dataset) else ()))
    return found


def test_a_session_without_behaviour_exports_exactly_as_before(tmp_path, monkeypatch):
    session = run_tiny_session(tmp_path, generations=2, seed=1)
    with_behaviour_export = _export(session, tmp_path / "now.nwb")
    # The export as it was before behaviour: the same code with the behaviour step taken out.
    monkeypatch.setattr("rig.export.nwb.export.add_behavior", lambda *args: None)
    before = _export(session, tmp_path / "before.nwb")
    assert _objects(with_behaviour_export) == _objects(before)
    with pynwb.NWBHDF5IO(str(with_behaviour_export), "r") as io:
        nwb = io.read()
        assert nwb.trials is None and not nwb.processing and not nwb.events


def _stub_session(clock: str) -> SimpleNamespace:
    """Just what Times.of reads: a session created at Unix 1000 s and resumed at 1500 s, from block 2."""
    attrs = {"clock_anchor": json.dumps({"monotonic_s": 50.0, "unix_s": 1000.0}),
             "resumes": json.dumps([{"blocks_found": 2, "clock_anchor": {"monotonic_s": 70.0, "unix_s": 1500.0},
                                     "display": {"clock": clock, "monotonic_offset_s": 0.0}}])}
    return SimpleNamespace(attrs=attrs, path="stub.h5", blocks=[SimpleNamespace(clock=clock)] * 4,
                           provenance={"display": {"clock": clock, "monotonic_offset_s": 0.0}})


def test_a_simulated_clock_counts_from_the_session_start_across_resumes():
    # A simulated frame clock starts at 0 with the session and a resume carries it on (rig/behavior/choice.py
    # clock_start): its seconds are the file's, for every run, and no time.monotonic offset applies to them.
    times = Times.of(_stub_session("simulated"))
    assert times.convert(2.5, 0) == 2.5 and times.convert(502.5, 3) == 502.5
    assert "simulated" in times.reference
    monotonic = Times.of(_stub_session("time.monotonic"))  # unchanged: display time + offset of its run
    assert monotonic.convert(60.0, 0) == 10.0 and monotonic.convert(80.0, 2) == 510.0


def test_gaze_and_events_take_the_clock_of_the_block_whose_trial_ran_then():
    # Two runs on one real clock: samples before block 2's first trial are run 0's, those after are run 1's.
    times = Times(SessionClock(1000.0, (Run(0, 900.0), Run(2, 950.0))), "time.monotonic")
    trials = {"start": np.array([100.0, 110.0, 200.0, 210.0]), "block": np.array([0, 1, 2, 3])}
    tables = BehaviorTables(trials, {}, {}, {}, "time.monotonic")
    converted = on_timebase(tables, np.array([99.0, 105.0, 150.0, 205.0, 300.0]), times)
    np.testing.assert_array_equal(converted, [-1.0, 5.0, 50.0, 155.0, 250.0])
