"""Open Ephys GUI control (HTTP API) and trial markers (NetworkEvents), client against double over loopback.

The doubles (rig/recording/openephys/gui_double.py) are written from the GUI's and the plugin's source; the
first tests pin their answers to what that source says, the rest run the clients against them.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import zmq

from protocols.spec import ProtocolError, parse_protocol
from rig.recording.openephys.control import (DEFAULT_LINES, GuiControl, GuiError, OpenEphysOptions, base_text_for,
                                             block_text, parse_gui_url)
from rig.recording.openephys.events import MarkerSender, parse_ttl_reply, ttl_command
from rig.recording.openephys.gui_double import GuiDouble, GuiState, NetworkEventsDouble, juce_int

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def state(tmp_path: Path) -> GuiState:
    return GuiState(tmp_path)


@pytest.fixture
def gui(state: GuiState):
    with GuiDouble(state) as double:
        yield double


@pytest.fixture
def plugin(state: GuiState):
    with NetworkEventsDouble(state) as double:
        yield double


def ask(double: GuiDouble, method: str, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(double.host, double.port, timeout=2)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def request(endpoint: str, text: str) -> str:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 2000)
    sock.connect(endpoint)
    try:
        sock.send_string(text)
        return sock.recv_string()
    finally:
        sock.close()


def wait_for(condition, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# -- the doubles answer as the source says ------------------------------------------------------------------


def test_gui_double_answers_in_the_api_shapes(gui: GuiDouble) -> None:
    assert ask(gui, "GET", "/api/status") == (200, "application/json", b'{"mode":"IDLE"}')
    status, kind, body = ask(gui, "PUT", "/api/status", b"not json")
    assert (status, kind) == (400, "text/plain") and body.startswith(b"[json.exception.parse_error.101]")
    status, kind, body = ask(gui, "PUT", "/api/status", b'{"state": "RECORD"}')
    assert (status, body) == (400, b"[json.exception.type_error.302] type must be string, but is null")
    assert ask(gui, "GET", "/api/nothing") == (404, "", b"")
    assert ask(gui, "POST", "/api/status", b"{}")[0] == 404
    # Keys sorted, no spaces, every field of recording_info_to_json and record_node_to_json.
    status, _, body = ask(gui, "PUT", "/api/recording", b'{"base_text": "a.b", "prepend_text": "x/y"}')
    info = json.loads(body)
    assert status == 200 and body == json.dumps(info, sort_keys=True, separators=(",", ":")).encode()
    assert set(info) == {"parent_directory", "base_text", "prepend_text", "append_text", "default_record_engine",
                         "record_nodes"}
    assert set(info["record_nodes"][0]) == {"node_id", "parent_directory", "record_engine", "experiment_number",
                                            "recording_number", "is_synchronized"}
    assert info["base_text"] != "a.b" and info["prepend_text"] == ""  # refused silently, as the GUI does
    assert json.loads(ask(gui, "PUT", "/api/message", b'{"text": "hello"}')[2]) == {"mode": "IDLE"}
    assert "<VERSION>1.0.1</VERSION>" in json.loads(ask(gui, "GET", "/api/config")[2])["info"]


def test_gui_double_mode_changes_follow_the_control_panel(gui: GuiDouble, state: GuiState) -> None:
    assert json.loads(ask(gui, "PUT", "/api/status", b'{"mode": "RECORD"}')[2]) == {"mode": "RECORD"}
    assert json.loads(ask(gui, "PUT", "/api/status", b'{"mode": "ACQUIRE"}')[2]) == {"mode": "ACQUIRE"}
    assert json.loads(ask(gui, "PUT", "/api/status", b'{"mode": "PAUSE"}')[2]) == {"mode": "ACQUIRE"}
    assert json.loads(ask(gui, "PUT", "/api/status", b'{"mode": "IDLE"}')[2]) == {"mode": "IDLE"}
    assert [mode for _, mode in state.transitions] == ["ACQUIRE", "RECORD", "ACQUIRE", "IDLE"]
    node = json.loads(ask(gui, "GET", "/api/recording")[2])["record_nodes"][0]
    assert (node["experiment_number"], node["recording_number"]) == (2, 0)  # an acquisition that recorded


def test_network_events_double_answers_as_the_plugin(plugin: NetworkEventsDouble, state: GuiState) -> None:
    replies = {text: plugin.handle(text) for text in (
        "TTL Line=3 State=1", "ttl line=3 state=5", "TTL Line=0 State=1", "TTL Line=257 State=1", "TTL Line=abc",
        "TTL", "TTL Channel=2 On=1", "TTL Line=2 State=1 Kind=stimulus_onset Trial=4", "Hello", "IsAcquiring")}
    assert replies == {
        "TTL Line=3 State=1": "TTLHandled: Line=3 State=1", "ttl line=3 state=5": "TTLHandled: Line=3 State=1",
        "TTL Line=0 State=1": "InvalidChannel", "TTL Line=257 State=1": "InvalidChannel",
        "TTL Line=abc": "InvalidChannel", "TTL": "TTLHandled: Line=1 State=0",
        "TTL Channel=2 On=1": "TTLHandled: Line=1 State=0",  # a pre-0.2.1 command, read by 0.2.1
        "TTL Line=2 State=1 Kind=stimulus_onset Trial=4": "TTLHandled: Line=2 State=1",
        "Hello": "NotHandled", "IsAcquiring": "0"}
    assert not any(c.recorded for c in plugin.ttl)  # not acquiring: answered, not recorded
    assert request(plugin.endpoint, "StartRecord") == "StartedRecording"
    assert request(plugin.endpoint, "StartRecord") == "NotHandled"  # already recording: falls through
    assert request(plugin.endpoint, "IsRecording") == "1" and state.mode == "RECORD"
    assert request(plugin.endpoint, "StopAcquisition") == "StoppedAcquisition" and state.mode == "IDLE"
    assert (juce_int(" -12x"), juce_int("+5"), juce_int("")) == (-12, 0, 0)


def test_commands_and_replies_round_trip() -> None:
    assert ttl_command(3, 1) == "TTL Line=3 State=1"
    assert ttl_command(3, 0, {"Kind": "break", "Trial": "a b"}) == "TTL Line=3 State=0 Kind=break Trial=a_b"
    assert parse_ttl_reply("TTLHandled: Line=3 State=1") == (3, 1)
    assert parse_ttl_reply("TTLHandled: Channel=3 on=1") is None and parse_ttl_reply("InvalidChannel") is None
    assert base_text_for("demo.v2/session 3") == "demo_v2_session_3"
    assert base_text_for("...") == "rig_session" and base_text_for("auto") == "rig_auto"
    assert block_text(12, 30, "NAME") == "rig block 12 of 30 (session NAME)"
    assert parse_gui_url("http://10.0.0.2:37497") == ("10.0.0.2", 37497) == parse_gui_url("10.0.0.2")
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        parse_gui_url("zmq://10.0.0.2:5556")


# -- recording control ------------------------------------------------------------------------------------


def test_start_names_the_recording_and_stop_ends_it(gui: GuiDouble, state: GuiState) -> None:
    control = GuiControl(gui.url)
    assert control.check()["mode"] == "IDLE" and control.gui_version == "1.0.1"
    info = control.start("monkey-B 2026.05.01")
    assert info["base_text"] == state.base_text == "monkey-B_2026_05_01"
    assert state.mode == "RECORD"
    for number in (1, 2, 3):
        assert control.block(number, 3)
    assert control.stop() and state.mode == "IDLE"
    requests = len(gui.requests)
    assert control.stop() and len(gui.requests) == requests  # idempotent: nothing sent again
    assert [mode for _, mode in state.transitions] == ["ACQUIRE", "RECORD", "ACQUIRE", "IDLE"]
    assert [(text, mode) for _, text, mode in state.messages] == [
        (f"rig block {n} of 3 (session monkey-B 2026.05.01)", "RECORD") for n in (1, 2, 3)]
    described = control.describe()
    json.dumps(described)
    assert described["base_text"] == "monkey-B_2026_05_01" and described["messages"]["sent"] == 3
    assert described["mode_before"] == "IDLE" and described["mode_after_stop"] == "IDLE"
    assert Path(described["record_nodes"][0]["directory_hint"]) == state.recording_folders[0]
    assert state.recording_folders[0].is_dir()


def test_stop_returns_to_acquiring_when_the_gui_was_acquiring(gui: GuiDouble, state: GuiState) -> None:
    state.start_acquisition()
    with GuiControl(gui.url) as control:
        control.start("s1")
    assert state.mode == "ACQUIRE" and control.mode_after_stop == "ACQUIRE"


def test_start_refuses_a_gui_already_recording_or_unable_to_record(tmp_path: Path) -> None:
    busy = GuiState(tmp_path)
    busy.start_recording()
    with GuiDouble(busy) as gui, pytest.raises(GuiError, match="already recording"):
        GuiControl(gui.url).start("s")
    with GuiDouble(GuiState(tmp_path, record_nodes=())) as gui, pytest.raises(GuiError, match="no Record Node"):
        GuiControl(gui.url).check()
    stuck = GuiState(tmp_path, acquisition_fails=True)
    with GuiDouble(stuck) as gui:
        control = GuiControl(gui.url, timeout_s=0.2)
        with pytest.raises(GuiError, match="did not start acquisition"):
            control.start("s")
        assert control.stop() and stuck.mode == "IDLE"


class _Silent:
    """A TCP port that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_check_fails_quickly_and_says_what_to_check(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(GuiError) as refused:
        GuiControl(url, timeout_s=0.3).check()
    assert time.monotonic() - began < 1.0
    assert url in str(refused.value) and "Enable HTTP Server" in str(refused.value) and "port" in str(refused.value)

    silent = _Silent()
    try:
        began = time.monotonic()
        with pytest.raises(GuiError, match="no answer within 0.3 s") as mute:
            GuiControl(f"http://127.0.0.1:{silent.port}", timeout_s=0.3).check()
        assert time.monotonic() - began < 1.0 and f"127.0.0.1:{silent.port}" in str(mute.value)
    finally:
        silent.close()

    class Html(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>a router</html>")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(GuiError, match="not the Open Ephys GUI's JSON"):
            GuiControl(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=0.3).check()
    finally:
        server.shutdown()
        server.server_close()


def test_messages_and_stop_never_fail_the_session(tmp_path: Path) -> None:
    state = GuiState(tmp_path, version=None)  # a GUI before 1.0: no /api/config
    gui = GuiDouble(state)
    control = GuiControl(gui.url, message_timeout_s=0.1)
    control.start("s")
    assert control.gui_version is None
    gui.delay_s = 0.5
    began = time.monotonic()
    assert control.message("late") is False
    assert time.monotonic() - began < 0.4
    gui.delay_s = 0.0
    gui.close()
    assert control.block(2, 3) is False
    assert control.stop() is False and control.stop_errors  # the GUI is gone: kept, not raised
    described = control.describe()
    assert described["messages"]["failed"] == 2 and "refused" in described["messages"]["last_error"]
    assert described["stop_errors"]


# -- markers ----------------------------------------------------------------------------------------------


def test_markers_arrive_in_order_as_pulses(gui: GuiDouble, plugin: NetworkEventsDouble, state: GuiState) -> None:
    control = GuiControl(gui.url)
    control.start("markers")
    sender = MarkerSender("127.0.0.1", events_port=plugin.port, pulse_ms=15)
    assert sender.check() is True
    kinds = ["trial_start", "fixation_acquired", "scene", "stimulus_onset", "stimulus_onset", "reward", "trial_end",
             "trial_start", "break"]
    for kind in kinds:
        sender(kind, time.monotonic(), {"trial": 1})
        time.sleep(0.03)  # longer than a pulse: each ends before the next begins
    assert sender.flush(3.0)
    sender.close()
    control.stop()
    expected = [(DEFAULT_LINES[k], s) for k in kinds if k in DEFAULT_LINES for s in (1, 0)]
    assert plugin.ttl_events() == expected
    ons = {}
    for command in plugin.ttl:
        if command.state:
            ons[command.line] = command.time
        else:
            assert command.time - ons[command.line] >= 0.015 - 1e-3  # the pulse lasted pulse_ms
    described = sender.describe()
    json.dumps(described)
    assert described["markers"]["received"] == described["markers"]["sent"] == len(expected) // 2
    assert described["requests"]["lost"] == described["requests"]["mismatched"] == 0
    assert described["latency_ms"]["count"] == len(expected)


def test_tags_ride_along_and_the_plugin_ignores_them(plugin: NetworkEventsDouble) -> None:
    with MarkerSender("127.0.0.1", events_port=plugin.port, tags=True, pulse_ms=1) as sender:
        sender("stimulus_onset", 0.0, {"trial": 4, "position": 2})
    texts = [text for _, text in plugin.requests]
    assert texts == ["TTL Line=3 State=1 Kind=stimulus_onset Trial=4", "TTL Line=3 State=0"]
    assert sender.describe()["requests"]["mismatched"] == 0


def test_a_lost_reply_resets_the_socket_and_later_markers_still_arrive(plugin: NetworkEventsDouble) -> None:
    plugin.drop = lambda index, text: index == 0
    with MarkerSender("127.0.0.1", events_port=plugin.port, reply_timeout_ms=100, pulse_ms=1) as sender:
        sender("trial_start", 0.0, {})
        assert wait_for(lambda: sender.lost == 1) and sender.flush(2.0)
        sender("reward", 0.0, {})
    assert [(c.line, c.state) for c in plugin.ttl] == [(2, 0), (4, 1), (4, 0)]  # state 1 of line 2 was dropped
    described = sender.describe()
    assert described["requests"]["lost"] == 1 and described["requests"]["replied"] == 3


def test_a_gui_that_never_replies_never_blocks_the_caller(plugin: NetworkEventsDouble) -> None:
    plugin.drop = True
    sender = MarkerSender("127.0.0.1", events_port=plugin.port, reply_timeout_ms=50, queue=20, stale_ms=200)
    took = []
    for _ in range(300):
        began = time.perf_counter()
        sender("stimulus_onset", 0.0, {"trial": 1})
        took.append(time.perf_counter() - began)
    took.sort()
    # Under 1 ms; the worst call may also wait once for the GIL (Python hands it over every 5 ms).
    assert took[len(took) // 2] < 0.001 and took[int(0.99 * len(took))] < 0.001, f"{took[-5:]}"
    assert took[-1] < 0.006, f"__call__ took {took[-1] * 1000:.3f} ms"
    assert wait_for(lambda: sender.lost >= 2)
    began = time.monotonic()
    sender.close(timeout_s=0.3)
    assert time.monotonic() - began < 1.5
    markers, requests = sender.describe()["markers"], sender.describe()["requests"]
    assert markers["dropped_queue_full"] >= 250 and requests["lost"] == requests["sent"] >= 2
    assert requests["replied"] == 0 and markers["received"] == 300
    sender("trial_start", 0.0, {})
    assert sender.describe()["markers"]["after_close"] == 1


def test_slow_replies_are_counted_with_their_latency(plugin: NetworkEventsDouble) -> None:
    plugin.delay_s = 0.03
    with MarkerSender("127.0.0.1", events_port=plugin.port, slow_ms=10, pulse_ms=1) as sender:
        began = time.perf_counter()
        sender("reward", 0.0, {})
        assert time.perf_counter() - began < 0.001
        assert sender.flush(2.0)
    described = sender.describe()
    assert described["requests"]["slow"] == 2 and described["requests"]["lost"] == 0
    assert described["latency_ms"]["p50"] >= 30.0


def test_replies_of_another_plugin_version_are_counted_as_mismatched(state: GuiState) -> None:
    class Legacy(NetworkEventsDouble):
        """A pre-0.2.1 plugin: ``TTLHandled: Channel=N on=S`` (and it reads Line=/State= as channel 1, off)."""

        def handle(self, text: str) -> str:
            return "TTLHandled: Channel=1 on=0" if text.startswith("TTL") else super().handle(text)

    with Legacy(state) as legacy, MarkerSender("127.0.0.1", events_port=legacy.port, pulse_ms=1) as sender:
        sender("trial_start", 0.0, {})
    assert sender.describe()["requests"]["mismatched"] == 2
    assert "Channel=1" in sender.describe()["requests"]["last_mismatch"]


def test_check_names_the_port_when_nothing_answers() -> None:
    sender = MarkerSender("127.0.0.1", events_port=free_port(), reply_timeout_ms=100)
    try:
        began = time.monotonic()
        with pytest.raises(Exception, match="Network Events plugin") as error:
            sender.check()
        assert time.monotonic() - began < 1.0 and "5556" in str(error.value)
    finally:
        sender.close(timeout_s=0.1)


# -- the [openephys] table --------------------------------------------------------------------------------


def screening(extra: str = "") -> str:
    """A protocol with no generator or optimizer: parsing it imports no model code."""
    return '[protocol]\nkind = "screening"\nseed = 0\n' + extra



def test_openephys_table_is_parsed_and_checked() -> None:
    spec = parse_protocol(screening('[openephys]\nevents_port = 5558\npulse_ms = 20\n'
                                              '[openephys.lines]\ntrial_start = 5\nstimulus_onset = 6\n'))
    assert isinstance(spec.openephys, OpenEphysOptions)
    assert spec.openephys.events_port == 5558 and spec.openephys.lines == {"trial_start": 5, "stimulus_onset": 6}
    assert parse_protocol(screening()).openephys is None
    with pytest.raises(ProtocolError, match="events_prot.*did you mean.*'events_port'"):
        parse_protocol(screening("[openephys]\nevents_prot = 1\n"))
    with pytest.raises(ProtocolError, match=r"\[openephys\] lines.*'stimulus' is not one"):
        parse_protocol(screening("[openephys.lines]\nstimulus = 2\n"))
    with pytest.raises(ProtocolError, match="1..256"):
        parse_protocol(screening("[openephys.lines]\nreward = 0\n"))
    # Line 1 is recorded as 0-based line 0, the default onset ttl_line: refused; with ttl_line = 3 it is line 4.
    with pytest.raises(ProtocolError, match="reward would be recorded on 0-based line 0"):
        parse_protocol(screening("[openephys.lines]\nreward = 1\n"))
    with pytest.raises(ProtocolError, match="trial_start would be recorded on 0-based line 3"):
        parse_protocol(screening("[recording]\nttl_line = 3\n[openephys.lines]\ntrial_start = 4\n"))
    assert parse_protocol(screening("[openephys]\nmarkers = false\n[openephys.lines]\nreward = 1\n"))
