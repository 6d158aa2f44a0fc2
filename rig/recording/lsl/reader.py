"""The live reader of a rig's LSL streams (Reader contract, STYLE practice 1; layout in :mod:`rig.recording.lsl`).

``with LslReader("NAME") as reader:`` starts a thread that resolves
``NAME-clock``, ``NAME-spikes`` and ``NAME-ttl`` (retrying until they
appear; only the clock is required for a watermark), measures each host's
clock offset, and pulls every inlet all the time. Each pulled chunk becomes a
logged message (:mod:`rig.recording.lsl.wire`) stamped with
``time.monotonic()`` as it came out of the inlet and goes through
:class:`~rig.recording.lsl.wire.LslParser`. Clock runs wait :data:`HOLD_S`
(see the package docstring: streams do not keep order between them).
"""
from __future__ import annotations

import time
from typing import Any

import pylsl
import pylsl.util

from rig.recording.live import LiveReader
from rig.recording.lsl.wire import (EVENT_KINDS, NOMINAL_RATE, LslParser, format_clock, format_correction,
                                    format_events, regular_runs)

#: A clock run's watermark waits this long (arrival time) for spikes and TTLs sent before it on other streams.
HOLD_S = 0.05
#: time_correction() is asked for again this often (liblsl re-measures it in the background).
CORRECTION_EVERY_S = 2.0
#: How long a first time_correction() may take (liblsl's first measurement takes ~0.6 s).
FIRST_CORRECTION_S = 3.0
#: Missing streams are looked for again this often.
RESOLVE_EVERY_S = 0.5
ROLES = ("clock", *EVENT_KINDS)


class LslLayoutError(ValueError):
    """A stream of the expected name has the wrong shape (channels, format or rate)."""


def check_layout(role: str, info: pylsl.StreamInfo) -> str:
    """Why a resolved stream cannot serve ``role`` ("" when it can)."""
    name = info.name()
    if role == "clock":
        if info.nominal_srate() <= 0 or info.channel_format() == pylsl.cf_string:
            return f"{name}: the clock stream must have a regular rate and numeric samples"
    elif info.channel_count() != 2 or info.channel_format() != pylsl.cf_int32 or info.nominal_srate() != 0:
        return (f"{name}: expected an irregular-rate int32 stream of 2 channels, got {info.channel_count()} "
                f"channel(s), format {info.channel_format()}, rate {info.nominal_srate()}")
    return ""


class LslReader(LiveReader):
    """Pulls a rig's LSL streams in a thread into normalised records (see the module docstring)."""

    def __init__(self, name: str, *, rate: float = NOMINAL_RATE, stream: str | None = None, hold_s: float = HOLD_S,
                 max_pending: int = 500_000, max_buffer_s: int = 30) -> None:
        super().__init__(max_pending)
        if not name or "://" in name:
            raise ValueError(f"LSL stream name {name!r}: expected the NAME of NAME-clock, NAME-spikes, NAME-ttl")
        self.name = name
        self.endpoint = f"lsl://{name}"
        self.rate = rate
        self.hold_s = hold_s
        self.max_buffer_s = max_buffer_s
        self.parser = LslParser(stream or name, rate)
        self.inlets: dict[str, tuple[pylsl.StreamInlet, str, float]] = {}  # role -> (inlet, host, srate)
        self.resolved: dict[str, dict[str, Any]] = {}
        self._held: list[tuple[list[bytes], float]] = []
        self._open = False

    # ------------------------------------------------------------------ lifecycle

    def _is_open(self) -> bool:
        return self._open

    def __enter__(self) -> "LslReader":
        self._open = True
        self._start_thread(self._run, f"lsl-reader {self.name}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the thread and close the inlets; safe to call twice."""
        self._stop_thread(10.0)
        for inlet, _, _ in self.inlets.values():
            inlet.close_stream()
        self.inlets.clear()
        self._open = False

    def get_initial(self) -> dict[str, Any]:
        """What this reader reads (for provenance): names, rate, hold, and the streams as resolved so far."""
        return {"transport": "lsl", "name": self.name, "streams": {r: f"{self.name}-{r}" for r in ROLES},
                "rate": self.rate, "hold_s": self.hold_s, "resolved": dict(self.resolved),
                "corrections": [list(m) for m in self.parser.measured], "max_pending": self.max_pending,
                "liblsl": pylsl.library_version()}

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            next_resolve = next_correction = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_resolve and len(self.inlets) < len(ROLES):
                    self._resolve()
                    next_resolve = now + RESOLVE_EVERY_S
                if now >= next_correction:
                    self._corrections(0.0)
                    next_correction = now + CORRECTION_EVERY_S
                if not self._pull():
                    time.sleep(0.001)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller by read_next
            self._failure = exc

    def _resolve(self) -> None:
        for role in ROLES:
            if role in self.inlets:
                continue
            found = pylsl.resolve_byprop("name", f"{self.name}-{role}", 1, 0.05)
            if not found:
                continue
            info = found[0]
            problem = check_layout(role, info)
            if problem:
                raise LslLayoutError(f"{problem} (the layout rig expects: rig/recording/lsl/__init__.py)")
            inlet = pylsl.StreamInlet(info, max_buflen=self.max_buffer_s, recover=True)
            inlet.open_stream(5.0)
            host = info.hostname()
            self.inlets[role] = (inlet, host, info.nominal_srate())
            self.resolved[role] = {"name": info.name(), "host": host, "source_id": info.source_id(),
                                   "uid": info.uid(), "srate": info.nominal_srate(),
                                   "channels": info.channel_count(), "resolved_at": time.monotonic()}
            if host not in self.parser.corrections:
                self._correction(role, inlet, host, FIRST_CORRECTION_S)

    def _corrections(self, timeout: float) -> None:
        for role, (inlet, host, _) in list(self.inlets.items()):
            self._correction(role, inlet, host, timeout)

    def _correction(self, role: str, inlet: pylsl.StreamInlet, host: str, timeout: float) -> None:
        try:
            value = inlet.time_correction(timeout)
        except pylsl.util.TimeoutError:
            return
        known = [m for m in self.parser.measured if m[0] == host and m[1] == role]
        if not known or known[-1][2] != value:  # every new measurement is logged, the same one once
            self.handle_locked(self.parser.handle, format_correction(host, role, value), time.monotonic())

    def _pull(self) -> bool:
        """Pull every inlet once; release held clock runs that have waited long enough. Whether anything came."""
        got = False
        clock = self.inlets.get("clock")
        if clock is not None:
            inlet, host, srate = clock
            _, stamps = inlet.pull_chunk(0.0, max_samples=1 << 16, as_numpy=True)
            if len(stamps):
                got = True
                arrived = time.monotonic()
                for start, stop in regular_runs(stamps, srate):
                    self._held.append((format_clock(host, srate, stamps[start], stamps[stop - 1], stop - start),
                                       arrived))
        events_pulled = time.monotonic()
        for role in ("ttl", "spikes"):
            entry = self.inlets.get(role)
            if entry is None:
                continue
            inlet, host, _ = entry
            values, stamps = inlet.pull_chunk(0.0, max_samples=1 << 16, as_numpy=True)
            if len(stamps):
                got = True
                self.handle_locked(self.parser.handle, format_events(role, host, stamps, values), time.monotonic())
        while self._held and self._held[0][1] <= events_pulled - self.hold_s:
            frames, arrived = self._held.pop(0)
            self.handle_locked(self.parser.handle, frames, arrived)
        return got
