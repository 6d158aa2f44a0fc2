"""``lsl://NAME``: a rig's Lab Streaming Layer streams as a recording transport (registered by scheme)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from protocols.spec import RecordingSpec
from rig.recording.lsl.reader import LslReader
from rig.recording.lsl.wire import NOMINAL_RATE, LslParser
from rig.recording.transports import Transport, register_transport

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


@dataclass(frozen=True)
class LslOptions:
    """NAME of the streams NAME-clock, NAME-spikes and NAME-ttl (rig/recording/lsl/__init__.py)."""

    name: str


def parse(url: str) -> LslOptions:
    scheme, _, name = url.partition("://")
    if scheme != "lsl" or not _NAME.match(name):
        raise ValueError(f"--neuron {url!r}: an LSL recording is named lsl://NAME (letters, digits, '_', '-', '.'), "
                         f"e.g. lsl://rig1 for the streams rig1-clock, rig1-spikes and rig1-ttl")
    return LslOptions(name)


def configure(spec: RecordingSpec, options: LslOptions) -> RecordingSpec:
    """Nothing to change: LSL finds streams by name (the source's ``transport`` provenance records it). The sample
    clock is LSL seconds at 30 kHz unless the table sets sample_rate."""
    return spec


def open_reader(spec: RecordingSpec, options: LslOptions) -> LslReader:
    return LslReader(options.name, rate=spec.sample_rate or NOMINAL_RATE)


def absent_hint(spec: RecordingSpec, options: LslOptions, reader: LslReader) -> str:
    found = sorted(reader.resolved) or "none"
    return (f"streams resolved: {found}): is the acquisition's LSL outlet {options.name}-clock running and "
            f"visible from here (same network, or LSL's KnownPeers)? ({options.name}-spikes and {options.name}-ttl "
            f"carry spikes and TTLs; layout: rig/recording/lsl/__init__.py)")


def replay_parser(neuron: dict) -> LslParser:
    """The live reader's parser for the streams the session recorded (their name and sample clock)."""
    reader = neuron.get("reader", {}) if isinstance(neuron.get("reader"), dict) else {}
    return LslParser(str(reader.get("name", "lsl")), float(reader.get("rate", NOMINAL_RATE)))


LSL = register_transport(Transport("lsl", "lsl://NAME", "LSL chunks", parse, configure, open_reader, absent_hint,
                                   replay_parser))
