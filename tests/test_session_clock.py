"""Display-clock times as seconds since a session's start, across resumes and display clocks."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from rig.cli import main
from rig.session import SessionFileError, read_session
from rig.session.clock import SessionClock
from helpers.sessions import run_until_killed
from helpers.protocols import tiny_protocol


def recorded(anchor: dict, display: dict, resumes: list[dict] = ()) -> SimpleNamespace:
    """What SessionClock reads of a session: its attributes, provenance and path."""
    return SimpleNamespace(attrs={"clock_anchor": json.dumps(anchor), "resumes": json.dumps(list(resumes))},
                           provenance={"display": display}, path="s.h5")


def test_each_run_maps_its_own_display_clock():
    # Run 0: a PsychoPy display whose clock is 5 s behind time.monotonic; then a resume after a
    # reboot (time.monotonic restarted) on a headless display, which wrote blocks 3 onwards.
    session = recorded({"monotonic_s": 100.0, "unix_s": 1000.0}, {"clock": "psychopy", "monotonic_offset_s": 5.0},
                       [{"clock_anchor": {"monotonic_s": 10.0, "unix_s": 2000.0}, "blocks_found": 3,
                         "display": {"clock": "time.monotonic", "monotonic_offset_s": 0.0}}])
    clock = SessionClock.from_session(session)
    assert clock.start.timestamp() == 1000.0
    assert [clock.run_of(b) for b in range(5)] == [0, 0, 0, 1, 1]
    np.testing.assert_allclose(clock.since_start(np.array([120.0, np.nan]), 1), [25.0, np.nan])
    np.testing.assert_allclose(clock.since_start(30.0, 4), 1020.0)


def test_files_without_anchors_have_no_session_clock():
    assert SessionClock.from_session(SimpleNamespace(attrs={}, provenance={}, path="old.h5")) is None


@pytest.mark.parametrize("anchor, display, message", [
    ({"monotonic_s": "soon", "unix_s": 1.0}, {"clock": "time.monotonic"}, "clock_anchor: expected"),
    ({"monotonic_s": 1.0, "unix_s": 1.0}, {"clock": "psychopy"}, "no usable monotonic_offset_s"),
])
def test_malformed_anchors_are_named(anchor, display, message):
    with pytest.raises(SessionFileError, match=message):
        SessionClock.from_session(recorded(anchor, display))


def test_a_resumed_session_counts_from_its_first_start(tmp_path, monkeypatch, capsys):
    (tmp_path / "p.toml").write_text(tiny_protocol(name="resumed", generations=6, seed=3))
    out = run_until_killed(tmp_path, "killed.h5", 2, monkeypatch)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    session = read_session(out)
    clock = SessionClock.from_session(session)
    assert [run.first_block for run in clock.runs] == [0, 2]
    starts = [float(np.min(clock.since_start(b.onset_times, b.index))) for b in session.blocks]
    assert 0 <= starts[0] and starts == sorted(starts)  # the resumed blocks come after the first run's
    created = clock.start_unix_s
    resumed = json.loads(session.attrs["resumes"])[0]["clock_anchor"]["unix_s"]
    assert created + starts[2] >= resumed - 1e-3  # block 2 was shown by the resumed run, after it started
