"""Doubles of the Open Ephys GUI's HTTP API and of its NetworkEvents plugin, for tests and desk runs (STYLE 3).

Written from the real source, not from the clients:

- :class:`GuiDouble` answers the endpoints :class:`~rig.recording.openephys.control.GuiControl` uses as the
  GUI's ``Source/Utils/OpenEphysHttpServer.h`` (open-ephys/plugin-GUI v1.0.1) does: ``GET/PUT /api/status``,
  ``GET/PUT /api/recording``, ``PUT /api/message`` and ``GET /api/config``. JSON goes out as nlohmann's
  ``dump()`` writes it (keys sorted, no spaces, UTF-8); a body that is not JSON, or a required field that is
  missing or not a string, is ``400`` with nlohmann's exception text as ``text/plain``; other paths and
  methods are ``404`` with an empty body (cpp-httplib). Mode changes follow ``ControlPanel.cpp``
  (``RECORD`` starts acquisition too, and does nothing without a Record Node; ``ACQUIRE`` stops recording),
  text fields follow ``FilenameConfigWindow.cpp``'s ``validate`` (no slash, no period, not empty: otherwise
  silently kept as they were), and the Record Nodes' counters follow ``RecordNode.cpp`` (the recording
  number counts recordings in a folder, the experiment number acquisitions that recorded). A started
  recording creates ``<parent>/<prepend><base><append>/Record Node <id>/experiment<E>/recording<R+1>``, with
  `` (n)`` added to a top folder that already exists, as the GUI does. Simplified: ``auto`` prepend/append
  texts stay the word ``auto`` (the GUI puts a date there), and no data is written.
- :class:`NetworkEventsDouble` answers requests as ``NetworkEvents::handleSpecialMessages``
  (open-ephys-plugins/network-events 0.2.1, ``Source/NetworkEvents.cpp``) does, from one thread, command
  and keys case-insensitive, values read as JUCE's ``getIntValue`` reads them (leading digits, an optional
  ``-``, else 0). It binds a ROUTER socket, which is what a REP socket is on the wire (a REQ peer cannot tell
  them apart), so that a test can drop a reply (``drop``) or delay it (``delay_s``) to exercise a client's
  lost- and slow-reply paths.

Both share a :class:`GuiState` (mode, recording settings, Record Nodes) and keep what they were told: HTTP
requests, messages, mode transitions, NetworkEvents requests and TTL commands with their times. Both bind
port 0 by default (the OS chooses); ``url`` and ``endpoint`` say where they are. Standard library and pyzmq only.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import zmq

__all__ = ["GuiDouble", "GuiState", "NetworkEventsDouble", "TtlCommand"]

#: The plugin reads at most this many bytes of a request (``MAX_MESSAGE_LENGTH``).
MAX_REQUEST_BYTES = 64000
#: What the GUI's filename field shows for its automatic date (``FilenameFieldComponent::getNextValue``).
AUTO_BASE_TEXT = "YYYY-MM-DD_HH-MM-SS"


def nlohmann_dump(value: Any) -> bytes:
    """JSON as ``nlohmann::json::dump()`` writes it: keys sorted (``std::map``), no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class TtlCommand:
    """A ``TTL`` command the plugin handled: the line as sent (1-based), the state, whether it was recorded."""

    time: float
    line: int
    state: int
    #: Queued as an event: acquisition was running (the plugin answers the same either way).
    recorded: bool
    text: str


@dataclass
class _Node:
    node_id: int
    parent_directory: str
    record_engine: str = "BINARY"
    experiment_number: int = 1
    recording_number: int = 0
    is_synchronized: bool = True
    has_recorded: bool = False
    folder: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "parent_directory": self.parent_directory,
                "record_engine": self.record_engine, "experiment_number": self.experiment_number,
                "recording_number": self.recording_number, "is_synchronized": self.is_synchronized}


class GuiState:
    """The GUI as both doubles see it: mode, recording settings and Record Nodes, and what happened.

    Args:
        parent_directory: Where recordings go (must exist; the double creates recording folders in it).
        record_nodes: Record Node ids (none: recording cannot start, as in the GUI).
        version: The version ``/api/config`` reports; None: no ``/api/config`` (a GUI before 1.0).
        acquisition_fails: Acquisition does not start (as with no audio output device).
    """

    def __init__(self, parent_directory: str | os.PathLike, record_nodes: tuple[int, ...] = (101,),
                 version: str | None = "1.0.1", acquisition_fails: bool = False) -> None:
        self.lock = threading.RLock()
        self.parent_directory = str(parent_directory)
        self.prepend_text, self.base_text, self.append_text = "", AUTO_BASE_TEXT, ""
        self.default_record_engine = "BINARY"
        self.nodes = [_Node(node_id, self.parent_directory) for node_id in record_nodes]
        self.version = version
        self.acquisition_fails = acquisition_fails
        self.acquiring = self.recording = False
        self.new_directory_needed = True
        self.started = time.monotonic()
        #: (monotonic time, mode) after every change of mode.
        self.transitions: list[tuple[float, str]] = []
        #: (monotonic time, text, mode): ``/api/message`` texts and NetworkEvents requests (text events).
        self.messages: list[tuple[float, str, str]] = []
        self.network_texts: list[tuple[float, str, str]] = []
        #: Every recording folder created (one per Record Node and recording).
        self.recording_folders: list[Path] = []

    @property
    def mode(self) -> str:
        return "RECORD" if self.recording else "ACQUIRE" if self.acquiring else "IDLE"

    def _note(self) -> None:
        if not self.transitions or self.transitions[-1][1] != self.mode:
            self.transitions.append((time.monotonic(), self.mode))

    def start_acquisition(self) -> None:
        with self.lock:
            if not self.acquiring and not self.acquisition_fails:
                self.acquiring = True
                self._note()

    def stop_acquisition(self) -> None:
        with self.lock:
            self.stop_recording()
            if self.acquiring:
                self.acquiring = False
                for node in self.nodes:  # RecordNode::stopAcquisition
                    if node.has_recorded:
                        node.has_recorded, node.experiment_number = False, node.experiment_number + 1
                    node.recording_number = 0
                self._note()

    def start_recording(self) -> None:
        with self.lock:
            if self.recording or not self.nodes:
                return
            self.start_acquisition()
            if not self.acquiring:
                return
            self.recording = True
            name = f"{self.prepend_text}{self.base_text}{self.append_text}"
            for node in self.nodes:
                if self.new_directory_needed or node.folder is None:
                    folder, index = Path(node.parent_directory) / name, 0
                    while folder.exists():
                        index += 1
                        folder = Path(node.parent_directory) / f"{name} ({index})"
                    node.folder = str(folder)
                    node.experiment_number, node.recording_number = 1, 0
                path = (Path(node.folder) / f"Record Node {node.node_id}" / f"experiment{node.experiment_number}"
                        / f"recording{node.recording_number + 1}")
                path.mkdir(parents=True, exist_ok=True)
                self.recording_folders.append(path)
            self.new_directory_needed = False
            self._note()

    def stop_recording(self) -> None:
        with self.lock:
            if self.recording:
                self.recording = False
                for node in self.nodes:  # RecordNode::stopRecording
                    node.has_recorded, node.recording_number = True, node.recording_number + 1
                self._note()

    def set_text(self, which: str, text: str) -> None:
        """``setRecordingDirectory{Prepend,Base,Append}Text``: refused silently when invalid."""
        if text == getattr(self, which):
            return
        if which == "base_text":
            if text == "auto":
                text = AUTO_BASE_TEXT
            elif not text:
                self.new_directory_needed = True
                return
        if text and ("/" in text or os.sep in text or "." in text):
            return
        setattr(self, which, text)
        self.new_directory_needed = True

    def set_parent_directory(self, path: str, node_id: int | None = None) -> None:
        """Only to a folder that exists, and not while recording (``ControlPanel::setRecordingParentDirectory``)."""
        if self.recording or not os.path.isdir(path):
            return
        if node_id is None:
            self.parent_directory = path
        for node in self.nodes:
            if node_id is None or node.node_id == node_id:
                node.parent_directory, node.folder = path, None

    def recording_info(self) -> dict[str, Any]:
        """``recording_info_to_json``."""
        return {"parent_directory": self.parent_directory, "base_text": self.base_text,
                "prepend_text": self.prepend_text, "append_text": self.append_text,
                "default_record_engine": self.default_record_engine,
                "record_nodes": [node.as_json() for node in self.nodes]}


class _JsonError(ValueError):
    """A request nlohmann::json would refuse; the message is its ``what()``."""


_TYPE_NAMES = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "array",
               dict: "object"}


def _parse_body(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        line, column = getattr(exc, "lineno", 1), getattr(exc, "colno", 1)
        raise _JsonError(f"[json.exception.parse_error.101] parse error at line {line}, column {column}: "
                         f"syntax error while parsing value") from None


def _string(doc: Any, key: str) -> str:
    """``std::string s = request_json[key]``: a string, or nlohmann's type error."""
    if doc is not None and not isinstance(doc, dict):
        raise _JsonError(f"[json.exception.type_error.305] cannot use operator[] with a string argument with "
                         f"{_TYPE_NAMES.get(type(doc), 'value')}")
    value = (doc or {}).get(key)
    if not isinstance(value, str):
        raise _JsonError(f"[json.exception.type_error.302] type must be string, but is "
                         f"{_TYPE_NAMES.get(type(value), 'value')}")
    return value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _answer(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Keep-Alive", "timeout=5, max=5")
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        double = self.server.double
        double.requests.append((time.monotonic(), method, self.path, body.decode("utf-8", "replace")))
        if double.delay_s:
            time.sleep(double.delay_s)
        route = double.routes.get((method, self.path))
        if route is None:
            self._answer(404)
            return
        try:
            with double.state.lock:
                reply = route(double, body)
        except _JsonError as exc:
            self._answer(400, str(exc).encode(), "text/plain")
            return
        self._answer(200, nlohmann_dump(reply))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    double: GuiDouble


def _get_status(double: GuiDouble, body: bytes) -> dict:
    return {"mode": double.state.mode}


def _put_status(double: GuiDouble, body: bytes) -> dict:
    mode = _string(_parse_body(body), "mode")
    state = double.state
    if mode == "RECORD" and not state.recording:
        state.start_recording()
    elif mode == "ACQUIRE":
        state.stop_recording()
        state.start_acquisition()
    elif mode == "IDLE":
        state.stop_acquisition()
    return {"mode": state.mode}


def _get_recording(double: GuiDouble, body: bytes) -> dict:
    return double.state.recording_info()


def _put_recording(double: GuiDouble, body: bytes) -> dict:
    doc = _parse_body(body)
    state = double.state
    for key in ("parent_directory", "prepend_text", "base_text", "append_text", "default_record_engine",
                "start_new_directory"):
        try:  # each field is optional: the GUI catches its error and goes on
            value = _string(doc, key)
        except _JsonError:
            continue
        if key == "parent_directory":
            state.set_parent_directory(value)
        elif key == "default_record_engine":
            state.default_record_engine = value
        elif key == "start_new_directory":
            state.new_directory_needed = state.new_directory_needed or value == "true"
        else:
            state.set_text(key, value)
    return state.recording_info()


def _put_message(double: GuiDouble, body: bytes) -> dict:
    text = _string(_parse_body(body), "text")
    double.state.messages.append((time.monotonic(), text, double.state.mode))
    return {"mode": double.state.mode}


def _get_config(double: GuiDouble, body: bytes) -> dict:
    """``saveToXml``'s settings, as ``XmlElement::toString`` writes them (only ``INFO`` filled in)."""
    return {"info": f'<?xml version="1.0" encoding="UTF-8"?>\n\n<SETTINGS>\n  <INFO>\n'
                    f'    <VERSION>{double.state.version}</VERSION>\n'
                    f'    <PLUGIN_API_VERSION>10</PLUGIN_API_VERSION>\n  </INFO>\n  <SIGNALCHAIN/>\n</SETTINGS>\n'}


class GuiDouble:
    """The GUI's HTTP API on ``host:port`` (port 0: the OS chooses), served from a thread.

    Args:
        state: The GUI's state, shared with a :class:`NetworkEventsDouble` (a new one in ``parent_directory``
            if None).
        parent_directory: Where recordings go when ``state`` is None.
        delay_s: Wait this long before every answer (a slow or stuck GUI).
    """

    routes: dict[tuple[str, str], Callable[[GuiDouble, bytes], dict]] = {
        ("GET", "/api/status"): _get_status, ("PUT", "/api/status"): _put_status,
        ("GET", "/api/recording"): _get_recording, ("PUT", "/api/recording"): _put_recording,
        ("PUT", "/api/message"): _put_message, ("GET", "/api/config"): _get_config,
    }

    def __init__(self, state: GuiState | None = None, *, parent_directory: str | os.PathLike | None = None,
                 host: str = "127.0.0.1", port: int = 0, delay_s: float = 0.0) -> None:
        if state is None:
            if parent_directory is None:
                raise ValueError("GuiDouble needs a GuiState or a parent_directory for its recordings")
            state = GuiState(parent_directory)
        self.state = state
        self.delay_s = delay_s
        #: (monotonic time, method, path, body) of every request.
        self.requests: list[tuple[float, str, str, str]] = []
        if state.version is None:
            self.routes = {k: v for k, v in self.routes.items() if k[1] != "/api/config"}
        self._server = _Server((host, port), _Handler)
        self._server.double = self
        self.host, self.port = self._server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                         name="gui-double", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)

    def __enter__(self) -> GuiDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def juce_int(text: str) -> int:
    """``String::getIntValue``: whitespace, an optional ``-``, leading digits (none: 0), as a 32-bit int."""
    match = re.match(r"\s*(-?)(\d*)", text)
    value = int(match.group(2) or 0) % 2**32 if match else 0
    value = value - 2**32 if value >= 2**31 else value
    return -value if match and match.group(1) else value


def _tokens(text: str) -> list[str]:
    """``StringArray::fromTokens(text, " ", "'\\"")`` without empty strings: quoted spaces stay inside a token."""
    tokens, current, quote = [], "", None
    for char in text:
        if quote is None and char == " ":
            tokens.append(current)
            current = ""
            continue
        if char in "'\"":
            quote = None if quote == char else char if quote is None else quote
        current += char
    tokens.append(current)
    return [t for t in tokens if t]


def parse_network_message(params: str) -> list[tuple[str, str]]:
    """``NetworkEvents::parseNetworkMessage``: ``key=value`` tokens, in order, a repeated key replaced in place."""
    pairs: dict[str, str] = {}
    for token in _tokens(params):
        if "=" in token:
            key, _, value = token.partition("=")
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            pairs[key] = value
    return list(pairs.items())


class NetworkEventsDouble:
    """The NetworkEvents plugin's request socket on ``host:port`` (port 0: the OS chooses), from a thread.

    Args:
        state: The GUI's state (shared with a :class:`GuiDouble`); a new one in ``parent_directory`` if None.
        delay_s: Wait this long before every reply (a busy GUI: requests are answered one at a time).
        drop: Never answer a request: True for all, or ``drop(index, text)`` for some (index from 0).
    """

    def __init__(self, state: GuiState | None = None, *, parent_directory: str | os.PathLike | None = None,
                 host: str = "127.0.0.1", port: int = 0, delay_s: float = 0.0,
                 drop: bool | Callable[[int, str], bool] = False, context: zmq.Context | None = None) -> None:
        if state is None:
            state = GuiState(parent_directory if parent_directory is not None else os.getcwd())
        self.state, self.delay_s, self.drop = state, delay_s, drop
        #: (monotonic time, text) of every request, and every TTL command handled.
        self.requests: list[tuple[float, str]] = []
        self.ttl: list[TtlCommand] = []
        self.replies: list[str] = []
        self.context = context or zmq.Context.instance()
        self._socket = self.context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if port:
            self._socket.bind(f"tcp://{host}:{port}")
        else:
            port = self._socket.bind_to_random_port(f"tcp://{host}")
        self.host, self.port = host, port
        self.endpoint = f"tcp://{host}:{port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="network-events-double", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._socket.poll(50, zmq.POLLIN):
                    continue
                frames = self._socket.recv_multipart()
                envelope, body = frames[:-1], frames[-1]  # REQ sends [empty delimiter, body]
                text = body[:MAX_REQUEST_BYTES].decode("utf-8", "replace")
                index = len(self.requests)
                self.requests.append((time.monotonic(), text))
                drop = self.drop(index, text) if callable(self.drop) else self.drop
                if drop:
                    continue
                with self.state.lock:
                    if self.state.acquiring:
                        self.state.network_texts.append((time.monotonic(), text, self.state.mode))
                    reply = self.handle(text)
                self.replies.append(reply)
                if self.delay_s:
                    time.sleep(self.delay_s)
                self._socket.send_multipart([*envelope, reply.encode()])
        finally:
            self._socket.close(linger=0)

    def handle(self, text: str) -> str:
        """``handleSpecialMessages``: the reply to one request (state lock held)."""
        state = self.state
        cmd = text.split(" ", 1)[0]
        pairs: list[tuple[str, str]] = []
        node_id = None
        if "=" in text:
            pairs = parse_network_message(text[len(cmd):].strip())
            for key, value in pairs:
                if key.lower() == "recordnode" and juce_int(value) >= 99:
                    node_id = juce_int(value)
        command = cmd.lower()
        if command == "startacquisition":
            state.start_acquisition()
            return "StartedAcquisition"
        if command == "stopacquisition":
            state.stop_acquisition()
            return "StoppedAcquisition"
        if command == "startrecord" and not state.recording:
            for key, value in pairs:
                if key.lower() == "createnewdir" and value == "1":
                    state.new_directory_needed = True
                elif key.lower() == "recdir":
                    state.set_parent_directory(value, node_id)
                elif key.lower() == "prependtext":
                    state.set_text("prepend_text", value)
                elif key.lower() == "appendtext":
                    state.set_text("append_text", value)
            state.start_recording()
            return "StartedRecording"
        if command == "stoprecord":
            state.stop_recording()
            return "StoppedRecording"
        if command == "isacquiring":
            return "1" if state.acquiring else "0"
        if command == "isrecording":
            return "1" if state.recording else "0"
        first = next((n for n in state.nodes if node_id is None or n.node_id == node_id), None)
        if command == "getnodeid":
            return str(state.nodes[0].node_id if state.nodes else 0)
        if command == "getrecordingpath":
            return first.parent_directory if node_id is not None and first else state.parent_directory
        if command in ("getrecordingnumber", "getexperimentnumber"):
            number = 0 if first is None else (first.recording_number if command == "getrecordingnumber"
                                              else first.experiment_number)
            return str(number if node_id is not None else number + 1)
        if command == "ttl":
            line, on = 0, False
            for key, value in pairs:
                number = juce_int(value)
                if key.lower() == "line":
                    if not 1 <= number <= 256:
                        return "InvalidChannel"
                    line = number - 1
                elif key.lower() == "state":
                    on = number != 0
            self.ttl.append(TtlCommand(time.monotonic(), line + 1, int(on), state.acquiring, text))
            return f"TTLHandled: Line={line + 1} State={int(on)}"
        return "NotHandled"

    def ttl_events(self) -> list[tuple[int, int]]:
        """(line, state) of every TTL command recorded (acquisition running), in order."""
        return [(c.line, c.state) for c in self.ttl if c.recorded]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def __enter__(self) -> NetworkEventsDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
