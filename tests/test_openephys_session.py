"""`rig run --openephys URL`: the GUI's recording named and started before the first stimulus, a message per
block, trial markers on their TTL lines, recording stopped at the end, all kept in the session file. The GUI
and its NetworkEvents plugin are the doubles written from their source (rig/recording/openephys/gui_double.py),
on real sockets."""
from __future__ import annotations

import json

import pytest

from helpers.protocols import tiny_protocol
from rig.cli import main
from rig.recording.openephys.gui_double import GuiDouble, GuiState, NetworkEventsDouble
from rig.session import read_session


@pytest.fixture
def gui(tmp_path):
    state = GuiState(tmp_path)
    with GuiDouble(state) as http, NetworkEventsDouble(state) as events:
        yield state, http, events


def _protocol(tmp_path, events_port: int, generations: int = 3) -> str:
    path = tmp_path / "p.toml"
    path.write_text(tiny_protocol(generations=generations, popsize=4, references=1, extra=f"""
[behavior]
stimuli_per_trial = 2
[gaze]
source = "simulated"
break_hazard_hz = 1.0
[openephys]
events_port = {events_port}
"""))
    return str(path)


def test_a_session_drives_the_gui_and_marks_its_trials(gui, tmp_path):
    state, http, events = gui
    out = tmp_path / "monkey-42.h5"
    assert main(["run", _protocol(tmp_path, events.port), "--out", str(out), "--quiet",
                 "--openephys", http.url]) == 0
    # Recording: named after the session, started before the first block's message, stopped at the end.
    modes = [mode for _, mode in state.transitions]
    assert modes[:2] == ["ACQUIRE", "RECORD"] and modes[-1] != "RECORD"
    assert state.base_text == "monkey-42"
    messages = [text for _, text, _ in state.messages]
    assert [m.split(" (")[0] for m in messages] == ["rig block 1 of 3", "rig block 2 of 3", "rig block 3 of 3"]
    assert all(mode == "RECORD" for _, _, mode in state.messages)
    # Markers: each a pulse (state 1 then 0) on its line; a trial starts before its stimuli.
    session = read_session(out)
    from rig.behavior.tables import behavior_tables

    trials = behavior_tables(session).trials
    lines = [(c.line, c.state) for c in events.ttl]
    starts = [state_ for line, state_ in lines if line == 2]
    assert starts.count(1) == starts.count(0) == len(trials["number"])
    onsets = sum(1 for line, state_ in lines if line == 3 and state_ == 1)
    assert onsets == int(trials["shown"].sum())
    first_trial = next(i for i, (line, s) in enumerate(lines) if line == 2 and s == 1)
    first_onset = next(i for i, (line, s) in enumerate(lines) if line == 3 and s == 1)
    assert first_trial < first_onset
    # The session keeps where the GUI recorded, at the start and as it ended.
    assert session.provenance["openephys"]["gui"]["base_text"] == "monkey-42"
    ended = json.loads(session.attrs["openephys"])
    assert ended["gui"]["mode_after_stop"] in ("ACQUIRE", "IDLE")
    assert ended["markers"]["requests"]["lost"] == 0
    assert ended["markers"]["markers"]["sent"] == ended["markers"]["markers"]["received"] > 0


def test_a_gui_that_does_not_answer_fails_before_anything_is_shown(tmp_path, capsys):
    out = tmp_path / "never.h5"
    assert main(["run", _protocol(tmp_path, 1), "--out", str(out), "--quiet",
                 "--openephys", "http://127.0.0.1:9"]) != 0
    err = capsys.readouterr().err
    assert "127.0.0.1:9" in err and "HTTP server" in err
    assert not out.exists()
