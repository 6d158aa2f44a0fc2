"""Choosing a recording as the neuron: ``--neuron URL`` plus the protocol's ``[recording]`` table.

The protocol file stays the one that ran in silico; only the neuron changes.
``[recording]`` (optional) says which TTL line carries onsets, which
electrodes/units are channels and how responses are scored; the neuron URL
says where the stream is, by transport (:mod:`rig.recording.transports`):
``zmq://HOST:PORT`` (Open Ephys ZMQ Interface; overrides the table's host and
data port) or ``lsl://NAME`` (Lab Streaming Layer streams NAME-clock,
NAME-spikes, NAME-ttl).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from protocols.spec import ProtocolSpec, RecordingSpec
from rig.display import Display
from rig.display.headless import HeadlessDisplay
from rig.recording.sidechannel import SimRigLink
from rig.recording.source import StreamRecording, recording_from_url
from rig.recording.transports import scheme_of

#: A headless display in front of a recording shows stimuli in real time: 100 ms on, 150 ms off (DESIGN.md §4).
DEFAULT_PACE_S = (0.1, 0.15)


def is_recording(units: Sequence[str]) -> bool:
    """Whether the neuron choice names a recording stream rather than simulated units."""
    return any(scheme_of(u) is not None for u in units)


def recording_source(spec: ProtocolSpec, units: Sequence[str]) -> StreamRecording | None:
    """The recording when ``units`` is one recording URL, None for simulated units."""
    if not is_recording(units):
        return None
    if len(units) != 1:
        raise ValueError(f"--neuron: a recording is one URL (zmq://HOST:PORT or lsl://NAME) and nothing else, got "
                         f"{list(units)}; choose channels with [recording] units")
    return recording_from_url(getattr(spec, "recording", None) or RecordingSpec(), units[0])


def pace_headless(display: Display, pace: tuple[float, float] | None) -> None:
    """Make an unpaced headless display run in real time (``pace`` or the default), in front of a recording."""
    if isinstance(display, HeadlessDisplay) and getattr(display, "pace", None) is None:
        # Unpaced, every onset would fall on the same instant and no TTL could be told apart.
        display.pace = tuple(pace) if pace is not None else DEFAULT_PACE_S


def attach(source: StreamRecording, display: Display, sim_link: str | None = None,
           pace: tuple[float, float] | None = None) -> dict:
    """Wire ``source`` to ``display`` (onset stamps, optional sim-rig side channel), then connect.

    Connecting waits for the stream, so a wrong port fails here, before the
    first block. Returns provenance for the session file.
    """
    pace_headless(display, pace)
    display.add_onset_listener(source.on_onset)
    provenance: dict = {"recording": dataclasses.asdict(source.spec)}
    if sim_link is not None:
        inner = getattr(display, "inner", display)  # a display running trials wraps the one that has the clock
        offset = getattr(inner, "monotonic_offset", 0.0 if isinstance(inner, HeadlessDisplay) else None)
        link = SimRigLink(sim_link, clock=type(display).__name__, monotonic_offset=offset)
        display.add_onset_listener(link)
        runner = getattr(display, "runner", None)  # trials: sim-rig's monkey sees what the screen shows
        if runner is not None and hasattr(link, "on_trial_event"):
            runner.add_listener(link.on_trial_event)
        source.sim_link = link
        provenance["sim_link"] = sim_link
    source.start()
    return provenance
