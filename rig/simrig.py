"""The simulated recording system behind ``rig sim-rig``: a neuron with no monkey, on the real wire.

Sim-rig plays the Open Ephys GUI with the ZMQ Interface plugin (DESIGN.md §3):

- a sample clock (``sample_rate``, 30 kHz by default) started from
  ``time.monotonic()``, published in processing blocks of ``block_ms``; each
  block's TTL events and spikes go out first, then one continuous channel's
  data message, whose end is the stream's watermark. A block is published
  ``lag_ms`` after its last sample, like an acquisition buffer;
- ``message_num`` from 1, 3 frames per message, NUL-terminated envelopes,
  heartbeats answered on data port + 1;
- spikes from simulated units (``simulators.neuron.SimulatedNeuron``, one per
  electrode ``"Electrode K"``, sorted id 1) that respond to the stimulus
  actually shown, through the response model of
  :mod:`simulators.response_model` (Poisson spikes from onset + latency),
  plus spontaneous spikes of the unit and unsorted threshold crossings
  (sorted id 0) on every electrode;
- a TTL pulse on ``ttl_line`` at every onset (optionally jittered).

What is shown, and when, arrives on the side channel documented in
:mod:`rig.recording.sidechannel` (PULL, data port + 2 by default).

Faults, injected on demand (``--fault KIND@ONSET[:VALUE]`` or a ``fault``
side-channel message), each keyed to the N-th onset sim-rig has seen:

- ``drop``: messages of the blocks covering onset + 60..130 ms are counted
  but not sent (a ``message_num`` gap, as when the PUB queue overflows);
- ``restart``: acquisition restarts 100 ms after the onset (counters and
  the sample clock start again);
- ``missing-ttl``: that onset gets no TTL;
- ``jitter``: that onset's TTL is moved by VALUE ms (default 30);
- ``silent``: nothing is published for VALUE s (default 1.5; ``inf`` for
  good) from that onset on; held blocks go out late, in a burst.
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import zmq

from rig.recording.openephys_wire import DataMessage, SpikeMessage, TtlMessage
from rig.recording.sidechannel import FAULT, ONSET, FaultRequest, OnsetNotice, parse_fault, parse_onset
from rig.recording.zmq_server import OpenEphysPublisher
from simulators.response_model import ResponseModel

#: Drop fault: the lost stretch, ms after the onset (inside the usual 50-200 ms response window).
DROP_MS = (60.0, 130.0)
#: Restart fault: ms after the onset.
RESTART_MS = 100.0
DEFAULT_JITTER_MS = 30.0
DEFAULT_SILENCE_S = 1.5


@dataclass
class SimRigConfig:
    """Everything sim-rig's behaviour depends on (stored by the caller for provenance)."""

    host: str = "127.0.0.1"
    data_port: int = 5556
    heartbeat_port: int | None = None
    #: None: data port + 2.
    side_port: int | None = None
    sample_rate: float = 30000.0
    block_ms: float = 10.0
    lag_ms: float = 20.0
    stream: str = "sim-rig"
    source_node: int = 100
    ttl_line: int = 0
    ttl_pulse_ms: float = 10.0
    #: Uniform TTL jitter (± ms) on every onset, like a photodiode's threshold crossing.
    ttl_jitter_ms: float = 0.0
    spontaneous_hz: float = 5.0
    unsorted_hz: float = 20.0
    seed: int = 0
    faults: list[FaultRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("sample_rate", "block_ms"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("lag_ms", "ttl_jitter_ms", "spontaneous_hz", "unsorted_hz"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


def parse_fault_option(text: str) -> FaultRequest:
    """``KIND@ONSET[:VALUE]``, e.g. ``drop@5``, ``jitter@3:40``, ``silent@8:inf``; ValueError says what is valid."""
    kind, at, rest = text.partition("@")
    if not at:
        raise ValueError(f"--fault {text!r}: expected KIND@ONSET[:VALUE], e.g. drop@5 or silent@8:2.0")
    onset, _, value = rest.partition(":")
    try:
        return FaultRequest(kind.strip(), int(onset), float(value) if value else None)
    except ValueError as exc:
        raise ValueError(f"--fault {text!r}: {exc}") from None


class SimRig:
    """Publishes a simulated neuron's spikes and onset TTLs as an Open Ephys ZMQ Interface stream.

    ``neuron`` maps images (N, 3, H, W) in [0, 1] to activations (N, channels).
    """

    def __init__(self, neuron: Callable[[torch.Tensor], np.ndarray], channels: int,
                 response_model: ResponseModel, config: SimRigConfig | None = None) -> None:
        self.neuron = neuron
        self.channels = channels
        self.response = response_model
        self.config = config or SimRigConfig()
        c = self.config
        self.publisher = OpenEphysPublisher(c.host, c.data_port, c.heartbeat_port)
        self.side = zmq.Context.instance().socket(zmq.PULL)
        self.side.setsockopt(zmq.LINGER, 0)
        side_port = c.side_port if c.side_port is not None else (self.publisher.data_port + 2 if c.data_port else 0)
        try:
            if side_port == 0:
                self.side_port = self.side.bind_to_random_port(f"tcp://{c.host}")
            else:
                self.side.bind(f"tcp://{c.host}:{side_port}")
                self.side_port = side_port
        except zmq.ZMQError as exc:
            self.publisher.close()
            raise OSError(f"cannot bind sim-rig's side channel on {c.host}:{side_port}: {exc}") from None
        self.rng = np.random.default_rng(c.seed)
        self.block = max(1, int(round(c.block_ms * c.sample_rate / 1000)))
        self.scheduled: dict[int, list[FaultRequest]] = {}
        self.next_faults: list[FaultRequest] = []
        for fault in c.faults:
            self.add_fault(fault)
        self.onsets_seen = 0
        self.late_onsets = 0
        self.faults_applied: list[tuple[str, int]] = []
        self._events: list[tuple[int, int, int, tuple]] = []  # heap of (sample, order, seq, payload)
        self._seq = 0
        self._drops: list[tuple[int, int]] = []
        self._restart_at: int | None = None
        self._silent_until = -math.inf
        self._start_clock(time.monotonic())
        self._stop = False

    # ------------------------------------------------------------------ endpoints

    @property
    def data_port(self) -> int:
        return self.publisher.data_port

    @property
    def heartbeat_port(self) -> int:
        return self.publisher.heartbeat_port

    def describe(self) -> dict:
        """Where to connect."""
        host = self.config.host
        return {"data": f"tcp://{host}:{self.data_port}", "heartbeat": f"tcp://{host}:{self.heartbeat_port}",
                "side": f"tcp://{host}:{self.side_port}"}

    # ------------------------------------------------------------------ clock

    def _start_clock(self, now: float) -> None:
        self.t0 = now
        self.published = 0  # first sample not yet published

    def sample_at(self, t: float) -> int:
        """The sample number at monotonic time ``t``."""
        return int(round((t - self.t0) * self.config.sample_rate))

    def _publish_time(self, end_sample: int) -> float:
        return self.t0 + end_sample / self.config.sample_rate + self.config.lag_ms / 1000.0

    # ------------------------------------------------------------------ inputs

    def add_fault(self, fault: FaultRequest) -> None:
        """Schedule ``fault`` at its onset number (or the next onset)."""
        if fault.at_onset is None:
            self.next_faults.append(fault)
        else:
            self.scheduled.setdefault(fault.at_onset, []).append(fault)

    def _push(self, sample: int, order: int, payload: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._events, (sample, order, self._seq, payload))

    def handle_onset(self, notice: OnsetNotice) -> None:
        """A stimulus appeared: queue its TTL and the neuron's spikes, and apply faults keyed to it."""
        c, rate = self.config, self.config.sample_rate
        index = self.onsets_seen
        self.onsets_seen += 1
        faults = self.scheduled.pop(index, []) + self.next_faults
        self.next_faults = []
        onset = self.sample_at(notice.monotonic)
        if onset < self.published:
            self.late_onsets += 1  # arrived after its block went out: the TTL cannot go back in time
            onset = self.published
        kinds = {f.kind: f for f in faults}
        for fault in faults:
            self.faults_applied.append((fault.kind, index))
        if "missing-ttl" not in kinds:
            shift = self.rng.uniform(-c.ttl_jitter_ms, c.ttl_jitter_ms) if c.ttl_jitter_ms else 0.0
            if "jitter" in kinds:
                value = kinds["jitter"].value
                shift += DEFAULT_JITTER_MS if value is None else value
            ttl = max(self.published, onset + int(round(shift * rate / 1000)))
            self._push(ttl, 0, ("ttl", 1))
            self._push(ttl + int(round(c.ttl_pulse_ms * rate / 1000)), 0, ("ttl", 0))
        image = torch.from_numpy(np.array(notice.image, dtype=np.float32))[None]
        activations = np.asarray(self.neuron(image), dtype=np.float64).reshape(1, -1)
        times = self.response.spike_times(activations, np.array([onset / rate]), rng=self.rng)
        for channel, spikes in enumerate(times):
            for t in spikes:
                self._push(max(self.published, int(round(t * rate))), 1, ("spike", channel, 1))
        if "drop" in kinds:
            self._drops.append((onset + int(DROP_MS[0] * rate / 1000), onset + int(DROP_MS[1] * rate / 1000)))
        if "restart" in kinds:
            self._restart_at = onset + int(RESTART_MS * rate / 1000)
        if "silent" in kinds:
            value = kinds["silent"].value
            self._silent_until = notice.monotonic + (DEFAULT_SILENCE_S if value is None else value)

    def _read_side(self, timeout_s: float) -> None:
        if not self.side.poll(max(0, int(timeout_s * 1000))):
            return
        while True:
            try:
                frames = self.side.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if frames[0] == ONSET:
                    self.handle_onset(parse_onset(frames))
                elif frames[0] == FAULT:
                    self.add_fault(parse_fault(frames))
            except ValueError as exc:
                print(f"sim-rig: ignored a side-channel message: {exc}", flush=True)

    # ------------------------------------------------------------------ output

    def _publish_block(self) -> None:
        c, rate = self.config, self.config.sample_rate
        start, stop = self.published, self.published + self.block
        if self._restart_at is not None and self._restart_at < stop:
            self._restart()
            return
        messages: list = []
        while self._events and self._events[0][0] < stop:
            sample, _, _, payload = heapq.heappop(self._events)
            if payload[0] == "ttl":
                messages.append(TtlMessage(0, c.stream, c.source_node, sample, c.ttl_line, payload[1],
                                           word=(1 << c.ttl_line) if payload[1] else 0))
            else:
                messages.append(self._spike(sample, payload[1], payload[2]))
        dt = self.block / rate
        for channel in range(self.channels):
            for hz, unit in ((c.spontaneous_hz, 1), (c.unsorted_hz, 0)):
                for sample in np.sort(self.rng.integers(start, stop, self.rng.poisson(hz * dt))):
                    messages.append(self._spike(int(sample), channel, unit))
        messages.sort(key=lambda m: m.sample_num)
        noise = self.rng.normal(0.0, 10.0, self.block).astype(np.float32)
        messages.append(DataMessage(0, c.stream, 0, "CH1", start, rate, noise))
        dropped = any(start < b and stop > a for a, b in self._drops)
        for msg in messages:
            if dropped:
                self.publisher.next_message_num()  # counted, never sent: the subscriber sees a gap
            else:
                self.publisher.send(msg)
        self.published = stop
        self._drops = [(a, b) for a, b in self._drops if b > stop]

    def _spike(self, sample: int, channel: int, unit: int) -> SpikeMessage:
        c = self.config
        waveform = (-40.0 * np.exp(-0.5 * ((np.arange(40) - 12) / 3.0) ** 2)).astype(np.float32)[None]
        return SpikeMessage(0, c.stream, c.source_node, f"Electrode {channel + 1}", sample, unit, waveform, [-30.0])

    def _restart(self) -> None:
        # Acquisition stops and starts again: new counters, a new sample clock, nothing pending survives.
        self.publisher.restart()
        self._events.clear()
        self._drops.clear()
        self._restart_at = None
        self._start_clock(time.monotonic())

    # ------------------------------------------------------------------ loop

    def step(self, max_wait_s: float = 0.005) -> None:
        """One turn of the loop: read the side channel, answer heartbeats, publish every block that is due."""
        now = time.monotonic()
        due = self._publish_time(self.published + self.block)
        self._read_side(min(max_wait_s, max(0.0, due - now)))
        self.publisher.answer_heartbeats()
        now = time.monotonic()
        if now < self._silent_until:
            return
        while self._publish_time(self.published + self.block) <= now:
            self._publish_block()

    def run(self, duration_s: float | None = None) -> None:
        """Loop until :meth:`stop` (from another thread), a KeyboardInterrupt or ``duration_s``."""
        end = math.inf if duration_s is None else time.monotonic() + duration_s
        while not self._stop and time.monotonic() < end:
            self.step()

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stop = True

    def close(self) -> None:
        """Close every socket."""
        self.publisher.close()
        self.side.close(0)
