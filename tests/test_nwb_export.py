"""``rig export-nwb``: sessions made by really running the controller, written to NWB and read back with pynwb.

Two sessions are recorded: an in-silico one (``rig run``, two threads, two
channels) and one from the real ``SimRig`` publishing the Open Ephys wire
format on loopback, with a message gap that makes the controller show lost
stimuli again. Each NWB file is read back with ``pynwb.NWBHDF5IO`` and checked
against ``read_session``, the raw frames and ``rescore_session``.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pynwb  # not importorskip: CI installs the nwb extra, and a silent skip would hide a broken export
import pytest
import torch

from protocols.generators import build_generator
from rig.cli import EXIT_USAGE, main
from rig.export.nwb import NWB_LAYOUT, NwbUnavailableError, export_nwb
from rig.recording.openephys.wire import SpikeMessage, WireError, parse_message
from rig.recording.replay_reader import showing_messages
from rig.recording.rescore import rescore_session
from rig.recording.scoring import Windows, ms_to_samples
from rig.recording.sidechannel import FaultRequest
from rig.recording.source import UnitSelector
from rig.session import read_session
from rig.session.clock import SessionClock
from helpers.protocols import run_tiny_session
from helpers.simrig import record_with_drop

CHANNELS = ("test_cnn:features.7:unit=5", "test_cnn:features.7:unit=9")


@pytest.fixture(scope="module")
def in_silico(tmp_path_factory) -> Path:
    return run_tiny_session(tmp_path_factory.mktemp("nwb-silico"), name="exported", generations=3, seed=5,
                            threads=2, references=2, units=CHANNELS)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory) -> Path:
    """Block 0's 4th onset falls in a message gap, so its lost stimuli are shown again."""
    return record_with_drop(tmp_path_factory.mktemp("nwb-stream"), FaultRequest("drop", 3))


def _export(session: Path, out: Path, *extra: str) -> None:
    assert main(["export-nwb", str(session), str(out), *extra]) == 0
    assert pynwb.validate(path=str(out)) == []  # the NWB schema, checked by pynwb itself
    assert not list(out.parent.glob(".*.writing.nwb"))  # no half-written file left behind


def _check_presentations(nwb, session) -> None:
    """Every showing of every stimulus is one row with the stored times, validity and scores."""
    rows = nwb.intervals["presentations"]
    block, showing, position = (np.asarray(rows[c].data[:]) for c in ("block", "showing", "position"))
    start, stop = np.asarray(rows["start_time"].data[:]), np.asarray(rows["stop_time"].data[:])
    scores, valid = np.asarray(rows["scores"].data[:]), np.asarray(rows["valid"].data[:])
    final = np.asarray(rows["final"].data[:])
    stimulus_ids = list(rows["stimulus_id"].data[:])
    assert len(block) == sum(len(s["positions"]) for b in session.blocks for s in b.showings)
    for b in session.blocks:
        for number, stored in enumerate(b.showings):
            here = np.flatnonzero((block == b.index) & (showing == number))
            np.testing.assert_array_equal(position[here], stored["positions"])
            np.testing.assert_array_equal(start[here], since_start(session, stored["onset_times"], b.index))
            # every showing's offset, not only the last one's
            np.testing.assert_array_equal(stop[here], since_start(session, stored["offset_times"], b.index))
            assert np.all(stop[here] >= start[here])
            np.testing.assert_array_equal(valid[here], stored["valid"])
            np.testing.assert_array_equal(scores[here], stored["scores"])  # NaN where lost, never zero
            np.testing.assert_array_equal(np.asarray(rows["dropped_frames"].data[:])[here], stored["dropped_frames"])
            assert [stimulus_ids[i] for i in here] == [b.stimulus_ids[p] for p in stored["positions"]]
        # The final showing of each stimulus carries the block's (merged) presentation and response.
        mine = np.flatnonzero((block == b.index) & final)
        order = np.argsort(position[mine])
        np.testing.assert_array_equal(position[mine][order], np.arange(len(b.stimulus_ids)))
        np.testing.assert_array_equal(start[mine][order], since_start(session, b.onset_times, b.index))
        np.testing.assert_array_equal(stop[mine][order], since_start(session, b.offset_times, b.index))
        np.testing.assert_array_equal(scores[mine][order], b.scores)
    # NWB times count from session_start_time: every onset falls between the session's start and its end.
    ended = dt.datetime.strptime(session.attrs["ended_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.timezone.utc).timestamp()
    duration = ended + 1 - SessionClock.from_session(session).start_unix_s
    assert 0 <= np.nanmin(start) and np.nanmax(stop) <= duration


def since_start(session, display_times, block: int) -> np.ndarray:
    """The display times as seconds since the session's start, from its recorded clock anchors."""
    return SessionClock.from_session(session).since_start(display_times, block)


def _check_codes(nwb, session) -> None:
    stimuli = nwb.stimulus["stimuli"]
    codes = np.asarray(stimuli["code"].data[:])
    threads, index = np.asarray(stimuli["thread"].data[:]), np.asarray(stimuli["code_index"].data[:])
    block = np.asarray(stimuli["block"].data[:])
    for b in session.blocks:
        mine = np.flatnonzero(block == b.index)
        assert list(stimuli["stimulus_id"].data[:][mine[0]:mine[-1] + 1]) == b.stimulus_ids
        for row in mine:
            if threads[row] >= 0:
                np.testing.assert_array_equal(codes[row], b.codes[threads[row], index[row]])
            else:
                assert np.isnan(codes[row]).all()
                assert stimuli["reference_id"].data[row] in session.reference_ids
    # Each presentation points at its stimulus's row.
    rows = nwb.intervals["presentations"]
    pointed = np.asarray(rows["stimulus"].data[:])
    assert [stimuli["stimulus_id"].data[i] for i in pointed] == list(rows["stimulus_id"].data[:])


@pytest.mark.timeout(60)
def test_in_silico_session_exports_every_showing_code_and_score(in_silico, tmp_path):
    before = in_silico.read_bytes()
    out = tmp_path / "s.nwb"
    _export(in_silico, out)
    assert in_silico.read_bytes() == before  # never written into
    session = read_session(in_silico)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.identifier == nwb.session_id == session.attrs["session_id"]
        assert nwb.session_start_time.tzinfo is not None
        assert nwb.session_start_time.strftime("%Y-%m-%dT%H:%M:%SZ") == session.attrs["created_utc"]
        anchor = json.loads(session.attrs["clock_anchor"])
        assert nwb.session_start_time.timestamp() == pytest.approx(anchor["unix_s"], abs=1e-6)
        assert nwb.session_description.startswith("exported:")
        assert nwb.protocol == session.attrs["protocol_toml"]
        notes = json.loads(nwb.notes)
        assert notes["provenance"] == session.provenance and notes["attrs"]["seed"] == 5
        _check_presentations(nwb, session)
        _check_codes(nwb, session)
        assert nwb.units is None and "no spikes were recorded" in nwb.data_collection  # no fake spikes
        assert "s since session_start_time" in nwb.intervals["presentations"].description
        assert "time.monotonic" in nwb.stimulus_notes  # the clock the display measured them on
        assert list(nwb.stimulus["stimuli"]["reference_id"].data[:]).count(session.reference_ids[0]) == 3
        # In silico the subject is the simulated model, described by its units.
        assert nwb.subject.subject_id == "in-silico test_cnn"
        assert all(unit in nwb.subject.description for unit in CHANNELS)


def test_subject_and_lab_metadata_given_on_the_command_line(streamed, tmp_path, capsys):
    # A recording has no subject unless told: the export says so rather than inventing one.
    bare = tmp_path / "bare.nwb"
    capsys.readouterr()
    _export(streamed, bare)
    assert "no subject: pass --subject-id and --species" in capsys.readouterr().out
    with pynwb.NWBHDF5IO(str(bare), "r") as io:
        assert io.read().subject is None

    out = tmp_path / "who.nwb"
    _export(streamed, out, "--subject-id", "Monkey A", "--species", "Macaca mulatta", "--sex", "M",
            "--age", "P6Y", "--experimenter", "Doe, Jane", "--experimenter", "Roe, Rick", "--lab", "Vision",
            "--institution", "Somewhere University")
    assert "no subject" not in capsys.readouterr().out
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        subject = nwb.subject
        assert (subject.subject_id, subject.species, subject.sex, subject.age) == (
            "Monkey A", "Macaca mulatta", "M", "P6Y")
        assert list(nwb.experimenter) == ["Doe, Jane", "Roe, Rick"]
        assert (nwb.lab, nwb.institution) == ("Vision", "Somewhere University")


@pytest.mark.parametrize("option, value, message", [
    ("--age", "6 years", "ISO 8601 duration"),
    ("--species", "macaque", "Latin binomial"),
])
def test_malformed_subject_fields_are_refused_before_writing(in_silico, tmp_path, capsys, option, value, message):
    out = tmp_path / "bad.nwb"
    capsys.readouterr()
    assert main(["export-nwb", str(in_silico), str(out), option, value]) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.timeout(60)
def test_stream_session_exports_every_decoded_spike_and_the_scoring_counts(streamed, tmp_path):
    before = streamed.read_bytes()
    out = tmp_path / "stream.nwb"
    _export(streamed, out)
    assert streamed.read_bytes() == before
    session = read_session(streamed)
    assert len(session.blocks[0].showings) >= 2  # the gap made the controller show lost stimuli again

    # Spikes straight from the stored frames, parsed message by message (no reader, no counters).
    decoded: Counter = Counter()
    for b in session.blocks:
        for number, stored in enumerate(b.showings):
            for frames in showing_messages(stored, f"block {b.index} showing {number}")[0]:
                try:
                    message = parse_message(frames)
                except WireError:
                    continue
                if isinstance(message, SpikeMessage):
                    decoded[(message.electrode, message.sorted_id)] += 1
    assert sum(decoded.values()) > 0

    plain = rescore_session(streamed, Windows((50.0, 200.0), "none"))  # rates of whole counts in 50-200 ms
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        _check_presentations(nwb, session)
        _check_codes(nwb, session)
        units = nwb.units.to_dataframe()
        assert {(r.electrode_name, r.sorted_id): len(r.spike_samples) for r in units.itertuples()} == dict(decoded)
        assert sum(len(t) for t in units.spike_times) == sum(decoded.values())  # every spike has a display time
        rows = nwb.intervals["presentations"]
        reasons = list(rows["invalid_reason"].data[:])
        assert "gap" in reasons
        ttl = np.asarray(rows["ttl_sample"].data[:])
        block, showing = np.asarray(rows["block"].data[:]), np.asarray(rows["showing"].data[:])
        start, valid = np.asarray(rows["start_time"].data[:]), np.asarray(rows["valid"].data[:])
        assert (ttl[valid] >= 0).all()

        # Per channel, the spikes of the units its selector takes, counted in each valid showing's window
        # from the exported samples and TTLs, are the counts the recording path scores.
        rate = 30000.0
        lo, hi = ms_to_samples(50.0, rate), ms_to_samples(200.0, rate)
        for c, selector in enumerate(session.blocks[0].channel_names):
            chosen = UnitSelector.parse(selector)
            taken = [r for r in units.itertuples() if selector in r.channels.split(",")]
            assert taken and len(taken) < len(units)  # "Electrode 1:1" takes the sorted unit, not unsorted spikes
            assert all(chosen.electrode in (None, r.electrode_name) and chosen.unit in (None, r.sorted_id)
                       for r in taken)
            samples = np.sort(np.concatenate([np.asarray(r.spike_samples) for r in taken]))
            for s in plain.showings:
                here = np.flatnonzero((block == s.block) & (showing == s.showing))
                np.testing.assert_array_equal(valid[here], s.valid)
                anchors = ttl[here][s.valid]
                counts = np.searchsorted(samples, anchors + hi) - np.searchsorted(samples, anchors + lo)
                np.testing.assert_allclose(counts, s.rescored[s.valid, c] * 0.150, atol=1e-9)

        # spike_times are the samples mapped linearly onto the display clock, and the map puts each paired
        # onset TTL within a few ms of the display's onset time.
        times = np.concatenate([np.sort(np.asarray(t)) for t in units.spike_times])
        samples = np.concatenate([np.sort(np.asarray(t, dtype=float)) for t in units.spike_samples])
        slope, intercept = np.polyfit(samples, times, 1)
        assert slope == pytest.approx(1 / rate, rel=0.01)
        assert np.max(np.abs(times - (slope * samples + intercept))) < 1e-6
        paired = ttl >= 0
        assert np.max(np.abs(slope * ttl[paired] + intercept - start[paired])) < 0.003

        # The documented layout names every column the file has.
        for table in (rows, nwb.stimulus["stimuli"], nwb.units):
            for column in table.colnames:
                assert f"`{column}`" in NWB_LAYOUT, column
        # ... and the schema document shows that same table.
        assert NWB_LAYOUT in (Path(__file__).resolve().parents[1] / "docs" / "session-schema.md").read_text()


@pytest.mark.timeout(60)
def test_images_are_the_generators_renderings_indexed_by_onset(in_silico, tmp_path):
    out = tmp_path / "images.nwb"
    _export(in_silico, out, "--images")
    session = read_session(in_silico)
    generator = build_generator(**session.provenance["generator"]).eval()
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        stimuli = nwb.stimulus["stimuli"]
        library = nwb.stimulus_template["stimulus_images"]
        assert len(library.images) == len(stimuli)
        row = int(np.flatnonzero(np.asarray(stimuli["thread"].data[:]) == 1)[-1])
        with torch.inference_mode():
            expected = generator(torch.from_numpy(np.asarray(stimuli["code"].data[row], dtype=np.float32)[None]))
        expected = (expected[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(library.order_of_images[row].data[:], expected)
        references = np.flatnonzero(np.asarray(stimuli["thread"].data[:]) < 0)
        assert np.ptp(library.order_of_images[int(references[0])].data[:]) > 0  # a loaded photo, not black
        shown = nwb.stimulus["stimulus_shown"]
        rows = nwb.intervals["presentations"]
        np.testing.assert_array_equal(shown.timestamps[:], np.sort(rows["start_time"].data[:]))
        assert sorted(shown.data[:].tolist()) == sorted(np.asarray(rows["stimulus"].data[:]).tolist())


@pytest.mark.timeout(60)
def test_refuses_to_overwrite_and_never_writes_the_session(in_silico, tmp_path, capsys):
    out = tmp_path / "taken.nwb"
    out.write_bytes(b"someone's file")
    assert main(["export-nwb", str(in_silico), str(out)]) == EXIT_USAGE
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"someone's file"
    before = in_silico.read_bytes()
    assert main(["export-nwb", str(in_silico), str(in_silico), "--overwrite"]) == EXIT_USAGE
    assert "session file" in capsys.readouterr().err and in_silico.read_bytes() == before
    _export(in_silico, out, "--overwrite")
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        assert len(io.read().intervals["presentations"]) > 0


@pytest.mark.timeout(60)
def test_missing_and_bad_session_files_exit_2_naming_the_file(tmp_path, capsys):
    missing, garbage = tmp_path / "nope.h5", tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    for bad in (missing, garbage):
        out = tmp_path / f"{bad.stem}.nwb"
        assert main(["export-nwb", str(bad), str(out)]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert "rig export-nwb: error:" in err and str(bad) in err
        assert not out.exists()


@pytest.mark.timeout(60)
def test_a_damaged_showing_is_named_not_a_traceback(in_silico, tmp_path, capsys):
    damaged = tmp_path / "damaged.h5"
    shutil.copy(in_silico, damaged)
    with h5py.File(damaged, "r+") as f:  # showings are not covered by the block digest, so this still reads
        showing = f["blocks/000001/showings/00"]
        onsets = showing["onset_times"][()]
        del showing["onset_times"]
        showing["onset_times"] = onsets[:-2]
    out = tmp_path / "damaged.nwb"
    assert main(["export-nwb", str(damaged), str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{damaged}: damaged session file" in err and "/blocks/000001/showings/00" in err and "onset_times" in err
    assert not out.exists()


def test_without_pynwb_the_error_says_how_to_install_it(in_silico, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pynwb", None)  # what a missing package looks like to import
    with pytest.raises(NwbUnavailableError, match=r"pip install 'rig-controller\[nwb\]'"):
        export_nwb(in_silico, tmp_path / "x.nwb")
    assert main(["export-nwb", str(in_silico), str(tmp_path / "x.nwb")]) == EXIT_USAGE
    assert "rig-controller[nwb]" in capsys.readouterr().err and not (tmp_path / "x.nwb").exists()

