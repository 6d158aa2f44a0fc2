"""The normalised records every reader yields, whatever the transport (DESIGN.md §3).

A reader of Open Ephys ZMQ messages, of an LSL stream or of a session file
turns what it receives into these, in arrival order; the scorer
(:mod:`rig.recording.scorer`) consumes nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Spike:
    """A spike at ``sample`` on the stream's clock, from ``electrode``, sorted ``unit`` (0 = unsorted)."""

    stream: str
    sample: int
    electrode: str
    unit: int


@dataclass(frozen=True)
class Ttl:
    """A TTL ``line`` (0-based) changing to ``state`` (1 = on) at ``sample``."""

    stream: str
    sample: int
    line: int
    state: int


@dataclass(frozen=True)
class Watermark:
    """Everything of ``stream`` before ``sample`` has arrived (from a data message's end)."""

    stream: str
    sample: int
    sample_rate: float
    receive_time: float


@dataclass(frozen=True)
class Discontinuity:
    """Messages were lost (``kind="gap"``) or acquisition restarted (``kind="restart"``).

    For a gap, records with samples in [``from_sample``, ``to_sample``) may be
    missing; for a restart the sample clock began again at ``to_sample``.
    """

    kind: str
    stream: str
    from_sample: int
    to_sample: int
    lost_messages: int
    receive_time: float


Record = Union[Spike, Ttl, Watermark, Discontinuity]
