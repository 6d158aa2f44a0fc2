"""End to end: ``rig run`` against ``rig sim-rig`` in a separate process, over the real wire format.

The same small protocol file runs in silico (tests/test_run.py); here only
the neuron changes, to ``zmq://127.0.0.1:PORT``.
"""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from rig.cli import main
from rig.session import read_session
from helpers.simrig import UNIT, run_in_process, start_sim_rig, stop_sim_rig

PSYCHOPY_DISPLAY = """
[display]
pace = true
fullscreen = false
resolution = [320, 240]
width_cm = 20.0
distance_cm = 57.0
size_deg = 4.0
on_frames = 3
off_frames = 3
"""


def _run_against_sim_rig(write_protocol, tmp_path, *extra: str, generations: int = 6, popsize: int = 10,
                         protocol_extra: str = ""):
    protocol = write_protocol(generations=generations, popsize=popsize, references=2, units=(UNIT,))
    protocol.write_text(protocol.read_text() + protocol_extra)
    process, ports = start_sim_rig(tmp_path, "--protocol", str(protocol), "--gain", "1000", "--offset", "80")
    out = tmp_path / "e2e.h5"
    try:
        status = main(["run", str(protocol), "--out", str(out), "--neuron", f"zmq://127.0.0.1:{ports['data_port']}",
                       "--sim-link", ports["side"], "--quiet", *extra])
    finally:
        rig_status = stop_sim_rig(process)
    log = (tmp_path / "sim-rig.log").read_text()
    assert status == 0 and rig_status == 0, log
    return out, log


def _assert_score_rises(out, generations: int, stimuli: int | None) -> None:
    session = read_session(out)
    assert session.attrs["status"] == "complete"
    assert len(session.blocks) == generations
    scores = [np.asarray(b.thread_scores(0, 0), dtype=np.float64) for b in session.blocks]
    first, last = scores[0], np.concatenate(scores[-3:])
    # Spikes counted off the wire, not activations: the last three generations' responses lie well above the
    # first's, beyond the noise of both (Welch's t > 3: a loop that did not evolve passes with p ~ 0.001). A
    # bound in first-generation SDs alone failed now and then: Poisson noise makes that SD itself vary 2-fold.
    t = (last.mean() - first.mean()) / np.sqrt(first.var(ddof=1) / first.size + last.var(ddof=1) / last.size)
    assert t > 3, ([round(float(s.mean()), 1) for s in scores], t)
    with h5py.File(out, "r") as f:
        block = f["blocks/000000"]
        import json
        diag = json.loads(block["showings/00"].attrs["recording"])
        # Every onset the display showed properly found its TTL on the recording clock.
        # (a stimulus the display marked for a dropped frame was still on screen, so it has a TTL too)
        assert diag["paired"] == (stimuli if stimuli is not None else diag["onsets"])
        assert block["showings/00/raw_frames"].shape[0] > 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_rig_run_against_sim_rig_process_headless(write_protocol, tmp_path, capsys):
    generations, popsize = 8, 10
    # Onsets 210 ms apart: a stimulus's 50-200 ms window holds no other stimulus's response, and its early
    # baseline (0-40 ms) none of the response before it (50-200 ms). At 150 ms apart the baseline held the
    # previous stimulus's response, so the better the population, the more was subtracted from every score.
    out, log = _run_against_sim_rig(write_protocol, tmp_path, "--pace-ms", "60,150", generations=generations,
                                    popsize=popsize)
    assert "done: 8 blocks" in capsys.readouterr().out
    _assert_score_rises(out, generations, popsize + 2)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a screen: run under xvfb-run (make test does)")
def test_evolution_with_psychopy_display_against_sim_rig_process(write_protocol, tmp_path):
    """A real PsychoPy window (Xvfb) in front of sim-rig. On a loaded machine Xvfb drops frames; those
    presentations are invalid and shown again, so this builds the controller with room for more repeats."""
    generations, popsize = 5, 8
    protocol = write_protocol(generations=generations, popsize=popsize, references=2, units=(UNIT,))
    protocol.write_text(protocol.read_text() + PSYCHOPY_DISPLAY)
    process, ports = start_sim_rig(tmp_path, "--protocol", str(protocol), "--gain", "1000", "--offset", "80")
    out = tmp_path / "e2e.h5"
    try:
        run_in_process(protocol, ports, out)
    finally:
        assert stop_sim_rig(process) == 0
    _assert_score_rises(out, generations, None)
    assert read_session(out).provenance["display"]["class"] == "PsychoPyDisplay"


SCREENING_AT_THE_RIG = """
[protocol]
kind = "screening"
name = "screening-at-the-rig"
seed = 3

[screening]
source = "foolbox-imagenet"
count = 5
block_size = 5
repeats = 2
image_size = 64

[neuron]
units = ["{unit}"]
weights = "random"
"""


@pytest.mark.timeout(120)
def test_a_screening_runs_against_a_recording_like_an_evolution(tmp_path, capsys):
    """The same screening file that runs in silico runs against a recorded neuron (sim-rig over ZeroMQ):
    every score is the spike count sim-rig's truth file has after the stimulus's own TTL edge."""
    from helpers.fidelity import RECORDING, check_against_truth

    protocol = tmp_path / "screening.toml"
    protocol.write_text(SCREENING_AT_THE_RIG.format(unit=UNIT) + RECORDING.format(extra=""))
    truth = tmp_path / "truth.jsonl"
    process, ports = start_sim_rig(tmp_path, "--protocol", str(protocol), "--gain", "1000", "--offset", "80",
                                   "--truth-file", str(truth))
    out = tmp_path / "screening.h5"
    try:
        status = main(["run", str(protocol), "--out", str(out), "--neuron", f"zmq://127.0.0.1:{ports['data_port']}",
                       "--sim-link", ports["side"], "--pace-ms", "60,90", "--quiet"])
    finally:
        assert stop_sim_rig(process) == 0
    assert status == 0, capsys.readouterr().err
    session = read_session(out)
    assert session.attrs["status"] == "complete" and len(session.blocks) == 2
    assert session.provenance["recording"]["recording"]["units"] == ["Electrode 1:1"]
    records = [json.loads(line) for line in truth.read_text().splitlines()]
    assert check_against_truth(out, records) >= 8  # of 10 showings; a late TTL may cost one or two
