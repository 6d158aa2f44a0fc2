"""``rig sim-rig`` as a separate process, checked from the outside with plain ZeroMQ sockets.

The double is checked independently of the rig's reader: raw frames, ``json.loads``,
``struct``, and the ground-truth file sim-rig writes (format: ``rig/recording/simrig.py``).
"""
from __future__ import annotations

import json
import math
import struct
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.base import Block
from rig.recording.openephys import juce_json
from rig.recording.openephys.wire import (DATA_ENVELOPE, EVENT_ENVELOPE, HEARTBEAT_REPLY, DataMessage, format_data,
                                          format_heartbeat)
from rig.recording.sidechannel import (FAULT, ONSET, FaultRequest, OnsetNotice, SimRigLink, format_fault,
                                       format_onset, parse_fault, parse_onset)
from rig.recording.openephys.server import OpenEphysPublisher, data_header
from rig.recording.simrig import LATE_SPIKE_SAMPLES
from helpers.simrig import UNIT, start_sim_rig, stop_sim_rig

TTL = struct.Struct("<BBQ")
RATE = 30000.0


def _connect(context: zmq.Context, kind: int, endpoint: str) -> zmq.Socket:
    socket = context.socket(kind)
    socket.setsockopt(zmq.LINGER, 1000)
    socket.connect(endpoint)
    return socket


def _drain(sub: zmq.Socket, seconds: float, into: list) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if sub.poll(10):
            into.append(sub.recv_multipart())


def _block(n: int) -> Block:
    return Block(0, [f"s{i}" for i in range(n)], ["reference"] * n, -np.ones(n), -np.ones(n),
                 torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1)), np.zeros((0, 0, 0)))


def _record(tmp_path: Path, onsets: int, *extra: str, before=None, spacing_s: float = 0.15) -> dict:
    """Run sim-rig, call ``before(context, ports)``, show ``onsets`` stimuli ``spacing_s`` apart, and return
    the frames, headers, truth and log."""
    truth = tmp_path / "truth.jsonl"
    process, ports = start_sim_rig(tmp_path, "--neuron", UNIT, "--weights", "random", "--gain", "1000",
                                   "--offset", "80", "--truth-file", str(truth), *extra)
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(ports["data"])
    link = SimRigLink(ports["side"])
    messages: list = []
    try:
        assert sub.poll(10000), "sim-rig publishes nothing"
        if before is not None:
            before(context, ports)
        block = _block(onsets)
        for position in range(onsets):
            link(block, position, time.monotonic())
            _drain(sub, spacing_s, messages)
        _drain(sub, 0.6, messages)
    finally:
        link.close()
        sub.close(0)
        context.term()
        status = stop_sim_rig(process)
    log = (tmp_path / "sim-rig.log").read_text()
    assert status == 0, log
    records = [json.loads(line) for line in truth.read_text().splitlines()]
    return {"frames": messages, "headers": [json.loads(m[1]) for m in messages], "truth": records, "log": log}


def _callbacks(run: dict, channels: int) -> list[dict]:
    """The stream cut into callbacks: each one's events (before its DATA) and its DATA headers, complete ones only."""
    groups: list[dict] = []
    events: list = []
    for frames, header in zip(run["frames"], run["headers"]):
        if header["type"] == "data":
            if groups and not events and groups[-1]["data"][0]["content"]["sample_num"] == \
                    header["content"]["sample_num"]:
                groups[-1]["data"].append(header)
            else:
                groups.append({"events": events, "data": [header]})
                events = []
        else:
            events.append((frames, header))
    complete = [g for g in groups[1:] if len(g["data"]) == channels]  # the first may be joined halfway
    for g in complete:
        content = g["data"][0]["content"]
        g["start"], g["stop"] = content["sample_num"], content["sample_num"] + content["num_samples"]
    return complete


def _ttl(frames: list[bytes], header: dict) -> tuple[int, int, int, int]:
    line, state, word = TTL.unpack(frames[2])
    return header["content"]["sample_num"], line, state, word


# --------------------------------------------------------------------------- JUCE JSON


def test_juce_json_writes_what_juce_writes():
    header = data_header(7, "example", 3, "CH4", 697, 1393, 30000.0, 1700000000123)
    assert juce_json.dumps(header) == (
        '{\r\n  "message_num": 7,\r\n  "type": "data",\r\n  "content": {\r\n    "stream": "example",\r\n'
        '    "channel_num": 3,\r\n    "channel_name": "CH4",\r\n    "num_samples": 697,\r\n'
        '    "sample_num": 1393,\r\n    "sample_rate": 30000.0\r\n  },\r\n  "data_size": 2788,\r\n'
        '  "timestamp": 1700000000123\r\n}')
    assert juce_json.dumps({"threshold": [-30.0], "none": [], "empty": {}}) == \
        '{\r\n  "threshold": [\r\n    -30.0\r\n  ],\r\n  "none": [],\r\n  "empty": {\r\n  }\r\n}'
    # serialiseDouble (d, 15): scientific outside [1e-5, 1e6), %.1f for integral values, else %.15f, shortened.
    cases = {1e7: "1.0e7", 12345678901.0: "1.2345678901e10", 0.0: "0.0", 1.5e-6: "1.5e-6", 364.0: "364.0",
             0.5: "0.5", -30.0: "-30.0", float(np.float32(30000.1)): "30000.099609375", math.inf: "null",
             math.nan: "null"}
    for value, text in cases.items():
        assert juce_json.dumps(value) == text, value
    assert juce_json.dumps('a"b\\c\n\x01/é') == '"a\\"b\\\\c\\n\\u0001/é"'
    assert juce_json.dumps([True, None, 3]) == "[\r\n  true,\r\n  null,\r\n  3\r\n]"


@pytest.mark.parametrize("style", ["juce", "compact"])
def test_header_templates_are_byte_identical_to_the_serializer(style):
    pub = OpenEphysPublisher("127.0.0.1", 0, header_style=style)
    try:
        render = juce_json.dumps if style == "juce" else json.dumps
        selected = pub.continuous("probe A", [(0, "CH1"), (41, "AP 42 %d \"x\"")], 30000.0)
        rng = np.random.default_rng(0)
        for _ in range(200):
            message_num, samples, sample_num, stamp = (int(v) for v in rng.integers(0, 2**40, 4))
            samples %= 5000
            for (num, name), template in zip(selected.channels, selected.templates):
                header = data_header(message_num, "probe A", num, name, samples, sample_num, 30000.0, stamp)
                text = template % (message_num, samples, sample_num, 4 * samples, stamp)
                assert text == render(header).encode()
                parsed = json.loads(text)
                assert parsed["content"] == {"stream": "probe A", "channel_num": num, "channel_name": name,
                                             "num_samples": samples, "sample_num": sample_num,
                                             "sample_rate": 30000.0}
                assert (parsed["message_num"], parsed["data_size"], parsed["timestamp"]) == \
                    (message_num, 4 * samples, stamp)
        if style == "compact":  # compact stays what the wire module writes
            msg = DataMessage(5, "probe A", 0, "CH1", 100, 30000.0, np.zeros(697, np.float32), 123)
            assert selected.templates[0] % (5, 697, 100, 4 * 697, 123) == format_data(msg)[1]
    finally:
        pub.close()


def test_publisher_numbers_messages_from_one():
    pub = OpenEphysPublisher("127.0.0.1", 0)
    try:
        assert pub.next_message_num() == 1 and pub.next_message_num() == 2
        pub.restart()
        assert pub.next_message_num() == 1
    finally:
        pub.close()


# --------------------------------------------------------------------------- side channel


def _onset_frames(header: dict, payload: bytes | None = None) -> list[bytes]:
    base = {"stimulus_id": "a", "block": 0, "position": 0, "onset_time": 1.0, "clock": "c", "monotonic": 2.0,
            "shape": [3, 2, 2], "dtype": "float32"}
    base.update(header)
    body = json.dumps(base).encode()
    return [ONSET, body, payload if payload is not None else np.zeros(12, np.float32).tobytes()]


HOSTILE = {
    "monotonic": _onset_frames({"monotonic": math.inf}),
    "onset_time": _onset_frames({"onset_time": math.nan}),
    "shape": _onset_frames({"shape": [3, 100000, 10000]}),
    "stimulus_id": _onset_frames({"stimulus_id": ["x"]}),
    "image": _onset_frames({}, np.full(12, np.nan, np.float32).tobytes()),
    "3 frames": [ONSET, b"{}"],
    "UTF-8": [ONSET, b"\xff\xfe{", b""],
    "nested": [FAULT, b"[" * 100000 + b"]" * 100000],
    "value": [FAULT, b'{"kind": "jitter", "at_onset": 1, "value": "abc"}'],
    "jitter": [FAULT, b'{"kind": "jitter", "at_onset": 1, "value": Infinity}'],
    "at_onset": [FAULT, b'{"kind": "drop", "at_onset": -1}'],
    "kind": [FAULT, b'{"kind": 5}'],
    "JSON": [FAULT, b'{"kind": "drop", "at_onset": ' + b"1" * 5000 + b"}"],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_side_channel_messages_raise_value_error_naming_the_field(name):
    frames = HOSTILE[name]
    with pytest.raises(ValueError, match=name.split()[-1] if name != "nested" else "nested"):
        (parse_onset if frames[0] == ONSET else parse_fault)(frames)


def test_fault_values_are_validated():
    assert FaultRequest("silent", 2, math.inf).value == math.inf  # for good
    for kind, value in (("jitter", math.inf), ("jitter", math.nan), ("jitter", 1e4), ("silent", 0.0),
                        ("silent", -1.0), ("drop", 3.0), ("jitter", "abc"), ("jitter", True)):
        with pytest.raises(ValueError, match="value"):
            FaultRequest(kind, 1, value)
    notice = OnsetNotice("a", 0, 1, 1.5, "c", 2.5, np.ones((3, 4, 5), np.float32))
    back = parse_onset(format_onset(notice))
    assert (back.stimulus_id, back.position, back.monotonic, back.image.shape) == ("a", 1, 2.5, (3, 4, 5))
    assert parse_fault(format_fault(FaultRequest("jitter", 4, -40.0))) == FaultRequest("jitter", 4, -40.0)


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                       st.text(max_size=8))
_json = st.recursive(_json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                     max_leaves=12)
_fields = st.fixed_dictionaries({}, optional={
    "stimulus_id": _json, "block": _json, "position": _json, "onset_time": _json, "clock": _json,
    "monotonic": _json, "dtype": _json, "kind": st.one_of(st.sampled_from(["drop", "jitter", "silent"]), _json),
    "at_onset": _json, "value": _json,
    "shape": st.one_of(_json, st.lists(st.integers(-5, 10**10), min_size=0, max_size=4))})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelope=st.sampled_from([ONSET, FAULT, b"other"]), body=_fields, raw=st.binary(max_size=64),
       payload=st.binary(max_size=96), use_raw=st.booleans(), extra=st.integers(0, 2))
def test_fuzzed_side_channel_frames_parse_or_raise_value_error(envelope, body, raw, payload, use_raw, extra):
    header = raw if use_raw else json.dumps(body).encode()
    frames = [envelope, header, payload, b""][:1 + extra + (envelope == ONSET)]
    for parse in (parse_onset, parse_fault):
        try:
            parse(frames)
        except ValueError:
            pass


# --------------------------------------------------------------------------- the process


@pytest.mark.timeout(120)
def test_sim_rig_process_speaks_the_exact_wire_format(tmp_path):
    def heartbeats(context, ports):
        req = _connect(context, zmq.REQ, ports["heartbeat"])
        try:
            for request, reply in ((format_heartbeat("test", "abc"), HEARTBEAT_REPLY),  # the plugin's three answers
                                   (b'{"type": "event", "event": {}}', b"message correctly parsed"),
                                   (b"not json", b"JSON message could not be read")):
                req.send(request)
                assert req.poll(5000) and req.recv() == reply
        finally:
            req.close()

    run = _record(tmp_path, 3, "--fault", "restart@0", "--fault", "missing-ttl@1", before=heartbeats, spacing_s=0.3)
    messages, headers = run["frames"], run["headers"]
    assert "faults applied [('restart', 0), ('missing-ttl', 1)]" in run["log"]
    assert [r["epoch"] for r in run["truth"] if r["type"] in ("onset", "restart")] == [0, 1, 1, 1]

    assert messages and all(len(m) == 3 for m in messages)  # TTLs, spikes and data all carry a payload
    assert {m[0] for m in messages} <= {DATA_ENVELOPE, EVENT_ENVELOPE}
    numbers = [h["message_num"] for h in headers]
    restart = numbers.index(1)  # the restart: counters begin again at 1 ...
    assert restart > 0
    for epoch in (numbers[:restart], numbers[restart:]):
        assert epoch == list(range(epoch[0], epoch[0] + len(epoch)))  # ... and otherwise never skip
    first_data = next(h for h in headers[restart:] if h["type"] == "data")
    assert first_data["content"]["sample_num"] == 0  # ... and so does the sample clock
    # Callbacks of 1024 samples at 44.1 kHz: 696.6 samples at 30 kHz, so 697 or 696.
    assert first_data["content"]["sample_rate"] == 30000.0 and first_data["data_size"] == 4 * 697
    # Events of a callback go out before its data message: data ends are watermarks, except for spikes
    # in a callback's last 100 samples, which the Spike Detector sends one callback late.
    watermark = 0
    for header in headers[restart:]:
        if header["type"] == "data":
            watermark = header["content"]["sample_num"] + header["content"]["num_samples"]
        elif header["type"] == "spike":
            assert header["spike"]["sample_num"] >= watermark - LATE_SPIKE_SAMPLES
        else:
            assert header["content"]["sample_num"] >= watermark
    ttl_edges = [_ttl(m, h) for m, h in zip(messages, headers) if h["type"] == "event"]
    # A toggling photodiode: onsets 0 and 2 (onset 1's TTL was the injected fault). The patch stayed white
    # through the restart, so onset 2 is a falling edge.
    assert [(line, state, word) for _, line, state, word in ttl_edges] == [(0, 1, 1), (0, 0, 0)]
    spikes = [h["spike"] for h in headers if h["type"] == "spike"]
    assert {s["electrode"] for s in spikes} == {"Electrode 1"} and {s["sorted_id"] for s in spikes} == {0, 1}


@pytest.fixture(scope="module")
def eight_channels(tmp_path_factory) -> dict:
    """Sim-rig with 8 continuous channels, a toggling photodiode (line 0), 20 ms display latency and a 5 Hz sync
    line (2), shown 8 stimuli."""
    run = _record(tmp_path_factory.mktemp("eight"), 8, "--channels", "8", "--sync-line", "2", "--sync-hz", "5")
    run["callbacks"] = _callbacks(run, 8)
    return run


def test_headers_are_juce_pretty_with_crlf(eight_channels):
    kinds = Counter()
    for frames, header in zip(eight_channels["frames"], eight_channels["headers"]):
        text = frames[1].decode("utf-8")
        assert text.startswith('{\r\n  "message_num": ') and text.endswith("\r\n}")
        assert "\n" not in text.replace("\r\n", "")
        assert text == juce_json.dumps(header)  # byte for byte what JUCE writes for these values
        kinds[header["type"]] += 1
        if header["type"] == "data":
            assert list(header) == ["message_num", "type", "content", "data_size", "timestamp"]
            assert list(header["content"]) == ["stream", "channel_num", "channel_name", "num_samples",
                                               "sample_num", "sample_rate"]
            assert '"sample_rate": 30000.0' in text and header["data_size"] == len(frames[2])
        elif header["type"] == "event":
            assert list(header) == ["message_num", "type", "content", "data_size", "timestamp"]
            assert header["content"]["type"] == 3 and header["data_size"] == 10 == len(frames[2])
        else:
            assert list(header) == ["message_num", "type", "spike", "timestamp"]
            spike = header["spike"]
            assert list(spike) == ["stream", "source_node", "electrode", "sample_num", "num_channels",
                                   "num_samples", "sorted_id", "threshold"]
            assert len(frames[2]) == 4 * spike["num_channels"] * spike["num_samples"]
        assert abs(header["timestamp"] / 1000 - time.time()) < 120  # the wall clock, in ms
    assert kinds["data"] and kinds["event"] and kinds["spike"]


def test_each_callback_is_events_then_one_data_message_per_channel(eight_channels):
    callbacks = eight_channels["callbacks"]
    assert len(callbacks) > 50
    numbers = [h["message_num"] for h in eight_channels["headers"]]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # +1 per message, no gap
    for previous, callback in zip(callbacks, callbacks[1:]):
        assert callback["start"] == previous["stop"]  # contiguous
    for callback in callbacks:
        contents = [h["content"] for h in callback["data"]]
        assert [c["channel_num"] for c in contents] == list(range(8))
        assert [c["channel_name"] for c in contents] == [f"CH{i + 1}" for i in range(8)]
        assert {(c["sample_num"], c["num_samples"]) for c in contents} == \
            {(callback["start"], callback["stop"] - callback["start"])}
        assert callback["stop"] - callback["start"] in (696, 697)  # 1024 / 44.1 kHz at 30 kHz


def test_events_come_in_the_guis_event_buffer_order_and_late_spikes_one_callback_late(eight_channels):
    late = 0
    for callback in eight_channels["callbacks"]:
        start, stop = callback["start"], callback["stop"]
        order = []
        for frames, header in callback["events"]:
            if header["type"] == "spike":
                sample = header["spike"]["sample_num"]
                # Sent in the first callback that scans past it: 100 samples before a buffer's end.
                assert start - LATE_SPIKE_SAMPLES <= sample < stop - LATE_SPIKE_SAMPLES
                late += sample < start
                order.append((1, header["spike"]["electrode"], sample))
            else:
                sample = header["content"]["sample_num"]
                assert start <= sample < stop
                order.append((0 if sample == start else 2, "", sample))
        assert order == sorted(order)  # TTLs at the first sample, spikes by electrode, then later TTLs
    assert late > 0


def test_truth_file_agrees_with_the_wire(eight_channels):
    truth = eight_channels["truth"]
    callbacks = eight_channels["callbacks"]
    for previous, callback in zip(callbacks, callbacks[1:]):  # callbacks whose whole batch was seen
        start, stop = callback["start"], callback["stop"]
        wire_spikes = Counter((h["spike"]["electrode"], h["spike"]["sorted_id"], h["spike"]["sample_num"])
                              for _, h in callback["events"] if h["type"] == "spike")
        true_spikes = Counter((r["electrode"], r["unit"], r["sample"]) for r in truth
                              if r["type"] == "spike" and r["sent"] and r["epoch"] == 0
                              and start - LATE_SPIKE_SAMPLES <= r["sample"] < stop - LATE_SPIKE_SAMPLES)
        assert wire_spikes == true_spikes
        wire_ttls = sorted(_ttl(f, h)[:3] for f, h in callback["events"] if h["type"] == "event")
        true_ttls = sorted((r["sample"], r["line"], r["state"]) for r in truth
                           if r["type"] == "ttl" and r["sent"] and start <= r["sample"] < stop)
        assert wire_ttls == true_ttls
    onsets = [r for r in truth if r["type"] == "onset"]
    assert [r["index"] for r in onsets] == list(range(8)) and all(r["epoch"] == 0 for r in onsets)
    assert [r["stimulus_id"] for r in onsets] == [f"s{i}" for i in range(8)]
    edges = {_ttl(f, h)[:3] for f, h in zip(eight_channels["frames"], eight_channels["headers"])
             if h["type"] == "event"}
    for onset in onsets:  # every onset's edge is on the wire where the truth says
        assert (onset["ttl_sample"], 0, int(onset["edge"] == "rising")) in edges


def test_toggling_photodiode_display_latency_and_sync_line(eight_channels):
    onsets = [r for r in eight_channels["truth"] if r["type"] == "onset"]
    assert [r["edge"] for r in onsets] == ["rising", "falling"] * 4  # the patch flips at each onset
    for onset in onsets:
        assert onset["ttl_sample"] - onset["onset_sample"] == round(0.020 * RATE)  # 20 ms of display latency
    ttls = [_ttl(f, h) for f, h in zip(eight_channels["frames"], eight_channels["headers"]) if h["type"] == "event"]
    assert {line for _, line, _, _ in ttls} == {0, 2}
    for sample, line, state, word in ttls:
        assert (word >> line) & 1 == state and word & ~0b101 == 0  # the word holds every line's level
    photodiode = [state for _, line, state, _ in ttls if line == 0]
    assert photodiode == [1, 0] * 4
    sync = [(sample, state) for sample, line, state, _ in ttls if line == 2]
    assert len(sync) >= 10 and [s for _, s in sync] == [1, 0] * (len(sync) // 2) + [1] * (len(sync) % 2)
    rises = [sample for sample, state in sync if state == 1]
    falls = [sample for sample, state in sync if state == 0]
    assert all(abs(f - r - round(0.010 * RATE)) <= 1 for r, f in zip(rises, falls))  # 10 ms pulses
    assert all(abs(b - a - RATE / 5) <= 1 for a, b in zip(rises, rises[1:]))  # at 5 Hz


@pytest.mark.timeout(120)
def test_sim_rig_survives_hostile_side_channel_messages_and_pulses(tmp_path):
    def attack(context, ports):
        push = _connect(context, zmq.PUSH, ports["side"])
        for frames in HOSTILE.values():
            push.send_multipart(frames)
        push.send_multipart([b"hello"])
        push.close()
        time.sleep(0.3)

    run = _record(tmp_path, 3, "--photodiode", "pulse", "--display-latency-ms", "50", "--ttl-pulse-ms", "10",
                  before=attack)
    assert f"bad side-channel messages {len(HOSTILE) + 1}" in run["log"], run["log"]
    assert "monotonic" in run["log"] and "Traceback" not in run["log"]
    onsets = [r for r in run["truth"] if r["type"] == "onset"]
    assert len(onsets) == 3 and all(r["edge"] == "rising" for r in onsets)
    ttls = [_ttl(f, h) for f, h in zip(run["frames"], run["headers"]) if h["type"] == "event"]
    assert [(line, state) for _, line, state, _ in ttls] == [(0, 1), (0, 0)] * 3
    for onset, (rise, fall) in zip(onsets, zip(ttls[::2], ttls[1::2])):
        assert rise[0] == onset["ttl_sample"] == onset["onset_sample"] + round(0.050 * RATE)
        assert fall[0] - rise[0] == round(0.010 * RATE)
    assert any(h["type"] == "spike" for h in run["headers"])


def test_bad_fault_option_is_a_usage_error(tmp_path, capsys):
    from rig.cli import EXIT_USAGE, main

    assert main(["sim-rig", "--neuron", UNIT, "--weights", "random", "--fault", "explode@3",
                 "--data-port", "0", "--duration", "0.1"]) == EXIT_USAGE
    assert "fault kind 'explode' is unknown" in capsys.readouterr().err
