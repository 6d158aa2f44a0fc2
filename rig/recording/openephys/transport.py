"""``zmq://HOST:PORT``: the Open Ephys ZMQ Interface as a recording transport (registered by scheme)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from urllib.parse import urlsplit

from protocols.spec import RecordingSpec
from rig.recording.openephys.reader import StreamParser, ZmqReader
from rig.recording.transports import Transport, register_transport


@dataclass(frozen=True)
class ZmqOptions:
    """Where the plugin's data port is."""

    host: str
    data_port: int


def parse(url: str) -> ZmqOptions:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "zmq" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ValueError(f"--neuron {url!r}: a recording is named zmq://HOST:PORT, e.g. zmq://127.0.0.1:5556 "
                         f"(the ZMQ Interface plugin's data port)")
    return ZmqOptions(parts.hostname, port)


def configure(spec: RecordingSpec, options: ZmqOptions) -> RecordingSpec:
    """The URL overrides the table's host and data port."""
    return dataclasses.replace(spec, host=options.host, data_port=options.data_port)


def open_reader(spec: RecordingSpec, options: ZmqOptions) -> ZmqReader:
    heartbeat = None
    if spec.heartbeat:
        heartbeat = f"tcp://{spec.host}:{spec.heartbeat_port or spec.data_port + 1}"
    return ZmqReader(f"tcp://{spec.host}:{spec.data_port}", heartbeat, keep_data_payloads=spec.keep_data_payloads)


def absent_hint(spec: RecordingSpec, options: ZmqOptions, reader: ZmqReader) -> str:
    beats = reader.heartbeat.replies if reader.heartbeat else 0
    return (f"{beats} heartbeat replies from {reader.heartbeat_endpoint}): is acquisition running, with the ZMQ "
            f"Interface plugin on data port {spec.data_port} and a continuous channel selected? (set [recording] "
            f"host/data_port, or --neuron zmq://HOST:PORT)")


def replay_parser(neuron: dict) -> StreamParser:
    """The live reader's parser: the same parsing, counters and run logic as live (payloads, if stored, kept)."""
    return StreamParser(keep_data_payloads=True)


ZMQ = register_transport(Transport("zmq", "zmq://HOST:PORT", "Open Ephys ZMQ Interface messages (is this the "
                                   "plugin's data port?)", parse, configure, open_reader, absent_hint, replay_parser))
