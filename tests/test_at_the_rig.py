"""At the rig, end to end: `rig calibrate` then `rig run protocols/monkey.toml` with a PsychoPy window, the
neuron and the eyes on one Open Ephys stream (`rig sim-rig`: spikes, a photodiode, and the simulated monkey's
gaze as ADC channels), the GUI driven over its HTTP API and marked through NetworkEvents (doubles from their
source), and the juice line a real serial port (a pseudo-terminal, a microcontroller's commands).

protocols/monkey.toml is run as a rig would fill it in, shrunk to seconds: the few values a test must change
(sizes, durations, the ports) are replaced in a copy; every table stays as written.
"""
from __future__ import annotations

import json
import os
import pty
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers.simrig import start_sim_rig, stop_sim_rig
from rig.behavior.outcomes import TrialOutcome
from rig.behavior.tables import behavior_tables
from rig.cli import main
from rig.recording.openephys.gui_double import GuiDouble, GuiState, NetworkEventsDouble
from rig.session import read_session

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a screen: run under xvfb-run "
                                                                         '-a -s "-screen 0 1280x1024x24" (make test does)')

#: The values a test shrinks or points elsewhere, as (as written in protocols/monkey.toml, in the test's copy).
SHRUNK = [
    ("generations = 30", "generations = 2"), ("popsize = 40", "popsize = 4"), ("count = 10", "count = 1"),
    ("max_frequency = 8\nimage_size = 128", "max_frequency = 3\nimage_size = 32"),
    ('units = ["vit_s14_focus:blocks.4.mlp.act:unit=743:token=cls"]',
     'units = ["test_cnn:features.7:unit=5"]\nweights = "random"'),
    ("width_cm = 53.0 ", "width_cm = 20.0 "), ("resolution = [1920, 1080]", "resolution = [400, 300]"),
    ("[display]\n", "[display]\npace = true\nfullscreen = false\n"), ("on_frames = 6", "on_frames = 3"),
    ("off_frames = 9", "off_frames = 3"), ("stimuli_per_trial = 4", "stimuli_per_trial = 3"),
    ("hold_ms = 300.0", "hold_ms = 100.0"), ("iti_ms = 1000.0", "iti_ms = 200.0"),
    ("timeout_ms = 1000.0", "timeout_ms = 200.0"), ("reward_ms = 100.0", "reward_ms = 20.0"),
]
#: sim-rig's monkey: works, breaks now and then, never rests.
MONKEY = {"break_hazard_hz": 0.1, "rest_hazard_hz": 0.0, "rest_hazard_per_reward_hz": 0.0, "acquire_latency_ms": 150}


class JuiceLine:
    """The microcontroller end of the reward's serial port: every command it is sent."""

    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        self.port = os.ttyname(slave)
        self._slave = slave  # kept open: a pty whose slave has no opener drops what is written
        self.received = b""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 1024)
            except OSError:
                return
            if not chunk:
                return
            self.received += chunk

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


def _protocol(folder: Path, juice: JuiceLine, events_port: int) -> Path:
    text = (ROOT / "protocols" / "monkey.toml").read_text()
    for written, shrunk in SHRUNK + [
            ('kind = "serial"\nport = "/dev/ttyUSB0"\nmode = "dtr"',
             f'kind = "serial"\nport = "{juice.port}"\nmode = "command"\ncommand = "R{{pulse_ms:.0f}}\\n"'),
            ("events_port = 5560", f"events_port = {events_port}")]:
        assert written in text, f"protocols/monkey.toml no longer says {written!r}: update this test"
        text = text.replace(written, shrunk)
    path = folder / "monkey.toml"
    path.write_text(text)
    return path


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_calibrate_then_a_session_on_the_rig(tmp_path, capsys):
    """`rig sim-rig` plays the whole acquisition PC: the stream, the eyes on ADC channels, the GUI's HTTP API and
    NetworkEvents (what they were asked goes to its truth file)."""
    juice = JuiceLine()
    protocol = _protocol(tmp_path, juice, 1)  # the events port is NetworkEvents': known once sim-rig is up
    truth = tmp_path / "truth.jsonl"
    process, ports = start_sim_rig(tmp_path, "--protocol", str(protocol), "--gaze-adc", "ADC1,ADC2",
                                   "--gaze-noise", "0.002", "--gaze-monkey", json.dumps(MONKEY),
                                   "--gui-port", "0", "--events-port", "0", "--recordings", str(tmp_path / "oe"),
                                   "--truth-file", str(truth))
    protocol.write_text(protocol.read_text().replace("events_port = 1", f"events_port = {ports['events_port']}"))
    try:
        rig = ["--neuron", ports["neuron"], "--sim-link", ports["side"], "--display", "psychopy"]
        assert main(["calibrate", str(protocol), *rig, "--points", "9", "--refits", "4",
                     "--out", str(tmp_path / "monkey-calibration.toml")]) == 0
        calibration_rewards = juice.received.decode().split()
        out = tmp_path / "monkey-1.h5"
        status = main(["run", str(protocol), *rig, "--openephys", ports["gui"], "--out", str(out), "--quiet"])
    finally:
        stop_sim_rig(process)
        juice.close()
    assert status == 0, capsys.readouterr().err
    session = read_session(out)
    tables = behavior_tables(session)
    trials = tables.trials
    completed = trials["outcome"] == TrialOutcome.COMPLETED
    assert completed.sum() >= 2
    # The eyes came from the stream's ADC channels, through the calibration just written.
    gaze = session.provenance["display"]["behavior"]["gaze"]
    assert gaze["kind"] == "recording" and gaze["calibration"]["path"] == str(tmp_path / "monkey-calibration.toml")
    assert np.isfinite(tables.gaze["x"][tables.gaze["valid"]]).all() and tables.gaze["valid"].mean() > 0.8
    # Every stimulus's response came from the recording, paired with its photodiode edge.
    assert all(block.valid.all() for block in session.blocks)
    # Juice: a reward for each fixated calibration target, then one command per pulse the trials earned.
    commands = juice.received.decode().split()
    assert len(calibration_rewards) >= 9 and set(calibration_rewards) == {"R20"}
    assert commands[len(calibration_rewards):] == ["R20"] * int(trials["reward_pulses"].sum())
    # The GUI recorded under the session's name, got a message per block, and every trial's markers, in order.
    gui = next(r for r in map(json.loads, truth.read_text().splitlines()) if r["type"] == "gui")
    modes = [mode for _, mode in gui["transitions"]]
    assert modes[:2] == ["ACQUIRE", "RECORD"] and modes[-1] != "RECORD"
    assert gui["base_text"] == "monkey-1"
    assert [text.split(" (")[0] for _, text, _ in gui["messages"]] == ["rig block 1 of 2", "rig block 2 of 2"]
    ttl = gui["ttl"]
    assert [t for t, *_ in ttl] == sorted(t for t, *_ in ttl)
    assert sum(1 for _, line, state, recorded in ttl if line == 2 and state == 1 and recorded) == len(trials["number"])
    onsets = [i for i, (_, line, state, _) in enumerate(ttl) if line == 3 and state == 1]
    assert len(onsets) == int(trials["shown"].sum()) and onsets[0] > next(
        i for i, (_, line, state, _) in enumerate(ttl) if line == 2 and state == 1)
    assert sum(1 for _, line, state, _ in ttl if line == 4 and state == 1) == int((trials["reward_pulses"] > 0).sum())


def _pointer_to_screen_centre() -> None:
    """Where the (centred) window's fixation point is: MouseGaze reads the pointer as the eye."""
    from Xlib import X, display
    from Xlib.ext import xtest

    screen = display.Display()
    root = screen.screen()
    xtest.fake_input(screen, X.MotionNotify, x=root.width_in_pixels // 2, y=root.height_in_pixels // 2)
    screen.sync()
    screen.close()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_same_session_with_mousegaze(tmp_path, capsys):
    """The desk test: PsychoPy's ioHub MouseGaze (the mouse as the eye) in place of the analog eye signals."""
    juice = JuiceLine()
    state = GuiState(tmp_path)
    with GuiDouble(state) as gui, NetworkEventsDouble(state) as events:
        protocol = _protocol(tmp_path, juice, events.port)
        process, ports = start_sim_rig(tmp_path, "--protocol", str(protocol))
        try:
            _pointer_to_screen_centre()
            out = tmp_path / "desk.h5"
            status = main(["run", str(protocol), "--neuron", ports["neuron"], "--sim-link", ports["side"],
                           "--display", "psychopy", "--gaze", "iohub", "--openephys", gui.url, "--out", str(out),
                           "--quiet"])
        finally:
            stop_sim_rig(process)
            juice.close()
    assert status == 0, capsys.readouterr().err
    session = read_session(out)
    tables = behavior_tables(session)
    gaze = session.provenance["display"]["behavior"]["gaze"]
    assert gaze["kind"] == "iohub" and gaze["options"]["device"] == "mouse"
    assert (tables.trials["outcome"] == TrialOutcome.COMPLETED).all()  # the pointer never left the point
    valid = tables.gaze["valid"]
    assert valid.all() and np.abs(tables.gaze["x"]).max() < 1.0 and np.abs(tables.gaze["y"]).max() < 1.0
    assert all(block.valid.all() for block in session.blocks)
    assert len(state.messages) == 2 and len([c for c in events.ttl if c.line == 2 and c.state == 1]) == \
        len(tables.trials["number"])
