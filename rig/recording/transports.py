"""Recording transports by URL scheme: ``--neuron zmq://HOST:PORT``, ``--neuron lsl://NAME`` (STYLE practice 13).

A transport registers beside its own code (``register_transport`` in its
module) with an options dataclass parsed from the URL, and supplies a live
reader (the Reader contract of :class:`~rig.recording.live.LiveReader`); the
response source (:class:`~rig.recording.source.StreamRecording`) and the
scorer are the same for every transport. Adding one is its module, its line
in :data:`BUILTIN` (so it is imported when its scheme is asked for) and its tests.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from protocols.spec import RecordingSpec

#: Scheme -> the module that registers it (imported on first use: a transport's library loads only when used).
BUILTIN = {"zmq": "rig.recording.openephys.transport", "lsl": "rig.recording.lsl.transport"}


@dataclass(frozen=True)
class Transport:
    """How a recording is reached: ``parse(url)`` -> options; ``configure(spec, options)`` -> the spec it runs with;
    ``open_reader(spec, options)`` -> a live reader (not entered); ``absent_hint(spec, options, reader)`` -> what
    to check when nothing arrives; ``wire`` names its messages for the operator; ``replay_parser(neuron
    provenance)`` -> a fresh parser of the messages a session stored (what ``rig replay --rescore`` feeds them to)."""

    scheme: str
    example: str
    wire: str
    parse: Callable[[str], Any]
    configure: Callable[[RecordingSpec, Any], RecordingSpec]
    open_reader: Callable[[RecordingSpec, Any], Any]
    absent_hint: Callable[[RecordingSpec, Any, Any], str]
    replay_parser: Callable[[dict], Any]


_REGISTRY: dict[str, Transport] = {}


def register_transport(transport: Transport) -> Transport:
    """Make ``transport`` the one for its scheme."""
    _REGISTRY[transport.scheme] = transport
    return transport


def scheme_of(url: str) -> str | None:
    """The scheme of ``url`` when it names a known transport, else None."""
    scheme, sep, _ = url.partition("://")
    return scheme if sep and (scheme in BUILTIN or scheme in _REGISTRY) else None


def transport_by_scheme(scheme: str) -> Transport:
    """The registered transport of ``scheme``; ValueError naming the valid ones."""
    if scheme not in _REGISTRY and scheme in BUILTIN:
        importlib.import_module(BUILTIN[scheme])
    if scheme not in _REGISTRY:
        raise ValueError(f"recording transport {scheme!r} is unknown; valid: {sorted(set(BUILTIN) | set(_REGISTRY))}")
    return _REGISTRY[scheme]


def transport_for(url: str) -> Transport:
    """The registered transport of ``url``'s scheme; ValueError naming the valid ones."""
    scheme = scheme_of(url)
    if scheme is None:
        raise ValueError(f"--neuron {url!r}: not a recording URL; valid schemes: {sorted(set(BUILTIN) | set(_REGISTRY))}")
    if scheme not in _REGISTRY:
        importlib.import_module(BUILTIN[scheme])
    return _REGISTRY[scheme]
