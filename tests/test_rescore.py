"""Replaying a session's raw stream (SessionReplayReader) and ``rig replay --rescore``.

One real session is recorded here: the real controller and a paced headless
display in front of the real ``SimRig`` publishing the Open Ephys wire format
on loopback, with a message gap that makes the controller show stimuli again.
Its raw stream is then replayed through the live parser and scored again.
"""
from __future__ import annotations

import csv
import hashlib
import time

import numpy as np
import pytest

from rig.cli import main
from rig.loop.controller import Showing
from rig.recording.openephys.wire import DataMessage, format_message
from rig.recording.records import Watermark
from rig.recording.replay_reader import NoRawStreamError, SessionReplayReader
from rig.recording.rescore import recorded_recording_spec, rescore_session
from rig.recording.scoring import Windows
from rig.recording.sidechannel import FaultRequest
from rig.recording.stream_log import StreamLog
from rig.recording.openephys.reader import StreamParser, ZmqReader
from rig.recording.openephys.server import OpenEphysPublisher
from rig.recording.source import RecordedResponses
from rig.session import SessionFileError, read_session
from helpers.reader_conformance import EXPECTED, ReaderContract, contract_messages, plain
from helpers.sessions import make_block, new_writer
from helpers.simrig import record_with_drop


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Block 0's 4th onset falls in a message gap, so its lost stimuli are shown again."""
    return record_with_drop(tmp_path_factory.mktemp("rescore"), FaultRequest("drop", 3))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["restart", "missing-ttl"])
def test_rescoring_reproduces_sessions_with_restarts_and_missing_ttls(fault, tmp_path):
    out = record_with_drop(tmp_path, FaultRequest(fault, 3))
    session = read_session(out)
    result = rescore_session(out)
    assert len(session.blocks[0].showings) == 2 and result.stream_mismatches == []
    assert result.stream["restarts"] == (fault == "restart")
    for s in result.showings:
        np.testing.assert_array_equal(s.rescored, s.recorded)
    for block, scores in zip(session.blocks, result.blocks):
        np.testing.assert_array_equal(scores.rescored, block.scores)


@pytest.mark.timeout(60)
def test_recorded_windows_reproduce_every_recorded_score_exactly(recorded):
    before = _sha256(recorded)
    session = read_session(recorded)
    assert len(session.blocks[0].showings) >= 2  # the gap made the controller show lost stimuli again
    result = rescore_session(recorded)
    assert result.windows == result.recorded_windows == Windows((50.0, 200.0), "early", (0.0, 40.0))
    assert len(result.showings) == sum(len(b.showings) for b in session.blocks)
    for s in result.showings:
        np.testing.assert_array_equal(s.valid, s.recorded_valid)
        np.testing.assert_array_equal(s.rescored, s.recorded)  # bit for bit, NaN where lost
    assert not result.showings[0].valid.all()  # the lost stimuli were not scored from the gap
    for block, scores in zip(session.blocks, result.blocks):
        np.testing.assert_array_equal(scores.rescored, block.scores)
        assert np.isfinite(scores.rescored).all()
    assert result.stream["gaps"] == 1 and result.stream["malformed"] == 0
    assert _sha256(recorded) == before  # never written into


@pytest.mark.timeout(60)
def test_other_windows_and_baselines_differ_consistently(recorded):
    plain = rescore_session(recorded, Windows((50.0, 200.0), "none"))
    early = rescore_session(recorded, Windows((50.0, 200.0), "early", (0.0, 40.0)))
    pre = rescore_session(recorded, Windows((50.0, 200.0), "pre", (-50.0, 0.0)))
    first = rescore_session(recorded, Windows((50.0, 120.0), "none"))
    second = rescore_session(recorded, Windows((120.0, 200.0), "none"))
    later = rescore_session(recorded, Windows((60.0, 220.0), "early", (0.0, 40.0)))
    for result in (plain, pre, first, second, later):
        assert not np.array_equal(result.blocks[0].rescored, early.blocks[0].rescored)
    for b in range(2):
        counts = plain.blocks[b].rescored * 0.150
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)  # rates of whole spike counts
        assert (counts >= 0).all() and counts.sum() > 0
        # Spikes in [50, 120) plus [120, 200) ms are the spikes in [50, 200) ms.
        np.testing.assert_allclose(first.blocks[b].rescored * 0.070 + second.blocks[b].rescored * 0.080, counts)
        # A pre-onset baseline takes off a rate >= 0; a pre window reaching into the gap loses its stimulus (NaN).
        kept = np.isfinite(pre.blocks[b].rescored)
        assert kept.sum() >= len(kept) - 1
        assert (plain.blocks[b].rescored[kept] >= pre.blocks[b].rescored[kept]).all()
        offset = plain.blocks[b].rescored - early.blocks[b].rescored
        assert (offset > 0).all()  # an early baseline removes spontaneous spikes
    # The early baseline of the last showing is the mean 0-40 ms rate over every valid trial of the session.
    onset = rescore_session(recorded, Windows((0.0, 40.0), "none"))
    mean_early = np.concatenate([o.rescored[e.valid] for o, e in zip(onset.showings, early.showings)]).mean(axis=0)
    last = early.showings[-1]
    diff = plain.showings[-1].rescored[last.valid] - last.rescored[last.valid]
    np.testing.assert_allclose(diff, np.broadcast_to(mean_early, diff.shape))


@pytest.mark.timeout(60)
def test_cli_rescore_prints_blocks_and_writes_the_csv(recorded, tmp_path, capsys):
    before = _sha256(recorded)
    out = tmp_path / "scores.csv"
    status = main(["replay", str(recorded), "--rescore", "--window-ms", "60,220", "--baseline", "pre",
                   "--baseline-window-ms", "-50,0", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "response [60.0, 220.0] ms, baseline pre [-50.0, 0.0]" in printed
    assert "block 0 Electrode 1:1:" in printed and "block 1 Electrode 1:1:" in printed
    rows = list(csv.DictReader(out.open()))
    session = read_session(recorded)
    assert len(rows) == sum(len(b.stimulus_ids) for b in session.blocks)
    expected = rescore_session(recorded, Windows((60.0, 220.0), "pre", (-50.0, 0.0)))
    for row in rows:
        block = session.blocks[int(row["block"])]
        i = block.stimulus_ids.index(row["stimulus_id"])
        assert row["kind"] == block.kinds[i] and row["channel"] == "Electrode 1:1"
        assert float(row["recorded_score"]) == block.scores[i, 0]
        # Empty where the new windows lose the stimulus (a window reaching into the message gap).
        np.testing.assert_equal(float(row["rescored_score"] or "nan"), expected.blocks[block.index].rescored[i, 0])
    lost = [row for row in rows if row["rescored_score"] == ""]
    assert 0 < len(lost) < len(rows) // 4
    for row in rows:
        # A window reaching into block 0's message gap, or past the end of the recorded stream: never a guess.
        assert (row["rescored_score"] == "") == (row["not_rescored_because"] in ("gap", "unfinished"))
        assert row["not_rescored_because"] != "gap" or row["block"] == "0"
    assert any(row["rescored_score"] and float(row["recorded_score"]) != float(row["rescored_score"]) for row in rows)
    assert _sha256(recorded) == before
    # Refusals: rescore options without --rescore, a bad window, and writing over the session itself.
    assert main(["replay", str(recorded), "--window-ms", "60,220"]) == 2
    assert main(["replay", str(recorded), "--rescore", "--baseline", "early", "--baseline-window-ms", "-50,0"]) == 2
    assert "baseline_ms" in capsys.readouterr().err
    assert main(["replay", str(recorded), "--rescore", "--out", str(recorded)]) == 2
    assert _sha256(recorded) == before


@pytest.mark.timeout(30)
def test_a_session_without_raw_frames_gets_a_clear_error(tmp_path, capsys):
    path = tmp_path / "insilico.h5"
    writer = new_writer(path)
    block, presentations, responses = make_block(0, np.random.default_rng(0))
    writer.append_block(block, presentations, responses, {}, {}, [Showing(np.arange(len(block)), presentations,
                                                                           responses)])
    writer.finish()
    with pytest.raises(NoRawStreamError, match=r"insilico.h5: no raw stream frames .*not recorded from a stream"):
        with SessionReplayReader(path):
            pass
    with pytest.raises(SessionFileError, match=r"insilico.h5: .*not recorded from a stream"):
        rescore_session(path)
    assert main(["replay", str(path), "--rescore"]) == 2
    assert "not recorded from a stream" in capsys.readouterr().err


def test_recorded_recording_spec_comes_from_provenance(recorded):
    spec = recorded_recording_spec(read_session(recorded))
    assert spec.units == ("Electrode 1:1",) and spec.ttl_tolerance_ms == 8


# --------------------------------------------------------------------------- Reader conformance (STYLE 10)

class TestZmqReaderContract(ReaderContract):
    def open_reader(self, tmp_path):
        self.publisher = OpenEphysPublisher("127.0.0.1", 0)
        return ZmqReader(self.publisher.endpoint)

    def read_all(self, reader) -> list:
        pub, records = self.publisher, []
        try:
            deadline = time.monotonic() + 5
            while not records and time.monotonic() < deadline:  # a PUB drops what it sent before subscribing
                pub.send(DataMessage(0, "s", 0, "CH1", 0, 1000.0, np.zeros(10, np.float32)))
                time.sleep(0.02)
                records.extend(reader.read_next())
            for num, msg in contract_messages(pub.message_num + 1):
                if num is None:
                    pub.send_frames(msg)
                    continue
                if num == 1:
                    pub.restart()
                while pub.message_num + 1 < num:
                    pub.next_message_num()  # lost
                pub.send(msg)
            deadline = time.monotonic() + 5
            while plain(records[-1:]) != [EXPECTED[-1]] and time.monotonic() < deadline:  # up to the last
                reader.wait(0.05)
                records.extend(reader.read_next())
            return records
        finally:
            pub.close()

    def assert_exhausted(self, reader) -> None:
        assert reader.read_next() == []


class TestSessionReplayReaderContract(ReaderContract):
    def open_reader(self, tmp_path):
        warm = DataMessage(0, "s", 0, "CH1", 0, 1000.0, np.zeros(10, np.float32))
        warm.message_num = 4
        messages = [format_message(warm)]
        for num, msg in contract_messages(5):
            if num is None:
                messages.append(msg)
                continue
            msg.message_num = num
            messages.append(format_message(msg))
        path = tmp_path / "stream.h5"
        writer = new_writer(path)
        rng = np.random.default_rng(1)
        # Stored as the live reader logs them (events raw, data as watermark runs, malformed described),
        # and the stream goes on across blocks.
        parser = StreamParser()
        for index, part in enumerate((messages[:3], messages[3:])):
            for i, frames in enumerate(part):
                parser.handle(frames, float(i))
            _stream_block(writer, index, parser.take_log(), rng)
        writer.finish()
        return SessionReplayReader(path, max_messages_per_read=2)

    def read_all(self, reader) -> list:
        records = []
        for _ in range(100):
            try:
                records.extend(reader.read_next())
            except StopIteration:
                return records
        raise AssertionError("SessionReplayReader never ran out")

    def assert_exhausted(self, reader) -> None:
        for _ in range(2):
            with pytest.raises(StopIteration):
                reader.read_next()


@pytest.mark.timeout(60)
def test_replayed_stream_counts_what_the_live_reader_counted_and_an_altered_frame_is_caught(recorded, tmp_path,
                                                                                              capsys):
    from rig.recording.replay_reader import recorded_counters

    session = read_session(recorded)
    live = recorded_counters(session)
    assert len(live) == sum(len(b.showings) for b in session.blocks)
    assert max(c["gaps"] for c in live.values()) == 1  # the dropped messages, as live saw them
    assert rescore_session(recorded).stream_mismatches == []
    altered = tmp_path / "altered.h5"
    altered.write_bytes(recorded.read_bytes())
    import h5py

    with h5py.File(altered, "r+") as f:
        frames = f["blocks/000001/showings/00/raw_frames"]
        header = np.array(frames[1])  # the first message's JSON header
        header[0] = 0xFF  # no longer UTF-8: the live parser calls it malformed
        frames[1] = header
    result = rescore_session(altered)
    assert result.stream["malformed"] == 1
    assert result.stream_mismatches and "block 1 showing 00" in result.stream_mismatches[0]
    assert main(["replay", str(altered), "--rescore"]) == 1
    assert "does not count what the live reader counted" in capsys.readouterr().out


def _stream_block(writer, index: int, log: StreamLog | list, rng) -> None:
    """A block whose one showing stored ``log``; a list of messages is stored raw, as files before data runs were."""
    block, presentations, responses = make_block(index, rng)
    if isinstance(log, list):
        messages, log = log, StreamLog()
        for i, frames in enumerate(messages):
            log.add_raw(i, frames, float(i))
    recorded = RecordedResponses(responses.scores, responses.valid, responses.channel_names, stream_log=log,
                                 onset_monotonic=presentations.onset_times, invalid_reasons=[""] * len(block))
    writer.append_block(block, presentations, recorded, {}, {},
                        [Showing(np.arange(len(block)), presentations, recorded)])


@pytest.mark.timeout(30)
def test_a_resumed_session_replays_with_a_fresh_parser_like_the_fresh_live_reader(tmp_path):
    from rig.session import SessionWriter

    def data(num: int, sample: int) -> list[bytes]:
        msg = DataMessage(num, "s", 0, "CH1", sample, 1000.0, np.zeros(10, np.float32))
        return format_message(msg)[:2]

    path = tmp_path / "resumed.h5"
    rng = np.random.default_rng(2)
    writer = new_writer(path)
    _stream_block(writer, 0, [data(1, 0), data(2, 10)], rng)  # then killed: never finished
    writer.abandon()  # as when the process is killed: the kernel drops its lock
    writer = SessionWriter.reopen(path)
    _stream_block(writer, 1, [data(40, 500), data(41, 510), data(42, 520)], rng)  # the publisher went on meanwhile
    writer.finish()
    seen = []
    with SessionReplayReader(path, max_messages_per_read=1) as reader:
        while True:
            try:
                records = reader.read_next()
            except StopIteration:
                break
            seen.append((reader.showing, reader.new_reader, plain(records)))
        assert reader.stats.gaps == 0 and reader.stats.messages == 3 and reader.messages_replayed == 5
    assert [new for _, new, _ in seen] == [False, False, True, False, False]
    assert seen[2] == ((1, 0), True, [Watermark("s", 510, 1000.0, 0.0)])  # no gap from 2 to 40


@pytest.mark.timeout(30)
def test_raw_frame_counts_that_do_not_add_up_get_a_clear_error(recorded, tmp_path):
    import h5py

    altered = tmp_path / "counts.h5"
    altered.write_bytes(recorded.read_bytes())
    with h5py.File(altered, "r+") as f:
        f["blocks/000001/showings/00/raw_frame_counts"][0] += 1
    with pytest.raises(SessionFileError, match=r"counts.h5: block 1 showing 00: raw_frame_counts .* do not match"):
        rescore_session(altered)
    assert main(["replay", str(altered), "--rescore"]) == 2


@pytest.mark.timeout(60)
def test_the_replay_parser_comes_from_the_recorded_transport(recorded, tmp_path):
    """Replay chooses the parser of the transport the session recorded, never by sniffing frames."""
    import json

    import h5py

    from rig.recording.replay_reader import recorded_transport

    assert recorded_transport(read_session(recorded)).scheme == "zmq"
    altered = tmp_path / "pigeon.h5"
    altered.write_bytes(recorded.read_bytes())
    with h5py.File(altered, "r+") as f:
        provenance = json.loads(f.attrs["provenance"])
        provenance["neuron"]["transport"] = {"scheme": "carrier-pigeon"}
        f.attrs["provenance"] = json.dumps(provenance)
    with pytest.raises(SessionFileError, match=r"pigeon.h5: provenance neuron.transport: .*'carrier-pigeon'.*"
                                               r"valid: \['lsl', 'zmq'\]"):
        rescore_session(altered)
