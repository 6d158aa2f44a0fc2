"""Lab Streaming Layer as a second recording transport: the Reader contract, a session against
``rig sim-rig --transport lsl`` checked against its truth, and ``rig replay --rescore`` on it."""
from __future__ import annotations

import dataclasses
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pylsl
import pytest

from rig.cli import main
from rig.recording.lsl.outlets import LslOutlets
from rig.recording.lsl.reader import ROLES, LslReader
from rig.recording.lsl.wire import LslParser, format_clock, format_events, regular_runs
from rig.recording.records import Discontinuity
from rig.recording.rescore import rescore_session
from helpers.reader_conformance import EXPECTED, ReaderContract
from helpers.fidelity import RECORDING, check_against_truth, showings
from helpers.simrig import start_sim_rig, stop_sim_rig
from helpers.protocols import tiny_protocol

#: LSL treats a timestamp of 0.0 as "now": the contract's samples are sent BASE samples later and read back.
BASE = 1000


def unique_name() -> str:
    """LSL names are visible machine-wide: never share one with another test run."""
    return f"rigtest-{uuid.uuid4().hex[:10]}"


def test_local_clock_is_time_monotonic():
    """rig relies on LSL's local_clock() being CLOCK_MONOTONIC (as on Linux), the clock onsets are stamped on."""
    before = time.monotonic()
    lsl = pylsl.local_clock()
    after = time.monotonic()
    assert before <= lsl <= after


def _shifted(record):
    fields = {f: getattr(record, f) - BASE for f in ("sample", "from_sample", "to_sample") if hasattr(record, f)}
    return dataclasses.replace(record, **fields)


class TestLslReaderContract(ReaderContract):
    """The contract's messages as LSL samples at 1000 Hz: the gap counts 10 lost clock samples, not 1 message."""

    expected = [r if not isinstance(r, Discontinuity) or r.kind != "gap" else dataclasses.replace(r, lost_messages=10)
                for r in EXPECTED]

    def open_reader(self, tmp_path):
        self.name = unique_name()
        self.outlets = LslOutlets(self.name, 1000.0)
        return LslReader(self.name, rate=1000.0, stream="s")

    def read_all(self, reader) -> list:
        out, t = self.outlets, lambda sample: (sample + BASE) / 1000.0
        deadline = time.monotonic() + 15
        while len(reader.resolved) < len(ROLES) or not reader.parser.corrections:
            assert time.monotonic() < deadline, f"streams not resolved: {reader.resolved}"
            reader.wait(0.05)
        out.push_clock(np.zeros(10), t(9))  # warm-up: samples 0..9, held a moment for events sent before them
        records = []
        while not any(getattr(r, "sample", None) == BASE + 10 for r in records):
            assert time.monotonic() < deadline, records
            reader.wait(0.05)
            records += reader.read_next()
        # LSL orders nothing across streams: each clock chunk is pushed once the events before it have arrived.
        def until(arrived) -> None:
            while not arrived():
                assert time.monotonic() < deadline, records
                reader.wait(0.02)
                records.extend(reader.read_next())

        out.push_ttl(0, 1, t(15))
        out.push_spike(1, 1, t(16))
        until(lambda: {"Ttl", "Spike"} <= {type(r).__name__ for r in records})
        out.push_clock(np.zeros(10), t(29))  # 20..29: clock samples 10..19 never came
        until(lambda: any(getattr(r, "sample", None) == BASE + 30 for r in records))
        out.push_ttl(-1, 7, t(31))  # malformed
        until(lambda: reader.parser.stats.malformed == 1)
        out.push_clock(np.zeros(5), t(4))  # 0..4: the sender's clock went back
        while not any(getattr(r, "sample", None) == BASE + 5 for r in records):
            assert time.monotonic() < deadline, records
            reader.wait(0.05)
            records += reader.read_next()
        for r in records:  # electrode numbers are named as Open Ephys names spike channels
            assert not hasattr(r, "electrode") or r.electrode == "Electrode 1"
        return [dataclasses.replace(_shifted(r), electrode="E1") if hasattr(r, "electrode") else _shifted(r)
                for r in records]

    def assert_exhausted(self, reader) -> None:
        assert reader.read_next() == []
        self.outlets.close()


def test_a_pulled_chunk_is_cut_where_its_timestamps_jump_and_replays_alike():
    stamps = np.r_[np.arange(10), np.arange(15, 20), np.arange(3)] / 1000.0 + 1.0
    assert regular_runs(stamps, 1000.0) == [(0, 10), (10, 15), (15, 18)]
    live, replay = LslParser("s", 1000.0), LslParser("s", 1000.0)
    frames = [format_clock("h", 1000.0, stamps[a], stamps[b - 1], b - a) for a, b in regular_runs(stamps, 1000.0)]
    frames.insert(1, format_events("spikes", "h", np.array([1.004, np.nan]), np.array([[2, 1], [2, 1]])))
    records = [r for f in frames for r in live.handle(f, 0.0)]
    log = live.take_log()
    assert [type(r).__name__ for r in records] == ["Watermark", "Spike", "Discontinuity", "Watermark",
                                                  "Discontinuity", "Watermark"]
    assert live.stats.malformed == 1 and live.stats.gaps == 1 and live.stats.restarts == 1
    again = [r for m, t in zip(log.frames, log.receive_times) for r in replay.handle(m, t)]
    assert again == records and replay.stats == live.stats


def _lsl_session(tmp_path: Path) -> tuple[Path, list[dict], str]:
    protocol = tmp_path / "lsl.toml"
    protocol.write_text(tiny_protocol(generations=2, popsize=6, references=2, max_frequency=4, image_size=64)
                        + RECORDING.format(extra="connect_timeout_s = 15"))
    truth = tmp_path / "truth.jsonl"
    name = unique_name()
    process, ports = start_sim_rig(tmp_path, "--protocol", str(protocol), "--gain", "1000", "--offset", "80",
                                   "--truth-file", str(truth), "--transport", "lsl", "--lsl-name", name)
    out = tmp_path / "lsl.h5"
    try:
        assert ports["neuron"] == f"lsl://{name}"
        status = main(["run", str(protocol), "--out", str(out), "--neuron", ports["neuron"],
                       "--sim-link", ports["side"], "--pace-ms", "100,150", "--quiet"])
    finally:
        assert stop_sim_rig(process) == 0
    log = (tmp_path / "sim-rig.log").read_text()
    assert status == 0, log
    return out, [json.loads(line) for line in truth.read_text().splitlines()], log


def _on_reader_clock(truth: list[dict], offset: int) -> list[dict]:
    """The truth's samples moved onto the reader's sample clock (LSL seconds x rate, plus the clock offset)."""
    keys = ("sample", "ttl_sample", "onset_sample")
    return [{**r, **{k: r[k] + offset for k in keys if r.get(k) is not None}} for r in truth]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_session_over_lsl_scores_the_truth_and_rescores_exactly(tmp_path):
    out, truth, log = _lsl_session(tmp_path)
    (origin,) = [r["lsl_origin_sample"] for r in truth if r["type"] == "clock"]
    edges = {(r["block"], r["stimulus_id"]): r["ttl_sample"] for r in truth if r["type"] == "onset"}
    offsets = {int(ttl[i]) - edges[(block, sid)]
               for block, ids, _, valid, _, ttl, _ in showings(out) for i, sid in enumerate(ids) if valid[i]}
    # One constant: where sim-rig's sample 0 falls in LSL time, plus time_correction() (tens of us: ~1 sample).
    assert len(offsets) == 1 and abs(next(iter(offsets)) - origin) <= 3, offsets
    assert check_against_truth(out, _on_reader_clock(truth, next(iter(offsets)))) >= 16

    result = rescore_session(out)
    assert not result.stream_mismatches, result.stream_mismatches
    for s in result.showings:
        np.testing.assert_array_equal(s.rescored, s.recorded)
    assert main(["replay", str(out), "--rescore"]) == 0
