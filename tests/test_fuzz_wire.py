"""Hostile Open Ephys messages: a bad message is counted, described (bounded) and skipped, never fatal.

Fuzzes the wire parser with random frames and with headers of the plugin's shape holding wrong types,
huge or non-finite numbers, deep nesting and broken UTF-8; then floods a live reader with garbage.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rig.recording.openephys.wire import (DATA_ENVELOPE, EVENT_ENVELOPE, DataMessage, WireError, format_data,
                                          format_spike, format_ttl, parse_message, SpikeMessage, TtlMessage)
from rig.recording.stream_log import KEEP_MALFORMED
from rig.recording.openephys.reader import StreamParser, ZmqReader
from rig.recording.openephys.server import OpenEphysPublisher

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hostile_scalars = st.one_of(
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.booleans(), st.none(), st.just(10 ** 400), st.lists(st.integers(), max_size=3))


def _valid_frames() -> list[list[bytes]]:
    return [format_data(DataMessage(7, "s", 0, "CH1", 3000, 30000.0, np.zeros(4, np.float32), 5)),
            format_ttl(TtlMessage(8, "s", 100, 3001, 0, 1, 1, 5)),
            format_spike(SpikeMessage(9, "s", 100, "Electrode 1", 3002, 1, np.zeros((1, 4), np.float32), [-30.0], 5))]


def _parses_or_wire_error(frames) -> None:
    try:
        parse_message(frames)
    except WireError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_random_frames_parse_or_raise_wire_error(frames):
    _parses_or_wire_error(frames)


@FUZZ
@given(which=st.integers(0, 2), path=st.lists(st.sampled_from(["content", "spike", "message_num", "sample_num",
                                                                  "num_samples", "sample_rate", "timestamp",
                                                                  "threshold", "num_channels", "type", "stream",
                                                                  "electrode", "sorted_id", "channel_num"]),
                                                 min_size=1, max_size=2),
       value=hostile_scalars)
def test_a_plugin_header_with_one_hostile_field_parses_or_raises_wire_error(which, path, value):
    frames = _valid_frames()[which]
    header = json.loads(frames[1])
    table = header
    for key in path[:-1]:
        table = table.get(key) if isinstance(table.get(key), dict) else table
    table[path[-1]] = value
    text = json.dumps(header, allow_nan=True) if not (isinstance(value, int) and abs(value) > 10 ** 300) \
        else json.dumps(header).replace(str(value), "1" + "0" * 400)
    _parses_or_wire_error([frames[0], text.encode(), frames[2]])
    parser = StreamParser()
    parser.handle([frames[0], text.encode(), frames[2]], 1.0)  # the reader's path never raises either


@pytest.mark.parametrize("header", [
    b'{"message_num": 1, "type": "data", "content": {"stream": "s", "channel_num": 0, "num_samples": 1, '
    b'"sample_num": 0, "sample_rate": 1e400}, "timestamp": 1e999}',
    b'{"message_num": 1, "type": "data", "content": {"stream": "s", "channel_num": 0, "num_samples": 1, '
    b'"sample_num": 0, "sample_rate": 30000.0}, "timestamp": "abc"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"message_num": 1' + b"0" * 5000 + b', "type": "data"}',
    b"\xff\xfe{}",
])
def test_each_known_killer_is_a_wire_error(header):
    with pytest.raises(WireError):
        parse_message([DATA_ENVELOPE, header, b"\x00" * 4])


def test_spike_with_a_non_numeric_threshold_is_a_wire_error():
    frames = _valid_frames()[2]
    header = json.loads(frames[1])
    header["spike"]["threshold"] = ["abc"]
    with pytest.raises(WireError, match="threshold"):
        parse_message([EVENT_ENVELOPE, json.dumps(header).encode(), frames[2]])


def test_garbage_is_counted_and_described_boundedly_not_kept():
    parser = StreamParser()
    garbage = [DATA_ENVELOPE, b"{not json" + b"x" * 5000, b"\x00" * 100_000]
    for i in range(5000):
        assert parser.handle(garbage, float(i)) == []
    log = parser.take_log()
    assert parser.stats.malformed == 5000 == log.malformed
    assert len(log.malformed_kept) == KEEP_MALFORMED
    assert sum(len(d) for d in log.malformed_kept) < 20_000  # descriptions, not payloads
    assert log.frames == [] and len(parser.stats.malformed_errors) <= StreamParser.KEEP_ERRORS


@pytest.mark.timeout(60)
def test_a_live_reader_flooded_with_garbage_keeps_reading_good_messages():
    publisher = OpenEphysPublisher("127.0.0.1", 0)
    try:
        with ZmqReader(publisher.endpoint) as reader:
            deadline = time.monotonic() + 5
            while not reader.read_next() and time.monotonic() < deadline:  # until the subscription is up
                publisher.send(DataMessage(0, "s", 0, "CH1", 0, 1000.0, np.zeros(10, np.float32)))
                time.sleep(0.02)
            sample = 10
            for _ in range(200):
                for _ in range(40):
                    publisher.send_frames([DATA_ENVELOPE, b'{"message_num": 1e999}', b"\x01" * 2000])
                publisher.send(DataMessage(0, "s", 0, "CH1", sample, 1000.0, np.zeros(10, np.float32)))
                sample += 10
                time.sleep(0.002)  # below the PUB queue's 1000 messages: a drop there is a gap, not the test's point
            records = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (not records or records[-1].sample < sample):
                reader.wait(0.05)
                records.extend(r for r in reader.read_next() if hasattr(r, "sample_rate"))
            assert records[-1].sample == sample  # every good message still came through
            assert reader.stats.malformed == 8000 and reader.stats.gaps == 0
            log = reader.take_raw()
            assert log.malformed == 8000 and len(log.malformed_kept) == KEEP_MALFORMED
    finally:
        publisher.close()


def test_a_showing_of_mostly_garbage_is_reported_once(capsys):
    from rig.recording.stream_log import StreamLog
    from rig.recording.source import ZmqRecording

    source = ZmqRecording()
    log = StreamLog()
    log.add_raw(0, [b"EVENT\x00", b"{}", b""], 0.0)
    for i in range(3):
        log.add_malformed(i + 1, [b"junk"], 0.0, "header is not UTF-8 JSON")
    source._check_garbage(log)
    source._check_garbage(log)
    err = capsys.readouterr().err
    assert err.count("mostly malformed: 3 of 4 messages") == 1 and "data port" in err
    assert "mostly malformed" in source.explain_invalid()
