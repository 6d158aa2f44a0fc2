"""The Open Ephys ZMQ wire format, message by message, and the pure scoring functions."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from rig.recording.openephys.wire import (DATA_ENVELOPE, EVENT_ENVELOPE, DataMessage, SpikeMessage, TtlMessage,
                                          WireError, format_data, format_heartbeat, format_spike, format_ttl,
                                          normalise, parse_data, parse_heartbeat, parse_message, parse_spike,
                                          parse_ttl)
from rig.recording.records import Discontinuity, Spike, Ttl, Watermark
from rig.recording.pairing import pair_sequence
from rig.recording.scoring import Windows, fit_clock, overlaps, window_rates
from rig.recording.sidechannel import FaultRequest, OnsetNotice, format_fault, format_onset, parse_fault, parse_onset
from rig.recording.source import UnitSelector
from rig.recording.simrig import parse_fault_option


def test_data_message_frames_are_byte_exact():
    msg = DataMessage(7, "acq", 0, "CH1", 3000, 30000.0, np.array([1.0, -2.5], dtype=np.float32), 1700000000123)
    frames = format_data(msg)
    assert len(frames) == 3
    assert frames[0] == b"DATA\x00"
    assert frames[1] == (b'{"message_num": 7, "type": "data", "content": {"stream": "acq", "channel_num": 0, '
                         b'"channel_name": "CH1", "num_samples": 2, "sample_num": 3000, "sample_rate": 30000.0}, '
                         b'"data_size": 8, "timestamp": 1700000000123}')
    assert frames[2] == b"\x00\x00\x80\x3f" + b"\x00\x00\x20\xc0"  # little-endian float32 1.0, -2.5
    back = parse_data(frames)
    assert (back.message_num, back.stream, back.sample_num, back.sample_rate, back.end_sample) == (7, "acq", 3000,
                                                                                                   30000.0, 3002)
    np.testing.assert_array_equal(back.samples, msg.samples)


def test_ttl_event_frames_are_byte_exact():
    msg = TtlMessage(8, "acq", 104, 4242, line=2, state=1, word=0x0102030405060708, timestamp=5)
    frames = format_ttl(msg)
    assert frames[0] == b"EVENT\x00"
    assert json.loads(frames[1]) == {"message_num": 8, "type": "event",
                                     "content": {"stream": "acq", "source_node": 104, "type": 3, "sample_num": 4242},
                                     "data_size": 10, "timestamp": 5}
    assert frames[1].startswith(b'{"message_num": 8, "type": "event", "content": {"stream": "acq", "source_node"')
    # uint8 line, uint8 state, uint64 word, little-endian: 10 bytes.
    assert frames[2] == bytes([2, 1, 8, 7, 6, 5, 4, 3, 2, 1])
    back = parse_ttl(frames)
    assert (back.line, back.state, back.word, back.sample_num, back.source_node) == (2, 1, 0x0102030405060708, 4242, 104)


def test_spike_frames_sit_under_spike_with_no_data_size():
    waveform = np.arange(6, dtype=np.float32).reshape(2, 3)
    frames = format_spike(SpikeMessage(9, "acq", 105, "Electrode 1", 5000, 2, waveform, [-30.0, -31.5], 11))
    assert frames[0] == b"EVENT\x00"
    header = json.loads(frames[1])
    assert header == {"message_num": 9, "type": "spike",
                      "spike": {"stream": "acq", "source_node": 105, "electrode": "Electrode 1", "sample_num": 5000,
                                "num_channels": 2, "num_samples": 3, "sorted_id": 2, "threshold": [-30.0, -31.5]},
                      "timestamp": 11}
    assert "content" not in header and "data_size" not in header
    assert frames[2] == struct.pack("<6f", 0, 1, 2, 3, 4, 5)  # channel-major
    back = parse_spike(frames)
    np.testing.assert_array_equal(back.waveform, waveform)
    assert (back.electrode, back.sorted_id, back.threshold) == ("Electrode 1", 2, [-30.0, -31.5])


def test_parse_message_dispatches_and_normalises():
    data = DataMessage(1, "s", 0, "CH1", 100, 1000.0, np.zeros(10, np.float32))
    ttl = TtlMessage(2, "s", 1, 105, 0, 1)
    spike = SpikeMessage(3, "s", 1, "E1", 107, 1, np.zeros((1, 4), np.float32))
    assert normalise(parse_message(format_data(data)), 1.5) == Watermark("s", 110, 1000.0, 1.5)
    assert normalise(parse_message(format_ttl(ttl)), 0) == Ttl("s", 105, 0, 1)
    assert normalise(parse_message(format_spike(spike)), 0) == Spike("s", 107, "E1", 1)


def test_parser_accepts_pretty_printed_headers():
    """The GUI serialises with JUCE, which may indent; any JSON layout parses."""
    frames = format_ttl(TtlMessage(4, "acq", 1, 10, 0, 1))
    pretty = json.dumps(json.loads(frames[1]), indent=2).encode()
    assert parse_message([frames[0], pretty, frames[2]]).sample_num == 10


@pytest.mark.parametrize("frames, complaint", [
    ([b"DATA", b"{}", b""], "envelope"),                       # missing NUL
    ([b"SPIKE\x00", b"{}", b""], "envelope"),
    ([b"EVENT\x00"], "2 or 3 frames"),
    ([b"EVENT\x00", b"{not json", b""], "not UTF-8 JSON"),
    ([b"EVENT\x00", b'{"type": "event"}', b""], "message_num"),
    ([b"EVENT\x00", b'{"message_num": 1, "type": "data", "content": {}}', b""], "envelope"),
    ([b"EVENT\x00", b'{"message_num": 1, "type": "event", "content": {"stream": "s", "source_node": 1, '
                    b'"type": 3, "sample_num": 5}, "data_size": 10}', b"\x00" * 9], "TTL payload is 9 bytes"),
    ([b"DATA\x00", b'{"message_num": 1, "type": "data", "content": {"stream": "s", "channel_num": 0, '
                   b'"num_samples": 3, "sample_num": 0, "sample_rate": 1000}}', b"\x00" * 8], "num_samples 3"),
    ([b"EVENT\x00", b'{"message_num": 1, "type": "gossip"}', b""], "unknown message type"),
    ([b"EVENT\x00", b'{"message_num": 1, "type": "spike", "spike": {"stream": "s"}}', b""], "num_channels"),
])
def test_malformed_messages_say_what_is_wrong(frames, complaint):
    with pytest.raises(WireError, match=complaint):
        parse_message(frames)


def test_heartbeat_round_trip():
    beat = format_heartbeat("rig", "1234")
    assert json.loads(beat) == {"application": "rig", "uuid": "1234", "type": "heartbeat"}
    assert parse_heartbeat(beat) == {"application": "rig", "uuid": "1234"}
    with pytest.raises(WireError, match="not a heartbeat"):
        parse_heartbeat(b'{"type": "hello"}')


def test_side_channel_round_trips():
    image = np.random.default_rng(0).random((3, 4, 5), dtype=np.float32)
    notice = OnsetNotice("g0000/t0/c001", 3, 7, 12.5, "psychopy", 99.25, image)
    frames = format_onset(notice)
    back = parse_onset(frames)
    assert (back.stimulus_id, back.block, back.position, back.onset_time, back.monotonic) == (
        "g0000/t0/c001", 3, 7, 12.5, 99.25)
    np.testing.assert_array_equal(back.image, image)
    fault = parse_fault(format_fault(FaultRequest("jitter", 4, 40.0)))
    assert (fault.kind, fault.at_onset, fault.value) == ("jitter", 4, 40.0)
    with pytest.raises(ValueError, match="unknown; valid"):
        FaultRequest("explode")
    assert parse_fault_option("silent@8:inf").value == float("inf")
    with pytest.raises(ValueError, match="KIND@ONSET"):
        parse_fault_option("drop")


RATE = 1000.0
PERIODIC = np.arange(10) * 0.25 + 100.0  # perfectly periodic onsets: a train shifted by one fits as well
TRUE_OFFSET = 5300.0  # samples


def _ttls(onsets=PERIODIC, latency_ms: float = 40.0) -> np.ndarray:
    return np.rint(onsets * RATE + TRUE_OFFSET + latency_ms).astype(np.int64)


def test_sequence_pairing_survives_a_missing_ttl_and_reports_latency():
    ttls = np.delete(_ttls(), 4)
    pairing = pair_sequence(PERIODIC, ttls, RATE, tolerance=10, lower_bound=TRUE_OFFSET, window_samples=100)
    assert pairing.accepted, pairing.refused
    assert pairing.ttl_index[4] == -1
    assert (pairing.ttl_index[:4] == np.arange(4)).all() and (pairing.ttl_index[5:] == np.arange(4, 9)).all()
    assert pairing.latency_ms == pytest.approx(40.0)
    assert pairing.residual_ms == pytest.approx(0.0, abs=1.0)


def test_a_train_shifted_by_one_stimulus_is_refused_not_accepted():
    """The TTLs arrive one stimulus interval late (290 ms), beyond the 100 ms window. Inside the window the
    onsets fit the train shifted by one (onset i with TTL i-1, 9 of 10): that must never be accepted."""
    ttls = _ttls(latency_ms=290.0)
    pairing = pair_sequence(PERIODIC, ttls, RATE, tolerance=10, lower_bound=TRUE_OFFSET, window_samples=100)
    assert not pairing.accepted
    assert (pairing.ttl_index == -1).all()
    assert "290 ms" in pairing.refused and "pairing_window_ms = 400" in pairing.refused


def test_a_missing_ttl_at_the_start_cannot_turn_into_a_shift():
    """TTL 0 lost and the true latency (260 ms) outside the window: onset i with TTL i+1 (510 ms) pairs 9
    onsets, exactly as many as the true train; a tie is refused, whichever lies in the window."""
    ttls = np.delete(_ttls(latency_ms=260.0), 0)
    pairing = pair_sequence(PERIODIC, ttls, RATE, tolerance=10, lower_bound=TRUE_OFFSET, window_samples=100)
    assert not pairing.accepted and "equally" in pairing.refused


def test_both_edges_of_a_pulse_are_ambiguous_and_say_why():
    rising = _ttls()
    falling = rising + 100  # a 100 ms pulse: rising at onset, falling at offset
    edges = np.sort(np.concatenate([rising, falling]))
    pairing = pair_sequence(PERIODIC, edges, RATE, tolerance=10, lower_bound=TRUE_OFFSET, window_samples=200)
    assert not pairing.accepted and "ttl_edges" in pairing.refused
    only_rising = pair_sequence(PERIODIC, rising, RATE, tolerance=10, lower_bound=TRUE_OFFSET, window_samples=200)
    assert only_rising.accepted and (only_rising.ttl_index == np.arange(10)).all()


def test_edges_before_the_onsets_are_impossible_and_never_paired():
    """Edges of an earlier (refused) showing lie before these onsets: below the arrival bound, never candidates."""
    earlier = _ttls(PERIODIC - 5.0)
    pairing = pair_sequence(PERIODIC, earlier, RATE, tolerance=10, lower_bound=TRUE_OFFSET, window_samples=100)
    assert not pairing.accepted and (pairing.ttl_index == -1).all()


def test_irregular_onsets_pair_without_a_bound():
    onsets = np.cumsum(np.random.default_rng(3).uniform(0.2, 0.4, 12)) + 50.0
    pairing = pair_sequence(onsets, _ttls(onsets), RATE, tolerance=10)
    assert pairing.accepted and (pairing.ttl_index == np.arange(12)).all()
    assert pairing.offset == pytest.approx(TRUE_OFFSET + 40.0, abs=1)


def test_clock_fit_recovers_rate_and_jitter():
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 10, 40))
    samples = 30000.0 * t * (1 + 20e-6) + 1234 + rng.normal(0, 30, t.size)  # 1 ms jitter, 20 ppm drift
    fit = fit_clock(t, samples)
    assert fit["samples_per_display_second"] == pytest.approx(30000.6, abs=2)
    assert 0.5 < fit["residual_ms_sd"] < 1.5


def test_window_rates_and_overlaps():
    spikes = np.array([1049, 1050, 1100, 1199, 1200, 3000])
    # Window [50, 200) ms at 1 kHz after an anchor at 1000: samples 1050..1199 -> 3 spikes in 0.15 s.
    assert window_rates(spikes, np.array([1000]), (50, 200), 1000.0)[0] == pytest.approx(3 / 0.15)
    assert overlaps([(100, 200)], np.array([0, 150, 200]), np.array([100, 160, 300])).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="baseline"):
        Windows(baseline="median")
    with pytest.raises(ValueError, match="response_ms"):
        Windows(response_ms=(200, 50))


def test_unit_selectors():
    spike = Spike("s", 0, "Electrode 1", 2)
    assert UnitSelector.parse("*").matches(spike)
    assert UnitSelector.parse("Electrode 1").matches(spike)
    assert UnitSelector.parse("Electrode 1:2").matches(spike)
    assert not UnitSelector.parse("Electrode 1:1").matches(spike)
    assert not UnitSelector.parse("Electrode 2").matches(spike)
    assert UnitSelector.parse("*:2").matches(spike)
    with pytest.raises(ValueError, match="sorted unit id"):
        UnitSelector.parse("Electrode 1:x")


def test_discontinuity_is_a_plain_record():
    d = Discontinuity("gap", "s", 10, 20, 3, 0.0)
    assert (d.kind, d.lost_messages) == ("gap", 3)
    assert DATA_ENVELOPE.endswith(b"\x00") and EVENT_ENVELOPE.endswith(b"\x00")
