"""The publishing side of the Open Ephys ZMQ Interface: the fake kept next to the client (STYLE 3).

:class:`OpenEphysPublisher` binds a PUB socket (data) and a REP socket
(heartbeats, data port + 1 by default) and sends messages in the exact wire
format, numbering them from 1 as the plugin does. ``rig sim-rig`` publishes
through it, and tests use it to drive :class:`~rig.recording.openephys.reader.ZmqReader`.
Port 0 lets the OS choose a free port (see ``data_port``/``heartbeat_port``).

Two header styles:

- ``"juce"``: what a real rig sends. The headers are built here from the
  plugin's source (open-ephys-plugins/zmq-interface, ``ZmqInterface.cpp``:
  ``sendData``, ``sendEvent``, ``sendSpikeEvent``), with its keys in its
  ``setProperty`` order and its C++ types (``sample_rate`` and ``threshold``
  are ``float``), and written by :func:`rig.recording.openephys.juce_json.dumps`:
  pretty-printed with CRLF newlines.
- ``"compact"``: :func:`rig.recording.openephys.wire.format_message`'s one-line JSON.

Continuous data goes through :meth:`OpenEphysPublisher.continuous`: per
channel header templates are rendered once, and each message only substitutes
its numbers (``message_num``, ``num_samples``, ``sample_num``, ``data_size``,
``timestamp``), so hundreds of channels per ~23 ms callback stay cheap.

The heartbeat socket answers as the plugin does: ``heartbeat received`` for a
JSON object or array, ``message correctly parsed`` when its ``type`` is
``"event"``, ``JSON message could not be read`` otherwise.
"""
from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import zmq

from rig.recording.openephys import juce_json
from rig.recording.openephys.wire import (DATA_ENVELOPE, EVENT_ENVELOPE, HEARTBEAT_REPLY, DataMessage, Message,
                                          SpikeMessage, TtlMessage, WireError, format_message, parse_heartbeat)

HEADER_STYLES = ("juce", "compact")
#: ``EventChannel::TTL``: the ``content.type`` of a TTL event.
TTL_EVENT_TYPE = 3
#: A TTL event's payload: uint8 line, uint8 state, uint64 word (the state of every line), little-endian.
TTL_PAYLOAD = struct.Struct("<BBQ")
EVENT_PARSED_REPLY = b"message correctly parsed"
UNREADABLE_REPLY = b"JSON message could not be read"
#: The plugin reads at most this many bytes of a heartbeat request (``MAX_MESSAGE_LENGTH - 1``).
MAX_REQUEST_BYTES = 63999


def _float(value: float) -> float:
    """A C++ ``float`` widened to double, as the plugin's ``sample_rate`` and thresholds are."""
    return float(np.float32(value))


def data_header(message_num: int, stream: str, channel_num: int, channel_name: str, num_samples: int,
                sample_num: int, sample_rate: float, timestamp: int) -> dict:
    """``sendData``'s header, keys in the plugin's order."""
    return {"message_num": message_num, "type": "data",
            "content": {"stream": stream, "channel_num": channel_num, "channel_name": channel_name,
                        "num_samples": num_samples, "sample_num": sample_num, "sample_rate": _float(sample_rate)},
            "data_size": 4 * num_samples, "timestamp": timestamp}


def plugin_frames(msg: Message, render: Callable[[dict], str]) -> list[bytes]:
    """``msg`` as the plugin frames it, its header written by ``render``."""
    if isinstance(msg, DataMessage):
        samples = np.ascontiguousarray(msg.samples, dtype="<f4")
        header = data_header(int(msg.message_num), msg.stream, int(msg.channel_num), msg.channel_name,
                             int(samples.size), int(msg.sample_num), msg.sample_rate, int(msg.timestamp))
        return [DATA_ENVELOPE, render(header).encode(), samples.tobytes()]
    if isinstance(msg, TtlMessage):
        header = {"message_num": int(msg.message_num), "type": "event",
                  "content": {"stream": msg.stream, "source_node": int(msg.source_node), "type": TTL_EVENT_TYPE,
                              "sample_num": int(msg.sample_num)},
                  "data_size": TTL_PAYLOAD.size, "timestamp": int(msg.timestamp)}
        return [EVENT_ENVELOPE, render(header).encode(), TTL_PAYLOAD.pack(msg.line, msg.state, msg.word)]
    if isinstance(msg, SpikeMessage):
        waveform = np.ascontiguousarray(np.atleast_2d(msg.waveform), dtype="<f4")
        header = {"message_num": int(msg.message_num), "type": "spike",
                  "spike": {"stream": msg.stream, "source_node": int(msg.source_node), "electrode": msg.electrode,
                            "sample_num": int(msg.sample_num), "num_channels": int(waveform.shape[0]),
                            "num_samples": int(waveform.shape[1]), "sorted_id": int(msg.sorted_id),
                            "threshold": [_float(t) for t in msg.threshold]},
                  "timestamp": int(msg.timestamp)}
        return [EVENT_ENVELOPE, render(header).encode(), waveform.tobytes()]
    raise TypeError(f"not an Open Ephys message: {type(msg).__name__}")


# Placeholders rendered into a data header and then replaced by %d: numbers no real header holds.
_SLOTS = ("message_num", "num_samples", "sample_num", "data_size", "timestamp")
_SENTINELS = {name: 7_391_800_000_000_001 + i for i, name in enumerate(_SLOTS)}


@dataclass(frozen=True)
class ContinuousChannels:
    """Header templates of one stream's selected continuous channels (:meth:`OpenEphysPublisher.continuous`)."""

    stream: str
    sample_rate: float
    channels: tuple[tuple[int, str], ...]
    templates: tuple[bytes, ...]  # %d slots in _SLOTS order


def header_template(render: Callable[[dict], str], stream: str, channel_num: int, channel_name: str,
                    sample_rate: float) -> bytes:
    """One channel's data header with ``%d`` where the numbers go (in ``_SLOTS`` order)."""
    s = _SENTINELS
    text = render(data_header(s["message_num"], stream, channel_num, channel_name, s["num_samples"], s["sample_num"],
                              sample_rate, s["timestamp"]))
    text = text.replace(str(4 * s["num_samples"]), str(s["data_size"]))  # data_size is derived: give it its own slot
    text = text.replace("%", "%%")
    positions = []
    for name in _SLOTS:
        token = str(s[name])
        if text.count(token) != 1:
            raise ValueError(f"cannot template the data header of channel {channel_name!r}: it contains {token}")
        positions.append(text.index(token))
        text = text.replace(token, "%d")
    if positions != sorted(positions):
        raise ValueError(f"data header fields out of the plugin's order: {render.__name__}")
    return text.encode()


class OpenEphysPublisher:
    """PUB + heartbeat REP sockets speaking the Open Ephys ZMQ Interface format."""

    def __init__(self, host: str = "127.0.0.1", data_port: int = 5556, heartbeat_port: int | None = None,
                 context: zmq.Context | None = None, header_style: str = "compact", send_queue: int = 1000) -> None:
        if header_style not in HEADER_STYLES:
            raise ValueError(f"header_style {header_style!r} is unknown; valid: {list(HEADER_STYLES)}")
        self.header_style = header_style
        self._render = juce_json.dumps if header_style == "juce" else json.dumps
        self.context = context or zmq.Context.instance()
        self.data = self.context.socket(zmq.PUB)
        self.data.setsockopt(zmq.LINGER, 0)
        # The plugin's PUB queue holds 1000 messages; a larger one tells a busy publisher's losses from the reader's.
        self.data.setsockopt(zmq.SNDHWM, int(send_queue))
        self.heartbeat = self.context.socket(zmq.REP)
        self.heartbeat.setsockopt(zmq.LINGER, 0)
        try:
            self.data_port = _bind(self.data, host, data_port)
            if heartbeat_port is None:
                try:
                    self.heartbeat_port = _bind(self.heartbeat, host, self.data_port + 1)
                except zmq.ZMQError:
                    if data_port != 0:
                        raise
                    self.heartbeat_port = _bind(self.heartbeat, host, 0)  # data+1 taken: any free port
            else:
                self.heartbeat_port = _bind(self.heartbeat, host, heartbeat_port)
        except zmq.ZMQError as exc:
            self.close()
            raise OSError(f"cannot bind the Open Ephys publisher on {host} (data port {data_port}, heartbeat port "
                          f"{heartbeat_port if heartbeat_port is not None else 'data port + 1'}): {exc}") from None
        self.host = host
        self.message_num = 0
        self.heartbeats: list[dict[str, str]] = []
        self.sent = 0

    @property
    def endpoint(self) -> str:
        """The data endpoint a subscriber connects to."""
        return f"tcp://{self.host}:{self.data_port}"

    def next_message_num(self) -> int:
        """Count one message (sent or deliberately lost) and return its number."""
        self.message_num += 1
        return self.message_num

    def frames(self, msg: Message) -> list[bytes]:
        """``msg``'s frames in this publisher's header style (its numbers as they are)."""
        if self.header_style == "compact":
            return format_message(msg)
        return plugin_frames(msg, self._render)

    def send(self, msg: Message) -> list[bytes]:
        """Number ``msg``, stamp it with the wall clock (ms), publish it and return its frames."""
        msg.message_num = self.next_message_num()
        msg.timestamp = int(time.time() * 1000)
        frames = self.frames(msg)
        self.data.send_multipart(frames)
        self.sent += 1
        return frames

    def send_frames(self, frames: list[bytes]) -> None:
        """Publish frames as they are (malformed ones included, for tests)."""
        self.data.send_multipart(frames)

    def continuous(self, stream: str, channels: Sequence[tuple[int, str]], sample_rate: float) -> ContinuousChannels:
        """Channels ``(channel_num, channel_name)`` to stream, headers rendered once for :meth:`send_continuous`."""
        channels = tuple((int(num), str(name)) for num, name in channels)
        return ContinuousChannels(stream, float(sample_rate), channels,
                                  tuple(header_template(self._render, stream, num, name, sample_rate)
                                        for num, name in channels))

    def send_continuous(self, selected: ContinuousChannels, sample_num: int, num_samples: int, payloads: Sequence,
                        send: bool = True) -> int:
        """One callback's DATA messages: one per selected channel, ``payloads[i]`` its ``num_samples`` float32 samples.

        A payload is any buffer of little-endian float32 (bytes, a numpy slice).
        With ``send=False`` the messages are numbered but not sent (a gap, as when
        the PUB queue overflows). Returns how many were numbered.
        """
        timestamp = int(time.time() * 1000)
        data_size = 4 * num_samples
        more, send_frame = zmq.SNDMORE, self.data.send  # three sends cost a third of one send_multipart
        for template, payload in zip(selected.templates, payloads, strict=True):
            self.message_num += 1
            if send:
                send_frame(DATA_ENVELOPE, more)
                send_frame(template % (self.message_num, num_samples, sample_num, data_size, timestamp), more)
                send_frame(payload)
                self.sent += 1
        return len(selected.templates)

    def restart(self) -> None:
        """Acquisition restarted: message numbers begin again at 1."""
        self.message_num = 0

    def answer_heartbeats(self) -> int:
        """Answer every waiting request without blocking, as the plugin does; return how many were answered."""
        answered = 0
        while True:
            try:
                request = self.heartbeat.recv(zmq.NOBLOCK)
            except zmq.Again:
                return answered
            self.heartbeat.send(_reply(request[:MAX_REQUEST_BYTES]))
            try:
                self.heartbeats.append(parse_heartbeat(request))
            except (WireError, ValueError, RecursionError):
                pass
            answered += 1

    def close(self) -> None:
        """Close both sockets."""
        self.data.close(0)
        self.heartbeat.close(0)


def _reply(request: bytes) -> bytes:
    """The plugin's answer to a request on its REP socket (JUCE's ``JSON::parse`` takes an object or an array)."""
    try:
        body = json.loads(request.split(b"\x00", 1)[0].decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return UNREADABLE_REPLY
    if not isinstance(body, (dict, list)):
        return UNREADABLE_REPLY
    return EVENT_PARSED_REPLY if isinstance(body, dict) and body.get("type") == "event" else HEARTBEAT_REPLY


def _bind(socket: zmq.Socket, host: str, port: int) -> int:
    if port == 0:
        return socket.bind_to_random_port(f"tcp://{host}")
    socket.bind(f"tcp://{host}:{port}")
    return port
