"""Warnings when the onset spacing puts another stimulus's response in a stimulus's scoring windows."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import h5py
import pytest
import torch

from helpers.protocols import tiny_protocol
from helpers.simrig import THREAD_RIG_RECORDING, ThreadRig, thread_rig_session
from protocols.spec import DisplaySpec, RecordingSpec, load_protocol
from rig.analysis.report import build_report
from rig.display.headless import HeadlessDisplay
from rig.loop.assemble import assemble, resolve_neuron
from rig.loop.controller import Controller
from rig.recording.choice import DEFAULT_PACE_S
from rig.recording.timing_overlap import UnknownSpacingError, onset_spacing, spacing_of_frames, timing_warnings, window_overlaps
from rig.session import SessionWriter, read_session

ROOT = Path(__file__).resolve().parents[1]


def test_150_ms_apart_puts_the_early_baseline_in_the_previous_response():
    spacing = spacing_of_frames(DisplaySpec(on_frames=3, off_frames=6, refresh_hz=60.0))
    assert spacing.ms == pytest.approx(150.0)
    [warning] = window_overlaps(spacing.ms, RecordingSpec(), spacing.how)
    assert warning == (
        "onsets 150 ms apart ([display] on_frames 3 + off_frames 6 at 60.0 Hz): each stimulus's early baseline "
        "window (0-40 ms, [recording] baseline_window_ms) overlaps the previous stimulus's response window "
        "(50-200 ms, [recording] response_window_ms), 150-190 ms after that onset; the baseline will hold the "
        "previous response")


def test_100_ms_apart_overlaps_both_ways_and_250_not_at_all():
    response, baseline = window_overlaps(100.0, RecordingSpec())
    assert "response window (50-200 ms, [recording] response_window_ms) reaches into the next" in response
    assert "150-200 ms after its onset (50-100 ms after the next onset)" in response
    assert "early baseline window (0-40 ms" in baseline and "100-140 ms after that onset" in baseline
    assert window_overlaps(250.0, RecordingSpec()) == []
    # The edges: a window ending where the next begins holds nothing of it.
    assert window_overlaps(200.0, RecordingSpec()) == []
    assert len(window_overlaps(199.0, RecordingSpec())) == 1


def test_pre_baseline_none_baseline_and_a_custom_window():
    [pre] = window_overlaps(150.0, RecordingSpec(baseline="pre"))
    assert "pre-onset baseline window (-50 to 0 ms, [recording] baseline_window_ms)" in pre
    assert "100-150 ms after that onset" in pre
    assert window_overlaps(250.0, RecordingSpec(baseline="pre")) == []
    # No baseline, no baseline overlap; the response window's own overlap remains.
    assert window_overlaps(150.0, RecordingSpec(baseline="none")) == []
    [only] = window_overlaps(100.0, RecordingSpec(baseline="none"))
    assert "reaches into the next" in only
    # A short window and a late baseline: fine at 100 ms, but at 60 ms the baseline sits in the previous window.
    short = RecordingSpec(response_window_ms=(30.0, 90.0), baseline_window_ms=(5.0, 25.0))
    assert window_overlaps(100.0, short) == []
    [late] = window_overlaps(60.0, short)
    assert "(30-90 ms, [recording] response_window_ms), 65-85 ms after that onset" in late
    # Onsets so close that the baseline misses the previous window and lands in an earlier one.
    [*_, far] = window_overlaps(5.0, RecordingSpec())
    assert "of the stimulus 3 before it, 50-55 ms after that onset" in far
    with pytest.raises(ValueError, match="onset spacing must be > 0 ms"):
        window_overlaps(0.0, RecordingSpec())


def test_monkey_protocol_as_written_does_not_warn(tmp_path):
    spec = load_protocol(ROOT / "protocols" / "monkey.toml")
    spacing = onset_spacing(spec, HeadlessDisplay(DEFAULT_PACE_S), None)
    assert spacing.ms == pytest.approx(250.0)
    assert "[display] on_frames 6 + off_frames 9 at 60.0 Hz, 4 stimuli a trial" in spacing.how
    assert timing_warnings(spec, HeadlessDisplay(DEFAULT_PACE_S), None, spec.recording) == []
    # Trials of one stimulus each: every onset waits out the last window, the interval and the hold.
    single = tmp_path / "single.toml"
    single.write_text(spec.text.replace("stimuli_per_trial = 4", "stimuli_per_trial = 1"))
    assert onset_spacing(load_protocol(single), HeadlessDisplay(DEFAULT_PACE_S), None) is None


def test_headless_pace_names_its_source(tmp_path):
    spec = load_protocol(_protocol(tmp_path))
    paced = onset_spacing(spec, HeadlessDisplay((0.1, 0.05)), (0.1, 0.05))
    assert (paced.ms, paced.how) == (pytest.approx(150.0), "--pace-ms 100,50: 100 ms on + 50 ms off")
    assert "the headless display's default pace 100,150" in onset_spacing(spec, HeadlessDisplay(DEFAULT_PACE_S),
                                                                          None).how
    with pytest.raises(ValueError, match="unpaced headless display"):
        onset_spacing(spec, HeadlessDisplay(), None)
    # A display kind a lab registered: the session is not stopped for a warning, which says what went unchecked.
    other = type("LabDisplay", (), {"kind": "lab"})()
    with pytest.raises(UnknownSpacingError, match="kind 'lab'"):
        onset_spacing(spec, other, None)
    assert timing_warnings(spec, other, None, spec.recording) == [
        "the scoring windows were not checked against the onset spacing: cannot tell how far apart the "
        "LabDisplay's onsets are (kind 'lab'); only headless and psychopy displays are known"]


def _protocol(folder: Path) -> Path:
    path = folder / "p.toml"
    path.write_text(tiny_protocol(generations=1, popsize=2, references=0, max_frequency=2, image_size=16)
                    + THREAD_RIG_RECORDING.format(timeout_s=1.0))
    return path


@pytest.fixture(scope="module")
def rig():
    sim = ThreadRig()
    yield sim.rig
    sim.close()


@pytest.mark.parametrize("pace, warned", [((0.03, 0.07), True), ((0.1, 0.15), False)])
def test_a_recording_session_warns_once_at_start_and_records_it(rig, tmp_path, capsys, pace, warned):
    spec = load_protocol(_protocol(tmp_path))
    parts = assemble(spec, resolve_neuron(spec, [f"zmq://127.0.0.1:{rig.data_port}"], None),
                     device=torch.device("cpu"), pace=pace)
    try:
        out = tmp_path / "s.h5"
        SessionWriter(out, protocol_text=spec.text, protocol_sha256=spec.sha256, protocol_path=str(spec.path),
                      seed=spec.seed, provenance=parts.provenance, reference_ids=[]).finish()
    finally:
        parts.source.close()
    with h5py.File(out, "r") as f:
        stored = json.loads(f.attrs["provenance"])["recording"]["timing_warnings"]
    err = capsys.readouterr().err
    if warned:  # 100 ms apart: both the response and the baseline windows overlap
        assert len(stored) == 2 and all(w.startswith("onsets 100 ms apart (--pace-ms 30,70") for w in stored)
        assert [line for line in err.splitlines() if "warning" in line] == \
            [f"rig run: warning: {w}" for w in stored]
    else:
        assert stored == [] and "warning" not in err


def test_the_report_of_a_recorded_session_lists_its_timing_warnings(rig, tmp_path):
    def write_protocol(generations: int, popsize: int, references: int) -> Path:
        path = tmp_path / "p.toml"
        path.write_text(tiny_protocol(generations=generations, popsize=popsize, references=references,
                                      max_frequency=2, image_size=16))
        return path

    # thread_rig_session paces onsets 60 ms apart: inside the default 50-200 ms response window.
    parts, writer, out = thread_rig_session(write_protocol, tmp_path, rig, generations=1, popsize=3)
    try:
        Controller(parts.protocol, parts.display, parts.source, writer).run()
    finally:
        parts.source.close()
    stored = read_session(out).provenance["recording"]["timing_warnings"]
    assert stored and all(w.startswith("onsets 60 ms apart") for w in stored)
    page = build_report([out], tmp_path / "report", nearest=False).read_text()
    section = page[page.index("<h2>Recording timing warnings</h2>"):]
    assert [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", section)] == \
        [f"{out.name}: {w}" for w in stored]
