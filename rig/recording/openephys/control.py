"""Recording control through the Open Ephys GUI's HTTP API: name, start, annotate and stop the GUI's recording.

The GUI (>= 0.6) serves a JSON API on port 37497, fixed in its source
(``Source/Utils/OpenEphysHttpServer.h``: ``#define PORT 37497``, ``svr_->listen("0.0.0.0", PORT)``) and
switched on in its File menu ("Enable HTTP Server"; it cannot be toggled while acquiring). What
:class:`GuiControl` uses, as that file (GUI v1.0.1, and v0.6.x for the first four) answers:

- ``GET /api/status`` -> ``{"mode": "IDLE" | "ACQUIRE" | "RECORD"}``;
- ``PUT /api/status`` with ``{"mode": ...}``: ``ACQUIRE`` stops recording and starts acquisition, ``RECORD``
  starts recording (and acquisition if it is off), ``IDLE`` stops both; the reply is the status after the
  change; an unknown mode changes nothing. ``RECORD`` without a Record Node in the chain leaves the mode as it
  was (``ControlPanel::buttonClicked``);
- ``GET /api/recording`` and ``PUT /api/recording`` (each field optional): ``parent_directory``,
  ``prepend_text``, ``base_text``, ``append_text``, ``default_record_engine``, ``start_new_directory``
  (the string ``"true"``); the reply lists those and ``record_nodes``: ``node_id``, ``parent_directory``,
  ``record_engine``, ``experiment_number``, ``recording_number``, ``is_synchronized``. A text with a slash or
  a period, or an empty base text, is silently refused (``FilenameFieldComponent::validate``), so
  :meth:`GuiControl.start` sends a cleaned name (:func:`base_text_for`) and reads the reply back;
- ``PUT /api/message`` with ``{"text": ...}``: a text event, written into the recording while acquiring;
  the reply is the status;
- ``GET /api/config`` (GUI >= 1.0) -> ``{"info": XML}``, whose ``INFO/VERSION`` is the GUI's version.

A body that is not JSON, or lacks a required string field, is answered ``400`` with nlohmann::json's
exception text as ``text/plain``; a path or method the API lacks is ``404`` with an empty body (cpp-httplib).
The GUI sorts JSON keys (nlohmann's ``std::map``) and writes them without spaces.

The recording lands in ``<parent_directory>/<prepend><base><append>/Record Node <node_id>/
experiment<experiment_number>/recording<recording_number + 1>`` (binary format; the GUI adds `` (n)`` to the
top folder's name when one of that name already exists). :meth:`GuiControl.describe` keeps what is needed to
find it again.

``open_ephys.control.OpenEphysHTTPServer`` (open-ephys-python-tools 1.0.1, MIT) is not used: its ``send``
calls ``requests`` with no timeout (a GUI stuck in a dialog would stall the session for ever), prints
connection errors and then fails with ``UnboundLocalError``, reads every answer as JSON without looking at the
status code, and fixes the port at 37497 (no test double on an OS-chosen port); it would also bring pandas,
h5py and requests. Four endpoints over :mod:`http.client` with explicit timeouts are simpler.

The test double is :class:`rig.recording.openephys.gui_double.GuiDouble`.
"""
from __future__ import annotations

import http.client
import json
import re
import socket
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from protocols.registry import Options, option

__all__ = [
    "DEFAULT_HTTP_PORT",
    "DEFAULT_LINES",
    "EVENT_KINDS",
    "GuiControl",
    "GuiError",
    "MODES",
    "OpenEphysOptions",
    "base_text_for",
    "block_text",
    "parse_gui_url",
]

#: The GUI's HTTP port (fixed in its source; "EPHYS" on a phone keypad).
DEFAULT_HTTP_PORT = 37497
#: The NetworkEvents plugin's REP port (``NetworkEvents::NetworkEvents``: ``setNewListeningPort(5556)``). The
#: ZMQ Interface plugin's data port defaults to 5556 too: with both in one chain, one of them must move.
DEFAULT_EVENTS_PORT = 5556
MODES = ("IDLE", "ACQUIRE", "RECORD")
#: The trial events a :class:`~rig.behavior.runner.TrialRunner` listener hears.
EVENT_KINDS = ("trial_start", "fixation_acquired", "stimulus_onset", "break", "reward", "trial_end", "scene")
#: Trial event -> NetworkEvents line (1-based, as the plugin's ``TTL Line=N`` takes it; it records line N - 1,
#: the 0-based line of the ZMQ Interface's TTL events). Line 1 is left free: it is 0-based line 0, the
#: ``[recording] ttl_line`` (photodiode) by default.
DEFAULT_LINES = {"trial_start": 2, "stimulus_onset": 3, "reward": 4, "break": 5}
#: ``TTL Line=N`` accepts 1..256 (``NetworkEvents::handleSpecialMessages``; 0.1.x: 1..8).
MAX_LINE = 256
_TEXT_LIMIT = 100


class GuiError(RuntimeError):
    """The GUI is unreachable, answered something else than its API, or refused a change; says what to check."""


def _ms(default: float, low: float, high: float) -> Any:
    return option(default, low=low, high=high, low_open=True, valid=f"a number of ms in ({low:g}, {high:g}]")


def _seconds(default: float, high: float) -> Any:
    return option(default, low=0.0, high=high, low_open=True, valid=f"seconds in (0, {high:g}]")


@dataclass(frozen=True)
class OpenEphysOptions(Options):
    """The optional ``[openephys]`` table: how the rig drives the Open Ephys GUI (``rig run --openephys URL``).

    The GUI's URL is a command-line choice (it names a machine); this table says what the protocol needs:
    event markers through the NetworkEvents plugin and how the HTTP API is used.
    """

    #: Send trial events as TTLs through the NetworkEvents plugin.
    markers: bool = True
    #: None: the host of the GUI's URL.
    events_host: str | None = option(None, valid="a host name (or none: the GUI's host)")
    events_port: int = option(DEFAULT_EVENTS_PORT, low=1, high=65535, valid="a port in 1..65535")
    #: Trial event -> 1-based NetworkEvents line; events not named here send nothing.
    lines: dict[str, int] = option(default_factory=lambda: dict(DEFAULT_LINES),
                                   valid=f"a table of trial event = line (1..{MAX_LINE}); events: "
                                         f"{', '.join(EVENT_KINDS)}")
    #: Time between a line's state 1 and state 0. The plugin stamps a TTL at the first sample of the next
    #: processing block (about 10-25 ms), so a shorter pulse may start and end on the same sample.
    pulse_ms: float = _ms(30.0, 0.0, 1000.0)
    #: A marker reply later than this is lost: the socket is closed and opened again (lazy pirate).
    reply_timeout_ms: float = _ms(250.0, 0.0, 10_000.0)
    #: Replies slower than this are counted as slow.
    slow_ms: float = _ms(20.0, 0.0, 10_000.0)
    #: A marker still unsent this long after its event is dropped (counted): a late TTL would mark a wrong time.
    stale_ms: float = _ms(1000.0, 0.0, 600_000.0)
    #: Markers waiting to be sent; beyond it the oldest is dropped (counted).
    queue: int = option(1000, low=1, high=1_000_000, valid="a number of markers in 1..1000000")
    #: Add ``Kind=<event> Trial=<n>`` to each marker's state-1 command. The plugin ignores keys it does not
    #: know and writes every command's text into the recording as a text event, so the recording says which
    #: trial event each TTL is.
    tags: bool = False
    #: Bound on each HTTP exchange of check/start/stop.
    http_timeout_s: float = _seconds(2.0, 60.0)
    #: Bound on each block's message; a failure is counted, never fatal.
    message_timeout_s: float = _seconds(0.5, 10.0)
    #: The GUI's mode after the session: "previous" (as found at start), "ACQUIRE" or "IDLE".
    stop_mode: str = option("previous", choices=("previous", "ACQUIRE", "IDLE"))

    def check(self) -> None:
        for kind, line in self.lines.items():
            if kind not in EVENT_KINDS:
                self.invalid("lines", f"a table whose keys are trial events ({', '.join(EVENT_KINDS)}); "
                                      f"{kind!r} is not one")
            if isinstance(line, bool) or not isinstance(line, int) or not 1 <= line <= MAX_LINE:
                self.invalid("lines", f"a table of trial event = 1-based line in 1..{MAX_LINE} "
                                      f"({kind} = {line!r} is not)")
        if self.events_host is not None and not self.events_host.strip():
            self.invalid("events_host", "a host name (or none: the GUI's host)")

    def collisions(self, onset_ttl_line: int) -> list[str]:
        """Marker events whose line is the recording's 0-based onset ``ttl_line`` (line N is recorded as N - 1)."""
        return sorted(kind for kind, line in self.lines.items() if line - 1 == onset_ttl_line)


def parse_gui_url(url: str) -> tuple[str, int]:
    """``http://HOST:PORT``, ``HOST:PORT`` or ``HOST`` (port 37497) -> (host, port)."""
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme != "http" or not parts.hostname or port == -1 or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise ValueError(f"--openephys {url!r}: the GUI is named http://HOST:PORT, e.g. "
                         f"http://127.0.0.1:{DEFAULT_HTTP_PORT} (its HTTP server's port is {DEFAULT_HTTP_PORT})")
    return parts.hostname, port if port is not None else DEFAULT_HTTP_PORT


def base_text_for(session_name: str) -> str:
    """``session_name`` as the GUI accepts a base text: no slash or period, not empty, not ``auto``.

    Characters other than letters, digits, ``-`` and ``_`` become ``_`` (the name is a folder's on any OS).
    """
    text = re.sub(r"[^A-Za-z0-9_-]+", "_", session_name.strip()).strip("_")[:_TEXT_LIMIT] or "rig_session"
    return "rig_auto" if text.lower() == "auto" else text  # "auto" means a date in the GUI


def block_text(number: int, total: int | None = None, session: str | None = None) -> str:
    """``rig block 12 of 30 (session NAME)``: the text event marking a block in the recording."""
    said = f"rig block {number}" + (f" of {total}" if total is not None else "")
    return said + (f" (session {session})" if session else "")


@dataclass
class _Counts:
    sent: int = 0
    failed: int = 0
    last_error: str = ""
    seconds_max: float = 0.0


class GuiControl:
    """The Open Ephys GUI's recording, driven over its HTTP API with bounded timeouts.

    Use: ``check()`` before the first stimulus, ``start(session_name)``, ``message(text)`` or ``block(n, total)``
    per block, ``stop()`` at the end and on every failure path (idempotent, never raises), and ``describe()``
    for the session file.

    Args:
        url: The GUI, ``http://HOST:37497``.
        timeout_s: Bound on each exchange of :meth:`check`, :meth:`start` and :meth:`stop` (connect, then reply).
        message_timeout_s: Bound on each :meth:`message`.
        stop_mode: The mode :meth:`stop` leaves the GUI in: ``"previous"`` (as :meth:`start` found it),
            ``"ACQUIRE"`` or ``"IDLE"``.
        clock: Wall-clock seconds for the times in :meth:`describe`.
    """

    def __init__(self, url: str = f"http://127.0.0.1:{DEFAULT_HTTP_PORT}", *, timeout_s: float = 2.0,
                 message_timeout_s: float = 0.5, stop_mode: str = "previous",
                 clock: Callable[[], float] = time.time) -> None:
        self.host, self.port = parse_gui_url(url)
        self.url = f"http://{self.host}:{self.port}"
        if stop_mode not in ("previous", "ACQUIRE", "IDLE"):
            raise ValueError(f"stop_mode {stop_mode!r} is unknown; valid: 'previous', 'ACQUIRE', 'IDLE'")
        for name, value in (("timeout_s", timeout_s), ("message_timeout_s", message_timeout_s)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        self.timeout_s, self.message_timeout_s, self.stop_mode = float(timeout_s), float(message_timeout_s), stop_mode
        self._clock = clock
        self.gui_version: str | None = None
        self.checked: dict[str, Any] | None = None
        self.mode_before: str | None = None
        self.session_name: str | None = None
        self.base_text: str | None = None
        self.recording_at_start: dict[str, Any] | None = None
        self.recording_at_stop: dict[str, Any] | None = None
        self.mode_after_stop: str | None = None
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.messages = _Counts()
        self.stop_errors: list[str] = []
        self._changed = False  # a mode change was sent: stop() has something to undo

    @classmethod
    def from_options(cls, url: str, options: OpenEphysOptions, **kwargs: Any) -> GuiControl:
        """A control with the ``[openephys]`` table's timeouts and stop mode."""
        return cls(url, timeout_s=options.http_timeout_s, message_timeout_s=options.message_timeout_s,
                   stop_mode=options.stop_mode, **kwargs)

    # -- HTTP -------------------------------------------------------------------------------------------------

    def _hint(self) -> str:
        return (f"is the Open Ephys GUI running on {self.host}, with its HTTP server on (File > Enable HTTP Server; "
                f"GUI >= 0.6), and is {self.port} its port (the GUI serves on {DEFAULT_HTTP_PORT})?")

    def _exchange(self, method: str, path: str, payload: dict | None, timeout: float) -> tuple[int, str, bytes]:
        """One request on a fresh connection: (status, content type, body). Raises GuiError naming the URL."""
        where = f"{method} {self.url}{path}"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        body = None if payload is None else json.dumps(payload).encode()
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json"} if body is not None else {})
            response = conn.getresponse()
            data = response.read()
            return response.status, response.getheader("Content-Type", ""), data
        except ConnectionRefusedError:
            raise GuiError(f"{where}: connection refused: {self._hint()}") from None
        except (socket.timeout, TimeoutError):
            raise GuiError(f"{where}: no answer within {timeout:g} s: {self._hint()} Is the GUI stuck in a "
                           f"dialog?") from None
        except socket.gaierror as exc:
            raise GuiError(f"{where}: cannot resolve host {self.host!r} ({exc}): check the --openephys URL") from None
        except (OSError, http.client.HTTPException) as exc:
            raise GuiError(f"{where}: {type(exc).__name__}: {exc}: {self._hint()}") from None
        finally:
            conn.close()

    def _json(self, method: str, path: str, payload: dict | None = None, *, timeout: float | None = None,
              keys: tuple[str, ...] = ()) -> dict[str, Any]:
        """A JSON object with ``keys`` from the API, or GuiError saying what came instead."""
        status, kind, data = self._exchange(method, path, payload, self.timeout_s if timeout is None else timeout)
        where = f"{method} {self.url}{path}"
        text = data[:200].decode("utf-8", "replace")
        if status != 200:
            raise GuiError(f"{where} answered HTTP {status} {text!r}, not the Open Ephys GUI's JSON: "
                           f"{self._hint()}")
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        if not isinstance(value, dict) or any(k not in value for k in keys):
            raise GuiError(f"{where} answered {kind or 'no content type'} {text!r}, not the Open Ephys GUI's JSON "
                           f"with {list(keys)}: {self._hint()}")
        return value

    def _status(self, payload: dict | None = None) -> str:
        value = self._json("PUT" if payload else "GET", "/api/status", payload, keys=("mode",))
        if value["mode"] not in MODES:
            raise GuiError(f"{self.url}/api/status answered mode {value['mode']!r}, not one of {list(MODES)}: "
                           f"{self._hint()}")
        return value["mode"]

    def _recording(self, payload: dict | None = None) -> dict[str, Any]:
        value = self._json("PUT" if payload else "GET", "/api/recording", payload,
                           keys=("parent_directory", "base_text", "record_nodes"))
        if not isinstance(value["record_nodes"], list):
            raise GuiError(f"{self.url}/api/recording answered record_nodes {value['record_nodes']!r}, not a list")
        return value

    def _version(self) -> str | None:
        """The GUI's version from ``/api/config``'s XML (``SETTINGS/INFO/VERSION``); None before GUI 1.0 (404)."""
        try:
            status, _, data = self._exchange("GET", "/api/config", None, self.timeout_s)
            if status != 200:
                return None
            root = ElementTree.fromstring(json.loads(data)["info"].encode())
            version = root.findtext("INFO/VERSION")
            return version.strip() if version else None
        except (GuiError, ValueError, KeyError, TypeError, ElementTree.ParseError):
            return None

    def _await_mode(self, wanted: str, mode: str) -> str:
        """Poll the status briefly until ``wanted`` (the GUI changes mode on its message thread)."""
        deadline = time.monotonic() + self.timeout_s
        while mode != wanted and time.monotonic() < deadline:
            time.sleep(0.05)
            mode = self._status()
        return mode

    # -- the session --------------------------------------------------------------------------------------

    def check(self) -> dict[str, Any]:
        """Ask the GUI its status and recording settings; raise :class:`GuiError` saying what to check.

        Fails when the GUI does not answer within the timeout, answers something else than its API, or has no
        Record Node (a recording could not start). Returns what it read (also kept for :meth:`describe`).
        """
        mode = self._status()
        recording = self._recording()
        if not recording["record_nodes"]:
            raise GuiError(f"the Open Ephys GUI at {self.url} has no Record Node in its signal chain: add one "
                           f"(and the NetworkEvents plugin upstream of it, for markers) before the session")
        self.gui_version = self._version()
        self.checked = {"mode": mode, "recording": recording, "gui_version": self.gui_version,
                        "at": self._clock()}
        return self.checked

    def start(self, session_name: str) -> dict[str, Any]:
        """Name the recording after the session, start acquisition, then recording; returns the recording info.

        Raises:
            GuiError: the GUI is unreachable, is already recording (the recording would not be this
                session's), refused the name, or did not reach ACQUIRE or RECORD.
        """
        if self.checked is None:
            self.check()
        mode = self._status()
        if mode == "RECORD":
            raise GuiError(f"the Open Ephys GUI at {self.url} is already recording: stop that recording in the GUI, "
                           f"so this session's gets its own folder, then start again")
        self.mode_before, self.session_name = mode, session_name
        base = base_text_for(session_name)
        info = self._recording({"base_text": base})
        if info.get("base_text") != base:
            raise GuiError(f"the Open Ephys GUI at {self.url} kept base text {info.get('base_text')!r} instead of "
                           f"{base!r}: is its filename field set by hand, or a recording running?")
        self.base_text = base
        self._changed = True
        mode = self._await_mode("ACQUIRE", self._status({"mode": "ACQUIRE"}))
        if mode != "ACQUIRE":
            raise GuiError(f"the Open Ephys GUI at {self.url} did not start acquisition (mode {mode}): see its "
                           f"window (an audio output device and a sample rate >= 44.1 kHz are needed; is every "
                           f"source connected?)")
        mode = self._await_mode("RECORD", self._status({"mode": "RECORD"}))
        if mode != "RECORD":
            raise GuiError(f"the Open Ephys GUI at {self.url} did not start recording (mode {mode}): does the chain "
                           f"have a Record Node whose directory exists and is writable?")
        self.started_at = self._clock()
        self.recording_at_start = self._recording()
        return self.recording_at_start

    def message(self, text: str) -> bool:
        """Write ``text`` as a text event into the recording; False (counted) on any failure, never raises."""
        began = time.monotonic()
        try:
            self._json("PUT", "/api/message", {"text": str(text)}, timeout=self.message_timeout_s, keys=("mode",))
        except Exception as exc:  # never fatal mid-session: counted, and the last one kept
            self.messages.failed += 1
            self.messages.last_error = str(exc) if isinstance(exc, GuiError) else f"{type(exc).__name__}: {exc}"
            return False
        finally:
            self.messages.seconds_max = max(self.messages.seconds_max, time.monotonic() - began)
        self.messages.sent += 1
        return True

    def block(self, number: int, total: int | None = None) -> bool:
        """:meth:`message` of :func:`block_text` for block ``number`` (of ``total``) of this session."""
        return self.message(block_text(number, total, self.session_name))

    def stop(self) -> bool:
        """Stop recording, leaving the GUI in ``stop_mode``; idempotent, never raises (failures kept).

        Returns True when there was nothing to stop or the GUI confirmed the change.
        """
        if not self._changed:
            return True
        wanted = self.mode_before if self.stop_mode == "previous" else self.stop_mode
        if wanted not in ("IDLE", "ACQUIRE"):
            wanted = "ACQUIRE"
        try:
            mode = self._await_mode(wanted, self._status({"mode": wanted}))
            self.mode_after_stop = mode
            self.recording_at_stop = self._recording()
        except Exception as exc:  # stop() runs on failure paths: it must not hide the failure being handled
            self.stop_errors.append(str(exc) if isinstance(exc, GuiError) else f"{type(exc).__name__}: {exc}")
            return False
        finally:
            self.stopped_at = self._clock()
        self._changed = False
        if mode != wanted:
            self.stop_errors.append(f"the GUI stayed in mode {mode} after asking for {wanted}")
            return False
        return True

    def __enter__(self) -> GuiControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> dict[str, Any]:
        """What the session file keeps to join it with the GUI's recording later (JSON-ready)."""
        info = self.recording_at_start or (self.checked or {}).get("recording") or {}
        folder = None
        if self.base_text is not None:
            folder = f"{info.get('prepend_text', '')}{self.base_text}{info.get('append_text', '')}"
        nodes = []
        for node in info.get("record_nodes", []):
            if not isinstance(node, dict):
                continue
            entry = dict(node)
            if folder is not None and self.started_at is not None:
                entry["directory_hint"] = (f"{node.get('parent_directory')}/{folder}/Record Node {node.get('node_id')}/"
                                           f"experiment{node.get('experiment_number')}/"
                                           f"recording{int(node.get('recording_number', 0)) + 1}")
            nodes.append(entry)
        return {
            "url": self.url,
            "gui_version": self.gui_version,
            "mode_at_check": (self.checked or {}).get("mode"),
            "mode_before": self.mode_before,
            "mode_after_stop": self.mode_after_stop,
            "session_name": self.session_name,
            "base_text": self.base_text,
            "prepend_text": info.get("prepend_text"),
            "append_text": info.get("append_text"),
            "parent_directory": info.get("parent_directory"),
            "default_record_engine": info.get("default_record_engine"),
            # The GUI adds " (n)" to the folder's name when one of that name exists already.
            "folder_hint": folder,
            "record_nodes": nodes,
            "record_nodes_at_stop": (self.recording_at_stop or {}).get("record_nodes"),
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "messages": {"sent": self.messages.sent, "failed": self.messages.failed,
                         "last_error": self.messages.last_error,
                         "slowest_s": round(self.messages.seconds_max, 6)},
            "stop_errors": list(self.stop_errors),
            "timeouts_s": {"http": self.timeout_s, "message": self.message_timeout_s},
            "stop_mode": self.stop_mode,
        }
