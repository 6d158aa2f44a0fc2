"""``rig sim-rig`` as a separate process, checked from the outside with plain ZeroMQ sockets."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq

from protocols.base import Block
from rig.recording.openephys_wire import DATA_ENVELOPE, EVENT_ENVELOPE, HEARTBEAT_REPLY, format_heartbeat
from rig.recording.sidechannel import SimRigLink
from rig.recording.zmq_server import OpenEphysPublisher

ROOT = Path(__file__).resolve().parents[1]
UNIT = "test_cnn:features.7:unit=5"


def start_sim_rig(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, dict]:
    """Start ``rig sim-rig`` on OS-chosen ports; return the process and its endpoints."""
    ready = tmp_path / "sim-rig.json"
    log = open(tmp_path / "sim-rig.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "rig.cli", "sim-rig", "--data-port", "0", "--side-port", "0",
         "--ready-file", str(ready), *extra],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"sim-rig did not start: {(tmp_path / 'sim-rig.log').read_text()}")
        time.sleep(0.05)
    time.sleep(0.05)  # the file is written in one call; give it a moment to be complete
    return process, json.loads(ready.read_text())


def stop_sim_rig(process: subprocess.Popen) -> int:
    """SIGTERM, then wait; returns the exit status."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        return -9


def test_publisher_numbers_messages_from_one():
    pub = OpenEphysPublisher("127.0.0.1", 0)
    try:
        assert pub.next_message_num() == 1 and pub.next_message_num() == 2
        pub.restart()
        assert pub.next_message_num() == 1
    finally:
        pub.close()


@pytest.mark.timeout(120)
def test_sim_rig_process_speaks_the_exact_wire_format(tmp_path):
    process, ports = start_sim_rig(tmp_path, "--neuron", UNIT, "--weights", "random", "--gain", "1000",
                                   "--offset", "80", "--fault", "restart@0", "--fault", "missing-ttl@1")
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(ports["data"])
    req = context.socket(zmq.REQ)
    req.connect(ports["heartbeat"])
    link = SimRigLink(ports["side"])
    try:
        req.send(format_heartbeat("test", "abc"))
        assert req.poll(5000) and req.recv() == HEARTBEAT_REPLY
        sub.poll(5000)
        block = Block(0, ["a", "b", "c"], ["reference"] * 3, -np.ones(3), -np.ones(3), torch.rand(3, 3, 16, 16),
                      np.zeros((0, 0, 0)))
        messages, sent_at = [], []
        for position in range(3):
            link(block, position, time.monotonic())
            sent_at.append(time.monotonic())
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                if sub.poll(10):
                    messages.append(sub.recv_multipart())
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            if sub.poll(10):
                messages.append(sub.recv_multipart())
    finally:
        link.close()
        sub.close(0)
        req.close(0)
        context.term()
        status = stop_sim_rig(process)
    log = (tmp_path / "sim-rig.log").read_text()
    assert status == 0, log
    assert "faults applied [('restart', 0), ('missing-ttl', 1)]" in log

    assert messages and all(len(m) == 3 for m in messages)  # TTLs, spikes and data all carry a payload
    assert {m[0] for m in messages} <= {DATA_ENVELOPE, EVENT_ENVELOPE}
    headers = [json.loads(m[1]) for m in messages]
    numbers = [h["message_num"] for h in headers]
    restart = numbers.index(1)  # the restart: counters begin again at 1 ...
    assert restart > 0
    for run in (numbers[:restart], numbers[restart:]):
        assert run == list(range(run[0], run[0] + len(run)))  # ... and otherwise never skip
    first_data = next(h for h in headers[restart:] if h["type"] == "data")
    assert first_data["content"]["sample_num"] == 0  # ... and so does the sample clock
    assert first_data["content"]["sample_rate"] == 30000.0 and first_data["data_size"] == 4 * 300
    # Events and spikes of a processing block go out before its data message: data ends are watermarks.
    watermark = 0
    for header in headers[restart:]:
        if header["type"] == "data":
            watermark = header["content"]["sample_num"] + header["content"]["num_samples"]
        else:
            assert (header.get("content") or header["spike"])["sample_num"] >= watermark
    ttl_on = [m for m, h in zip(messages, headers) if h["type"] == "event" and m[2][:2] == b"\x00\x01"]
    assert len(ttl_on) == 2  # onsets 0 and 2; onset 1's TTL was the injected fault
    spikes = [h["spike"] for h in headers if h["type"] == "spike"]
    assert {s["electrode"] for s in spikes} == {"Electrode 1"} and {s["sorted_id"] for s in spikes} == {0, 1}


def test_bad_fault_option_is_a_usage_error(tmp_path, capsys):
    from rig.cli import EXIT_USAGE, main

    assert main(["sim-rig", "--neuron", UNIT, "--weights", "random", "--fault", "explode@3",
                 "--data-port", "0", "--duration", "0.1"]) == EXIT_USAGE
    assert "fault kind 'explode' is unknown" in capsys.readouterr().err
