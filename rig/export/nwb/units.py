"""The ``units`` table: spikes decoded from a stream session's raw frames, one row per (stream, electrode, sorted id).

Spike times are mapped from the recording clock onto the display clock by the
onset-TTL pairs of each recording epoch; spikes with no such map keep only
their recording-clock samples.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from rig.export.nwb.tables import Times
from rig.recording.records import Spike
from rig.recording.source import UnitSelector
from rig.recording.spike_decoding import DecodedSpikes


def add_units(nwb, spikes: DecodedSpikes, times: Times) -> tuple[list[dict[str, Any]], int, int]:
    """One unit per (stream, electrode, sorted id).

    Returns the clock map of each recording epoch, the spikes written and
    those with no display time.
    """
    from pynwb.misc import Units

    clock_maps = [{"epoch": e, **(c or {"pairs": 0})} for e, c in enumerate(spikes.clocks)]
    nwb.units = Units(name="units", description=(
        f"Spikes decoded from the raw Open Ephys ZMQ frames stored in the session, by the live parser. "
        f"spike_times: {times.reference}, mapped from the recording clock ({spikes.sample_rate:g} Hz) onto the display "
        f"clock {times.display_clock!r} "
        f"by a linear fit of the onset-TTL pairs of each recording epoch (clock_maps: {json.dumps(clock_maps)}); "
        f"spikes of an epoch with fewer than two pairs, or of another stream than the TTLs', have no display time "
        f"and are only in spike_samples/spike_epochs (every spike, recording clock)."))
    nwb.add_unit_column("stream", "Open Ephys stream name")
    nwb.add_unit_column("electrode_name", "Open Ephys electrode name")
    nwb.add_unit_column("sorted_id", "sorted unit id (0 = unsorted threshold crossings)")
    nwb.add_unit_column("channels", "score channels (unit selectors) that count this unit's spikes")
    nwb.add_unit_column("spike_samples", "every spike, sample number on the recording clock", index=True)
    nwb.add_unit_column("spike_epochs", "recording clock epoch of each spike_samples entry; -1: another stream "
                                        "than the TTLs'", index=True)
    total = unconverted = 0
    for (stream, electrode, unit), found in sorted(spikes.units.items()):
        epochs = np.array([e for e, _ in found], dtype=np.int64)
        samples = np.array([s for _, s in found], dtype=np.int64)
        order = np.lexsort((samples, epochs))
        epochs, samples = epochs[order], samples[order]
        converted = []
        for e in np.unique(epochs):
            fit = spikes.clocks[e] if e >= 0 else None
            if fit is None:
                unconverted += int((epochs == e).sum())
                continue
            s = samples[epochs == e].astype(np.float64)
            display = (s - fit["sample_at_display_mean"]) / fit["samples_per_display_second"] + fit["display_mean"]
            converted.append(times.convert(display, spikes.epoch_first_block[e]))
        total += len(samples)
        nwb.add_unit(spike_times=np.sort(np.concatenate(converted)) if converted else np.zeros(0), stream=stream,
                     electrode_name=electrode, sorted_id=int(unit),
                     channels=_unit_channels(spikes.selectors, stream, electrode, unit),
                     spike_samples=samples, spike_epochs=epochs)
    return clock_maps, total, unconverted


def _unit_channels(selectors: list[str], stream: str, electrode: str, unit: int) -> str:
    """The score channels (selector texts) whose selector takes spikes of this unit, comma-separated."""
    probe = Spike(stream, 0, electrode, unit)
    return ",".join(s for s in selectors if UnitSelector.parse(s).matches(probe))
