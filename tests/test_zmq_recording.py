"""ZmqReader and ZmqRecording over real ZeroMQ sockets on loopback (OS-chosen ports).

The fault tests run the real controller, a paced headless display and the
real ``SimRig`` (in a thread here; tests/test_simrig.py and
tests/test_end_to_end_rig.py run it as a separate process).
"""
from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest
import torch

from protocols.spec import RecordingSpec
from rig.loop.controller import Controller
from rig.recording.openephys.wire import DataMessage, SpikeMessage, TtlMessage
from rig.recording.records import Discontinuity, Watermark
from rig.recording.sidechannel import FaultRequest
from rig.recording.openephys.reader import ZmqReader
from rig.recording.openephys.server import OpenEphysPublisher
from rig.recording.source import StreamAbsentError, StreamSilentError, ZmqRecording
from rig.session import read_session
from helpers.simrig import ThreadRig, record_with_fault, thread_rig_session

UNIT = "test_cnn:features.7:unit=5"


def _read_until(reader: ZmqReader, count: int, timeout_s: float = 3.0) -> list:
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        reader.wait(0.05)
        records.extend(reader.read_next())
    return records


@pytest.fixture
def publisher():
    pub = OpenEphysPublisher("127.0.0.1", 0)
    yield pub
    pub.close()


@pytest.mark.timeout(30)
def test_reader_parses_counts_gaps_restarts_and_survives_malformed_messages(publisher):
    with ZmqReader(publisher.endpoint, f"tcp://127.0.0.1:{publisher.heartbeat_port}",
                   heartbeat_interval_s=0.05) as reader:
        # A PUB drops messages sent before the subscription reaches it: wait until one gets through.
        deadline = time.monotonic() + 5
        while not reader.read_next() and time.monotonic() < deadline:
            publisher.send(DataMessage(0, "s", 0, "CH1", 0, 1000.0, np.zeros(10, np.float32)))
            time.sleep(0.02)
        publisher.message_num = 100
        publisher.send(TtlMessage(0, "s", 1, 15, 0, 1))                                      # 101
        publisher.send(SpikeMessage(0, "s", 1, "E1", 16, 1, np.zeros((1, 8), np.float32)))  # 102
        publisher.next_message_num()                                                          # 103 lost
        publisher.send(DataMessage(0, "s", 0, "CH1", 20, 1000.0, np.zeros(10, np.float32)))  # 104
        publisher.send_frames([b"DATA\x00", b"{broken", b""])                               # malformed
        publisher.restart()
        publisher.send(DataMessage(0, "s", 0, "CH1", 0, 1000.0, np.zeros(10, np.float32)))   # 1 again
        records = _read_until(reader, 6)
        for _ in range(20):
            publisher.answer_heartbeats()
            reader.read_next()
            time.sleep(0.02)
        kinds = [type(r).__name__ for r in records]
        # 101 follows whatever number the warm-up reached: counted as a gap too, so look from the TTL on.
        tail = kinds[kinds.index("Ttl"):]
        assert tail == ["Ttl", "Spike", "Discontinuity", "Watermark", "Discontinuity", "Watermark"]
        gap, restart = [r for r in records[kinds.index("Ttl"):] if isinstance(r, Discontinuity)]
        assert (gap.kind, gap.lost_messages, gap.from_sample, gap.to_sample) == ("gap", 1, 16, 20)
        assert restart.kind == "restart"
        assert [r for r in records if isinstance(r, Watermark)][-2].sample == 30
        assert reader.stats.malformed == 1 and "not UTF-8 JSON" in reader.stats.malformed_errors[0]
        assert reader.stats.restarts == 1
        raw = reader.take_raw()
        # Malformed messages are counted and described compactly (bounded), never kept whole.
        assert raw.malformed == 1 and "7b62726f6b656e" in raw.malformed_kept[0]  # b"{broken" in hex
        # Events and spikes are kept as received; continuous data only as one watermark run per callback.
        assert [f[0] for f in raw.frames] == [b"EVENT\x00", b"EVENT\x00"]
        assert [(r.first_message_num, r.messages, r.end_sample) for r in raw.runs][-2:] == [(104, 1, 30), (1, 1, 10)]
        assert len(raw.receive_times) == len(raw.frames) and np.all(np.diff(raw.receive_times) >= 0)
        assert reader.heartbeat.replies >= 1
        assert publisher.heartbeats[0] == {"application": "rig", "uuid": reader.uuid}


@pytest.mark.timeout(30)
def test_take_hands_over_the_counters_of_exactly_the_messages_in_its_log(publisher):
    """A showing stores the reader's counters with its log; replay checks one against the other. While the
    thread keeps receiving, counters read a moment after the log could count a message the log lacks."""
    stop = threading.Event()

    def pump() -> None:  # the only user of the publisher's socket while it runs
        sample = 0
        while not stop.is_set():
            publisher.send(DataMessage(0, "s", 0, "CH1", sample, 1000.0, np.zeros(10, np.float32)))
            sample += 10
            time.sleep(0.0002)

    with ZmqReader(publisher.endpoint, f"tcp://127.0.0.1:{publisher.heartbeat_port}") as reader:
        sender = threading.Thread(target=pump, daemon=True)
        sender.start()
        try:
            logged, takes, deadline = 0, 0, time.monotonic() + 2.0
            while time.monotonic() < deadline:
                _, log, counters = reader.take()
                time.sleep(0.001)  # the showing is scored before it is stored; the thread receives meanwhile
                logged += len(log)
                takes += 1
                assert counters["messages"] == logged, (takes, counters, logged)
        finally:
            stop.set()
            sender.join(5)
    assert logged > 500 and takes > 100, (logged, takes)


@pytest.mark.timeout(30)
def test_absent_stream_fails_clearly_before_anything_runs():
    pub = OpenEphysPublisher("127.0.0.1", 0)  # bound but never sends: an idle GUI, or the wrong port
    port = pub.data_port
    pub.close()
    source = ZmqRecording(RecordingSpec(data_port=port, connect_timeout_s=0.3))
    started = time.monotonic()
    with pytest.raises(StreamAbsentError, match=rf"tcp://127.0.0.1:{port} within 0.3 s .*ZMQ Interface plugin"):
        source.start()
    assert time.monotonic() - started < 3


FAULTS = {
    "drop": (FaultRequest("drop", 3), "gap"),
    "restart": (FaultRequest("restart", 3), "restart"),
    "missing-ttl": (FaultRequest("missing-ttl", 3), "missing-ttl"),
    "jitter": (FaultRequest("jitter", 3, 40.0), "missing-ttl"),
    "silent": (FaultRequest("silent", 3, 1.2), "silent"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(FAULTS))
def test_each_fault_invalidates_stimuli_that_are_shown_again(name, write_protocol, tmp_path):
    fault, reason = FAULTS[name]
    rig, out = record_with_fault(write_protocol, tmp_path, fault)
    assert (fault.kind, 3) in rig.faults_applied
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "complete"  # the evolution still finished
        block = f["blocks/000000"]
        first = block["showings/00"]
        reasons = [r.decode() for r in first["invalid_reasons"][()]]
        assert reasons[3] == reason  # the 4th onset is the one the fault hit
        lost = np.flatnonzero(~first["valid"][()])
        assert 3 in lost
        assert np.isnan(first["scores"][()][lost]).all()  # never scored as zero
        again = block["showings/01"]
        assert sorted(again["positions"][()].tolist()) == sorted(lost.tolist())  # exactly the lost ones again
        assert block["valid"][()].all() and np.isfinite(block["scores"][()]).all()
        assert first["raw_frames"].shape[0] == first["raw_frame_counts"][()].sum()
        assert first["raw_receive_times"].shape == first["raw_frame_counts"].shape
        assert bytes(first["raw_frames"][0][:5]) == b"EVENT"  # events and spikes raw; data as watermark runs
        assert first["data_runs"].shape[1] == 5 and first["data_runs"][()][:, 2].min() >= 1
    assert len(read_session(out).blocks) == 2


@pytest.mark.timeout(60)
def test_clean_stream_scores_every_stimulus_once_and_maps_the_clock(write_protocol, tmp_path):
    sim = ThreadRig()
    try:
        parts, session, out = thread_rig_session(write_protocol, tmp_path, sim.rig, generations=1)
        try:
            Controller(parts.protocol, parts.display, parts.source, session).run()
        finally:
            parts.source.close()
    finally:
        sim.close()
    with h5py.File(out, "r") as f:
        block = f["blocks/000000"]
        assert list(block["showings"]) == ["00"]
        import json
        diag = json.loads(block["showings/00"].attrs["recording"])
        assert diag["paired"] == diag["onsets"] == 8 and diag["pairing"]["accepted"]
        # The latency the pairing measured: 20 ms display lag plus the acquisition's (sim-rig publishes 10 ms late).
        assert 15 < diag["pairing"]["latency_ms"] < 80
        # Display clock (time.monotonic) onto the 30 kHz recording clock: slope ~30000, sub-ms residuals.
        assert diag["clock_map"]["samples_per_display_second"] == pytest.approx(30000, rel=0.01)
        assert diag["clock_map"]["residual_ms_max"] < 3
        assert diag["stream"]["gaps"] == 0 and diag["stream"]["malformed"] == 0


@pytest.mark.timeout(60)
def test_stream_that_goes_silent_for_good_times_out_clearly(write_protocol, tmp_path):
    sim = ThreadRig([FaultRequest("silent", 0, float("inf"))])
    try:
        parts, session, out = thread_rig_session(write_protocol, tmp_path, sim.rig, timeout_s=0.3)
        try:
            with pytest.raises(StreamSilentError, match=r"tcp://127.0.0.1:\d+ .*stream is silent"):
                Controller(parts.protocol, parts.display, parts.source, session).run()
        finally:
            parts.source.close()
    finally:
        sim.close()
    assert read_session(out).attrs["status"] == "failed"


@pytest.mark.timeout(60)
def test_units_are_selected_by_electrode_and_sorted_id(tmp_path):
    """Unsorted crossings (sorted id 0) arrive on the same electrode; selecting unit 1 leaves them out."""
    # No stimulus drive and no spontaneous spikes of unit 1: only unsorted crossings, set before the thread starts.
    sim = ThreadRig(gain=0.0, offset=0.0, spontaneous_hz=0.0, unsorted_hz=400.0)
    try:
        spec = RecordingSpec(data_port=sim.rig.data_port, heartbeat_port=sim.rig.heartbeat_port,
                             units=("Electrode 1:1", "Electrode 1:0", "Electrode 1"), baseline="none")
        source = ZmqRecording(spec)
        from protocols.base import Block
        from rig.display.headless import HeadlessDisplay
        from rig.recording.choice import attach

        display = HeadlessDisplay(pace=(0.05, 0.05))
        attach(source, display, sim_link=f"tcp://127.0.0.1:{sim.rig.side_port}")
        n = 6
        block = Block(0, [f"s{i}" for i in range(n)], ["reference"] * n, -np.ones(n), -np.ones(n),
                      torch.rand(n, 3, 16, 16), np.zeros((0, 0, 0)))
        responses = source.record(block, display.present(block))
        source.close()
    finally:
        sim.close()
    assert responses.valid.all()
    sorted1, unsorted, both = responses.scores.T
    assert (sorted1 == 0).all()
    assert unsorted.mean() > 150  # ~400 spikes/s of unsorted crossings
    np.testing.assert_allclose(both, sorted1 + unsorted)
