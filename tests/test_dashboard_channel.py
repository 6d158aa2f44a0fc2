"""The dashboard's control channel and security, without a browser: requests checked and refused by field, the
controller's side (pause held until resume, refusals recorded, nothing taken twice), controls kept across a
stop and a resume, and a viewer off loopback that shows nothing without its token (a real socket)."""
from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request

import h5py
import pytest
import torch

from helpers.protocols import tiny_protocol
from helpers.sessions import new_writer, write_blocks
from protocols.screening import Screening
from rig.behavior.operator import Operator
from rig.dashboard.channel import ControlChannel, ControlRequest, post_request, requests_path
from rig.session import SessionWriter, read_session


class _Protocol:
    generations = 4


@pytest.mark.parametrize("kind, value, field", [
    ("launch", None, "kind 'launch' is not a control"),
    ("extend", 0, "value: extend takes a whole number"),
    ("extend", True, "value: extend takes a whole number"),
    ("note", "   ", "value: a note is text"),
    ("stop", 3, "value: stop takes no value"),
])
def test_bad_requests_are_refused_naming_the_field(kind, value, field):
    with pytest.raises(ValueError, match=field):
        ControlRequest.make(kind, value, "abc")


def test_the_controller_applies_records_and_refuses(tmp_path):
    writer = new_writer(tmp_path / "s.h5")
    write_blocks(writer, 1)
    sid = writer.session_id
    other = ControlRequest.make("stop", None, "another-session")
    post_request(writer.path, other)  # left beside by an earlier session of the same name: passed over
    operator = Operator()
    channel = ControlChannel(writer.path, sid, operator=operator, reward_poll_s=0.02, taken={"old"})
    for request in (ControlRequest("stop", None, sid, "old", "t"), ControlRequest.make("note", "monkey sleepy", sid),
                    ControlRequest.make("extend", 100_000, sid), ControlRequest.make("extend", 3, sid),
                    ControlRequest.make("reward", None, sid)):
        post_request(writer.path, request)
    with open(requests_path(writer.path), "a") as f:
        f.write("{not json\n")
    time.sleep(0.1)
    assert operator.take() == ["reward"]  # passed on between blocks' checks, for the trial runner
    protocol = _Protocol()
    assert channel.between_blocks(protocol, writer, 1) is False
    assert protocol.generations == 7
    # A pause holds the loop here until resume arrives.
    post_request(writer.path, ControlRequest.make("pause", None, sid))
    threading.Timer(0.3, lambda: post_request(writer.path, ControlRequest.make("resume", None, sid))).start()
    started = time.monotonic()
    assert channel.between_blocks(protocol, writer, 1) is False
    assert time.monotonic() - started >= 0.25
    channel.close()
    writer.finish("stopped")

    recorded = read_session(writer.path)
    controls = recorded.controls
    outcomes = [(c["kind"], c["outcome"].split(":")[0]) for c in controls]
    assert outcomes == [("note", "applied"), ("extend", "refused"), ("extend", "applied"), ("reward", "applied"),
                        ("invalid", "refused"), ("pause", "applied"), ("resume", "applied")]
    assert [c["number"] for c in controls] == list(range(7))
    assert controls[0]["value"] == "monkey sleepy" and controls[0]["after_block"] == 0
    assert recorded.extended_by == 3

    # A resumed session keeps them, numbers on, and takes none of them again.
    again = SessionWriter.reopen(writer.path)
    channel = ControlChannel(writer.path, sid, taken={"old"} | {c["request_id"] for c in controls})
    post_request(writer.path, ControlRequest.make("stop", None, sid))
    assert channel.between_blocks(protocol, again, 1) is True
    again.finish("stopped")
    with h5py.File(writer.path, "r") as f:  # merged into the master's attribute
        controls = json.loads(f.attrs["controls"])
    assert [c["kind"] for c in controls[-2:]] == ["resume", "stop"] and controls[-1]["number"] == 7


def test_reward_without_a_reward_output_is_refused(tmp_path):
    writer = new_writer(tmp_path / "s.h5")
    channel = ControlChannel(writer.path, writer.session_id)
    post_request(writer.path, ControlRequest.make("reward", None, writer.session_id))
    channel.between_blocks(_Protocol(), writer, 0)
    writer.finish()
    [control] = read_session(writer.path).controls
    assert control["outcome"] == "refused: this session has no reward output" and control["after_block"] == -1


def test_extend_on_a_screening_is_refused_and_the_run_goes_on(tmp_path):
    """A screening's block count follows from its image set (a property with no setter): an extend from the
    viewer is refused, where it raised AttributeError and ended the run as failed."""
    writer = new_writer(tmp_path / "s.h5")
    channel = ControlChannel(writer.path, writer.session_id)
    post_request(writer.path, ControlRequest.make("extend", 2, writer.session_id))
    screening = Screening(torch.zeros(2, 3, 4, 4), ["a", "b"], seed=0)
    assert channel.between_blocks(screening, writer, 0) is False
    channel.close()
    writer.finish()
    [control] = read_session(writer.path).controls
    assert control["outcome"] == ("refused: a Screening shows a fixed set of 1 blocks; it has no generation "
                                  "count to extend") and screening.generations == 1


@pytest.mark.timeout(60)
def test_off_loopback_nothing_is_shown_without_the_token(tmp_path):
    import uvicorn

    from rig.dashboard.app import Dashboard
    from rig.dashboard.live import LiveSession
    from rig.dashboard.server import bind

    text = tiny_protocol()
    writer = SessionWriter(tmp_path / "s.h5", protocol_text=text,
                           protocol_sha256=hashlib.sha256(text.encode()).hexdigest(),
                           protocol_path="p.toml", seed=0, provenance={"generations": 4}, reference_ids=["r0", "r1"])
    write_blocks(writer, 1)
    dashboard = Dashboard(LiveSession.open(writer.path), "secret-token", open_view=False)
    sock = bind("0.0.0.0", 0)
    server = uvicorn.Server(uvicorn.Config(dashboard.app(loopback=False), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.02)
        assert server.started
        for path in ("/", "/api/state", "/api/events", "/api/image/0/0/0.png"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path, timeout=10)
            assert refused.value.code == 403, path
        with urllib.request.urlopen(base + "/api/state?token=secret-token", timeout=10) as reply:
            state = json.load(reply)
        assert state["generation"] == 1 and state["generations"] == 4 and state["status"] == "running"
        post = urllib.request.Request(base + "/api/control", data=b'{"kind": "extend", "value": -1}', method="POST",
                                      headers={"X-Rig-Token": "secret-token"})
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(post, timeout=10)
        assert bad.value.code == 400 and "value: extend" in json.load(bad.value)["error"]
    finally:
        server.should_exit = True
        thread.join(10)
        writer.finish()
