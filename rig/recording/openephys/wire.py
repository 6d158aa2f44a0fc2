"""The Open Ephys "ZMQ Interface" wire format (v1.0.x, DESIGN.md §3) as pure functions.

Every message type has a ``format_*`` function (message → list of frames) and
a ``parse_*`` function (frames → message). :func:`parse_message` dispatches on
the header's ``type``. Nothing here touches a socket, so the format is tested
byte by byte.

Frames of a message::

    envelope   b"DATA\\x00" (continuous data) or b"EVENT\\x00" (TTL events and spikes)
    header     UTF-8 JSON
    payload    binary: float32 samples, a 10-byte TTL record, or float32 waveforms

The Open Ephys GUI serialises headers with JUCE, which may pretty-print them;
parsing accepts any JSON layout. Formatting here writes compact JSON
(``json.dumps`` defaults) with keys in the plugin's order.

:func:`normalise` turns a parsed message into the transport-independent
records of :mod:`rig.recording.records` that every reader yields.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from rig.recording.records import Record, Spike, Ttl, Watermark

DATA_ENVELOPE = b"DATA\x00"
EVENT_ENVELOPE = b"EVENT\x00"
#: Open Ephys event type of a TTL event (``content.type``).
TTL_EVENT_TYPE = 3
#: TTL payload: uint8 line (0-based), uint8 state (1 = on), uint64 word, little-endian.
_TTL_PAYLOAD = struct.Struct("<BBQ")
TTL_PAYLOAD_SIZE = _TTL_PAYLOAD.size  # 10
HEARTBEAT_REPLY = b"heartbeat received"


class WireError(ValueError):
    """A message does not follow the Open Ephys ZMQ Interface format; says what is wrong."""


# --------------------------------------------------------------------------- messages


@dataclass
class DataMessage:
    """One channel's block of continuous samples."""

    message_num: int
    stream: str
    channel_num: int
    channel_name: str
    sample_num: int
    sample_rate: float
    samples: np.ndarray
    timestamp: int = 0

    @property
    def end_sample(self) -> int:
        """First sample after this block: the stream's watermark once this message has arrived."""
        return self.sample_num + len(self.samples)


@dataclass
class TtlMessage:
    """A TTL line changing state."""

    message_num: int
    stream: str
    source_node: int
    sample_num: int
    line: int
    state: int
    word: int = 0
    timestamp: int = 0


@dataclass
class SpikeMessage:
    """A detected (and possibly sorted) spike with its waveform, channel-major."""

    message_num: int
    stream: str
    source_node: int
    electrode: str
    sample_num: int
    sorted_id: int
    waveform: np.ndarray  # (num_channels, num_samples) float32
    threshold: list[float] = field(default_factory=list)
    timestamp: int = 0


Message = Union[DataMessage, TtlMessage, SpikeMessage]


def _header_bytes(header: dict[str, Any]) -> bytes:
    return json.dumps(header).encode("utf-8")


def format_data(msg: DataMessage) -> list[bytes]:
    """Frames of a continuous-data message."""
    samples = np.ascontiguousarray(msg.samples, dtype="<f4")
    header = {
        "message_num": int(msg.message_num),
        "type": "data",
        "content": {
            "stream": msg.stream,
            "channel_num": int(msg.channel_num),
            "channel_name": msg.channel_name,
            "num_samples": int(samples.size),
            "sample_num": int(msg.sample_num),
            "sample_rate": msg.sample_rate,
        },
        "data_size": int(samples.nbytes),
        "timestamp": int(msg.timestamp),
    }
    return [DATA_ENVELOPE, _header_bytes(header), samples.tobytes()]


def format_ttl(msg: TtlMessage) -> list[bytes]:
    """Frames of a TTL event."""
    header = {
        "message_num": int(msg.message_num),
        "type": "event",
        "content": {
            "stream": msg.stream,
            "source_node": int(msg.source_node),
            "type": TTL_EVENT_TYPE,
            "sample_num": int(msg.sample_num),
        },
        "data_size": TTL_PAYLOAD_SIZE,
        "timestamp": int(msg.timestamp),
    }
    return [EVENT_ENVELOPE, _header_bytes(header), _TTL_PAYLOAD.pack(msg.line, msg.state, msg.word)]


def format_spike(msg: SpikeMessage) -> list[bytes]:
    """Frames of a spike: fields under ``"spike"`` and no ``data_size``, as the plugin sends them."""
    waveform = np.ascontiguousarray(np.atleast_2d(msg.waveform), dtype="<f4")
    header = {
        "message_num": int(msg.message_num),
        "type": "spike",
        "spike": {
            "stream": msg.stream,
            "source_node": int(msg.source_node),
            "electrode": msg.electrode,
            "sample_num": int(msg.sample_num),
            "num_channels": int(waveform.shape[0]),
            "num_samples": int(waveform.shape[1]),
            "sorted_id": int(msg.sorted_id),
            "threshold": [float(t) for t in msg.threshold],
        },
        "timestamp": int(msg.timestamp),
    }
    return [EVENT_ENVELOPE, _header_bytes(header), waveform.tobytes()]


def format_message(msg: Message) -> list[bytes]:
    """Frames of any message."""
    if isinstance(msg, DataMessage):
        return format_data(msg)
    if isinstance(msg, TtlMessage):
        return format_ttl(msg)
    if isinstance(msg, SpikeMessage):
        return format_spike(msg)
    raise TypeError(f"not an Open Ephys message: {type(msg).__name__}")


# --------------------------------------------------------------------------- parsing


#: Integers on the wire are C++ int64/uint64; anything beyond is damage, never a number to compute with.
_INT_LIMIT = 1 << 64


def _field(table: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``table[key]``, checked to be of ``kind``: ints within 64 bits, floats finite (never inf or NaN)."""
    if not isinstance(table, dict) or key not in table:
        raise WireError(f"{where}: missing field {key!r}")
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise WireError(f"{where}: field {key!r} has {_short(value)}, expected {getattr(kind, '__name__', kind)}")
    if isinstance(value, int) and not -_INT_LIMIT < value < _INT_LIMIT:
        raise WireError(f"{where}: field {key!r} has {_short(value)}, beyond a 64-bit integer")
    if isinstance(value, float) and not math.isfinite(value):
        raise WireError(f"{where}: field {key!r} has {value!r}, expected a finite number")
    return value


def _number(table: dict, key: str, where: str) -> float:
    """A finite number field as float (ints beyond float range are refused too)."""
    value = _field(table, key, (int, float), where)
    try:
        result = float(value)
    except OverflowError:
        raise WireError(f"{where}: field {key!r} has {_short(value)}, beyond a double") from None
    if not math.isfinite(result):
        raise WireError(f"{where}: field {key!r} has {_short(value)}, beyond a double")
    return result


def _timestamp(header: dict) -> int:
    """The optional wall-clock ``timestamp`` (ms); 0 when absent. Used for nothing but provenance."""
    if header.get("timestamp") is None:
        return 0
    return int(_number(header, "timestamp", "header"))


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message never carries a whole hostile payload."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # ints beyond Python's digit limit, deep structures
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _json_object(frame: bytes, what: str) -> Any:
    """``frame`` decoded as UTF-8 JSON; any failure (bad bytes, deep nesting, giant numbers) is a WireError."""
    try:
        return json.loads(bytes(frame).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"{what} is not UTF-8 JSON: {exc}") from None
    except (RecursionError, ValueError, OverflowError, MemoryError) as exc:
        raise WireError(f"{what} could not be decoded: {type(exc).__name__}: {_short(str(exc))}") from None


def parse_header(frames: list[bytes]) -> dict[str, Any]:
    """Check the frame count and envelope, and decode the JSON header."""
    if not isinstance(frames, (list, tuple)) or len(frames) not in (2, 3):
        raise WireError(f"expected 2 or 3 frames, got {len(frames) if isinstance(frames, (list, tuple)) else frames!r}")
    envelope = bytes(frames[0])
    if envelope not in (DATA_ENVELOPE, EVENT_ENVELOPE):
        raise WireError(f"envelope {envelope!r} is neither {DATA_ENVELOPE!r} nor {EVENT_ENVELOPE!r}")
    header = _json_object(frames[1], "header")
    if not isinstance(header, dict):
        raise WireError(f"header is JSON {type(header).__name__}, expected an object")
    _field(header, "message_num", int, "header")
    kind = _field(header, "type", str, "header")
    expected_envelope = DATA_ENVELOPE if kind == "data" else EVENT_ENVELOPE
    if kind in ("data", "event", "spike") and envelope != expected_envelope:
        raise WireError(f"a {kind!r} message came with envelope {envelope!r}, expected {expected_envelope!r}")
    return header


def _payload(frames: list[bytes], what: str) -> bytes:
    if len(frames) != 3:
        raise WireError(f"{what} message has {len(frames)} frames, expected 3 (envelope, header, payload)")
    return bytes(frames[2])


def _typed_header(frames: list[bytes], expected: str) -> dict:
    """The parsed header, checked to be of message type ``expected``."""
    header = parse_header(frames)
    if header["type"] != expected:
        article = "an" if expected[0] in "aeiou" else "a"
        raise WireError(f"expected {article} {expected!r} message, got type {header['type']!r}")
    return header


def parse_data(frames: list[bytes]) -> DataMessage:
    """A continuous-data message from its frames."""
    header = _typed_header(frames, "data")
    content = _field(header, "content", dict, "data header")
    where = "data content"
    num_samples = _field(content, "num_samples", int, where)
    payload = _payload(frames, "data")
    if num_samples < 0 or len(payload) != 4 * num_samples:
        raise WireError(f"data payload is {len(payload)} bytes, expected num_samples {num_samples} x 4")
    return DataMessage(
        message_num=header["message_num"],
        stream=_field(content, "stream", str, where),
        channel_num=_field(content, "channel_num", int, where),
        channel_name=content.get("channel_name", "") if isinstance(content.get("channel_name", ""), str) else "",
        sample_num=_field(content, "sample_num", int, where),
        sample_rate=_sample_rate(content, where),
        samples=np.frombuffer(payload, dtype="<f4").copy(),
        timestamp=_timestamp(header),
    )


#: Sample rates a recording system can have (Hz); anything else is a damaged header.
SAMPLE_RATE_RANGE = (1.0, 1e7)


def _sample_rate(content: dict, where: str) -> float:
    rate = _number(content, "sample_rate", where)
    if not SAMPLE_RATE_RANGE[0] <= rate <= SAMPLE_RATE_RANGE[1]:
        raise WireError(f"{where}: sample_rate {rate!r} is outside {SAMPLE_RATE_RANGE[0]:g}..{SAMPLE_RATE_RANGE[1]:g} Hz")
    return rate


def parse_data_watermark(frames: list[bytes]) -> tuple[int, str, int, int, float, int, str]:
    """The fields of a continuous-data message the scorer needs, without copying its samples.

    Returns ``(message_num, stream, sample_num, num_samples, sample_rate, channel_num, channel_name)``
    (``channel_name`` "" when absent or not a string, as :func:`parse_data` reads it); checks
    exactly what :func:`parse_data` checks (the payload's length included). A Neuropixels probe sends
    16.6k of these a second, so a well-formed message takes a short path (one ``json.loads``, exact
    type checks); anything else goes through the field-by-field checks that name what is wrong.
    """
    try:
        if len(frames) == 3 and frames[0] == DATA_ENVELOPE:
            header = json.loads(frames[1])
            content = header["content"]
            num, kind = header["message_num"], header["type"]
            stream, channel = content["stream"], content["channel_num"]
            sample, count, rate = content["sample_num"], content["num_samples"], content["sample_rate"]
            stamp = header.get("timestamp", 0)
            if (kind == "data" and type(num) is int and type(stream) is str and type(channel) is int
                    and type(sample) is int and type(count) is int and 0 <= count and len(frames[2]) == 4 * count
                    and -_INT_LIMIT < num < _INT_LIMIT and -_INT_LIMIT < sample < _INT_LIMIT
                    and -_INT_LIMIT < channel < _INT_LIMIT
                    and type(rate) in (int, float) and SAMPLE_RATE_RANGE[0] <= rate <= SAMPLE_RATE_RANGE[1]
                    and (stamp is None or (type(stamp) in (int, float) and -1e300 < stamp < 1e300))):
                name = content.get("channel_name", "")
                return num, stream, sample, count, float(rate), channel, name if type(name) is str else ""
    except Exception:  # noqa: BLE001 - the checked path below names what is wrong
        pass
    return _checked_data_watermark(frames)


def _checked_data_watermark(frames: list[bytes]) -> tuple[int, str, int, int, float, int, str]:
    header = _typed_header(frames, "data")
    content = _field(header, "content", dict, "data header")
    where = "data content"
    num_samples = _field(content, "num_samples", int, where)
    payload_size = len(_payload(frames, "data"))
    if num_samples < 0 or payload_size != 4 * num_samples:
        raise WireError(f"data payload is {payload_size} bytes, expected num_samples {num_samples} x 4")
    stream = _field(content, "stream", str, where)
    channel = _field(content, "channel_num", int, where)
    sample = _field(content, "sample_num", int, where)
    if "timestamp" in header:
        _timestamp(header)
    name = content.get("channel_name", "")
    return (header["message_num"], stream, sample, num_samples, _sample_rate(content, where), channel,
            name if isinstance(name, str) else "")


def parse_ttl(frames: list[bytes]) -> TtlMessage:
    """A TTL event from its frames."""
    header = _typed_header(frames, "event")
    content = _field(header, "content", dict, "event header")
    where = "event content"
    event_type = _field(content, "type", int, where)
    if event_type != TTL_EVENT_TYPE:
        raise WireError(f"event content type {event_type} is not a TTL ({TTL_EVENT_TYPE})")
    payload = _payload(frames, "TTL")
    if len(payload) != TTL_PAYLOAD_SIZE:
        raise WireError(f"TTL payload is {len(payload)} bytes, expected {TTL_PAYLOAD_SIZE}")
    line, state, word = _TTL_PAYLOAD.unpack(payload)
    return TtlMessage(
        message_num=header["message_num"],
        stream=_field(content, "stream", str, where),
        source_node=_field(content, "source_node", int, where),
        sample_num=_field(content, "sample_num", int, where),
        line=line,
        state=state,
        word=word,
        timestamp=_timestamp(header),
    )


def parse_spike(frames: list[bytes]) -> SpikeMessage:
    """A spike from its frames."""
    header = _typed_header(frames, "spike")
    spike = _field(header, "spike", dict, "spike header")
    where = "spike fields"
    channels = _field(spike, "num_channels", int, where)
    samples = _field(spike, "num_samples", int, where)
    payload = _payload(frames, "spike")
    if channels < 1 or samples < 0 or len(payload) != 4 * channels * samples:
        raise WireError(f"spike payload is {len(payload)} bytes, expected {channels} channels x {samples} samples x 4")
    threshold = spike.get("threshold", [])
    if not isinstance(threshold, list) or len(threshold) > channels or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) for t in threshold):
        raise WireError(f"{where}: field 'threshold' has {_short(threshold)}, expected at most {channels} numbers")
    return SpikeMessage(
        message_num=header["message_num"],
        stream=_field(spike, "stream", str, where),
        source_node=_field(spike, "source_node", int, where),
        electrode=str(_field(spike, "electrode", (str, int), where)),
        sample_num=_field(spike, "sample_num", int, where),
        sorted_id=_field(spike, "sorted_id", int, where),
        waveform=np.frombuffer(payload, dtype="<f4").reshape(channels, samples).copy(),
        threshold=[_number({"t": t}, "t", f"{where} threshold") for t in threshold],
        timestamp=_timestamp(header),
    )


def parse_message(frames: list[bytes]) -> Message:
    """Any message from its frames; :class:`WireError` says what is malformed (and is the only exception raised)."""
    try:
        return _parse_message(frames)
    except WireError:
        raise
    except Exception as exc:  # noqa: BLE001 - a hostile message must never end a live session
        raise WireError(f"message could not be parsed: {type(exc).__name__}: {_short(str(exc))}") from None


def _parse_message(frames: list[bytes]) -> Message:
    header = parse_header(frames)
    kind = header["type"]
    if kind == "data":
        return parse_data(frames)
    if kind == "spike":
        return parse_spike(frames)
    if kind == "event":
        return parse_ttl(frames)
    raise WireError(f"unknown message type {kind!r}; expected 'data', 'event' or 'spike'")


# --------------------------------------------------------------------------- heartbeat


def format_heartbeat(application: str, uuid: str) -> bytes:
    """The REQ message a client sends to the heartbeat port (data port + 1)."""
    return json.dumps({"application": application, "uuid": uuid, "type": "heartbeat"}).encode("utf-8")


def parse_heartbeat(message: bytes) -> dict[str, str]:
    """A heartbeat's fields; :class:`WireError` if it is not one."""
    body = _json_object(message, "heartbeat")
    if not isinstance(body, dict) or body.get("type") != "heartbeat":
        raise WireError(f"not a heartbeat: {_short(body)}")
    return {"application": str(_field(body, "application", str, "heartbeat")),
            "uuid": str(_field(body, "uuid", str, "heartbeat"))}


def normalise(msg: Message, receive_time: float) -> Record:
    """The normalised record of a parsed message."""
    if isinstance(msg, DataMessage):
        return Watermark(msg.stream, msg.end_sample, msg.sample_rate, receive_time)
    if isinstance(msg, TtlMessage):
        return Ttl(msg.stream, msg.sample_num, msg.line, msg.state)
    if isinstance(msg, SpikeMessage):
        return Spike(msg.stream, msg.sample_num, msg.electrode, msg.sorted_id)
    raise TypeError(f"not an Open Ephys message: {type(msg).__name__}")
