"""The simulated recording system behind ``rig sim-rig``: a neuron with no monkey, on the real wire.

Sim-rig is a double of the Open Ephys GUI (1.0) with the ZMQ Interface plugin,
written from their C++ source (DESIGN.md §3 and §3b), not from our reader:

- **Callbacks.** A sample clock (``sample_rate``, 30 kHz by default) started
  from ``time.monotonic()`` is processed in callbacks of ``block_ms``. The GUI's
  callbacks follow a 44.1 kHz audio clock in buffers of 1024 (``AudioComponent``),
  i.e. :data:`CALLBACK_MS` ≈ 23.2 ms, so at 30 kHz a callback holds 696 or 697
  samples (boundaries at ``round(k * samples_per_callback)``). A callback is
  published ``lag_ms`` after its last sample.
- **What a callback sends.** Its TTL events and spikes, then ONE DATA message
  per selected continuous channel (``data_channels``: ``"CH1"``.. with
  ``channel_num`` 0..N-1, all with the callback's ``sample_num`` and
  ``num_samples``; the payload is noise from a precomputed bank). Events come
  in the GUI's event-buffer order (a JUCE ``MidiBuffer`` sorted by in-block
  position): TTLs at the callback's first sample, then every spike (the Spike
  Detector adds them at position 0; electrode by electrode, each in sample
  order), then the remaining TTLs in sample order. So events are NOT sorted by
  sample number within a callback.
- **Late spikes.** The Spike Detector scans a buffer only up to 100 samples
  before its end (``OVERFLOW_BUFFER_SAMPLES / 2``); a spike in those last
  samples goes out in the next callback, after this one's DATA, with its own
  (earlier) sample number.
- **Headers** are JUCE-pretty (:mod:`rig.recording.openephys.juce_json`, CRLF), unless
  ``header_style = "compact"``; ``message_num`` from 1 after every
  (re)start; heartbeats are answered on data port + 1 as the plugin does.
- **Spikes** come from simulated units (``simulators.neuron.SimulatedNeuron``,
  one per electrode ``"Electrode K"``, sorted id 1) that respond to the
  stimulus actually shown, through :mod:`simulators.response_model` (Poisson
  spikes from the visible onset + the model's latency), plus spontaneous
  spikes of the unit and unsorted threshold crossings (sorted id 0).
- **Display latency.** The screen shows an image ``display_latency_ms`` after
  the onset time the display reports (input lag plus photodiode; 10-100 ms on
  real monitors): the photodiode edge AND the neuron's view both happen then.
- **Photodiode** on ``ttl_line``: ``"toggle"`` (the PsychoPy patch switches
  white/black at each onset, so edges alternate rising, falling, ...) or
  ``"pulse"`` (rising at the onset, falling ``ttl_pulse_ms`` later). The line
  level is physical: it persists across an acquisition restart. The TTL
  ``word`` carries the level of every line (bit per line) after the event.
  A ``missing-ttl`` onset leaves the patch as it was (no edge, no change).
- **Sync line** (``sync_line``, optional): 10 ms pulses at ``sync_hz`` on
  another line, phase-locked to sim-rig's start, not to acquisition; the rig
  must ignore it.

What is shown, and when, arrives on the side channel documented in
:mod:`rig.recording.sidechannel` (PULL, data port + 2 by default). A bad
side-channel message (malformed, non-finite, hostile) is counted, reported
(the first :data:`BAD_MESSAGES_SHOWN` verbatim-ish, then only counted) and
skipped: sim-rig never dies of one.

Faults, injected on demand (``--fault KIND@ONSET[:VALUE]`` or a ``fault``
side-channel message), each keyed to the N-th onset sim-rig has seen, times
from the visible onset (reported onset + display latency):

- ``drop``: the callbacks covering onset + 60..130 ms are counted but not
  sent (a ``message_num`` gap, as when the PUB queue overflows);
- ``restart``: acquisition restarts 100 ms after the onset (counters and the
  sample clock start again; pending events and spikes are lost);
- ``missing-ttl``: that onset gets no TTL;
- ``jitter``: that onset's TTL is moved by VALUE ms (default 30);
- ``silent``: nothing is published for VALUE s (default 1.5; ``inf`` for
  good) from that onset on; held callbacks go out late, in a burst.

Ground truth (``truth_file``): JSON lines, flushed as they happen (at least
once per callback), so a test can check every score against what was
published. ``epoch`` starts at 0 and grows by 1 per acquisition restart;
samples count from 0 in each epoch.

- ``{"type": "onset", "index": N, "stimulus_id": str, "block": int,
  "position": int, "epoch": E, "onset_sample": int, "ttl_sample": int|null,
  "edge": "rising"|"falling"|null, "faults": [kinds]}``: ``onset_sample`` is
  the reported onset on the sample clock; ``ttl_sample`` the photodiode edge
  after display latency and jitter (null for ``missing-ttl``); with a pulse,
  the rising edge (its falling edge follows ``ttl_pulse_ms`` later).
- ``{"type": "spike", "epoch": E, "electrode": str, "unit": int,
  "sample": int, "sent": bool}`` for every spike generated, written when its
  callback goes out (``sent`` false when a drop swallowed it, or a restart
  or the end of the run came first).
- ``{"type": "ttl", "epoch": E, "line": int, "state": 0|1, "sample": int,
  "sent": bool}`` for every TTL edge, photodiode and sync alike (same rules).
- ``{"type": "restart", "epoch": E}`` when acquisition restarts (E: the new epoch).
- ``{"type": "clock", "epoch": E, "lsl_origin_sample": int}`` (``transport = "lsl"``): sample 0 of the
  epoch was sent with LSL timestamp ``lsl_origin_sample / sample_rate``.

With ``transport = "lsl"`` the same events go out as LSL samples
(:mod:`rig.recording.lsl.outlets`: ``lsl_name``-clock, -spikes, -ttl), sample
``s`` stamped ``t0 + s / sample_rate`` on ``time.monotonic`` (LSL's clock);
a drop leaves a gap in the clock stream; heartbeats, message numbers, header
styles and the restart fault have no LSL meaning.
"""
from __future__ import annotations

import heapq
import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

import numpy as np
import torch
import zmq

from rig.recording.openephys.wire import SpikeMessage, TtlMessage
from rig.recording.sidechannel import (FAULT, MAX_FRAME_BYTES, ONSET, FaultRequest, OnsetNotice, parse_fault,
                                       parse_onset)
from rig.recording.openephys.server import HEADER_STYLES, OpenEphysPublisher
from simulators.response_model import ResponseModel

#: Drop fault: the lost stretch, ms after the visible onset (inside the usual 50-200 ms response window).
DROP_MS = (60.0, 130.0)
#: Restart fault: ms after the visible onset.
RESTART_MS = 100.0
DEFAULT_JITTER_MS = 30.0
DEFAULT_SILENCE_S = 1.5
#: The GUI's processing callback: 1024 samples of a 44.1 kHz audio clock (AudioComponent), in ms.
CALLBACK_MS = 1000.0 * 1024 / 44100.0
#: Spike Detector: spikes in a buffer's last OVERFLOW_BUFFER_SAMPLES / 2 samples go out in the next callback.
LATE_SPIKE_SAMPLES = 100
SYNC_PULSE_MS = 10.0
PHOTODIODES = ("toggle", "pulse")
#: Bad side-channel messages reported one by one; after that they are only counted.
BAD_MESSAGES_SHOWN = 20
TRANSPORTS = ("zmq", "lsl")
#: TTL lines a word can hold.
TTL_LINES = 64
_NOISE_BANK = 1 << 16


@dataclass
class SimRigConfig:
    """Everything sim-rig's behaviour depends on (stored by the caller for provenance).

    The defaults keep in-process callers' streams as they were (10 ms blocks,
    pulse photodiode, no display latency); ``rig sim-rig``'s flags default to a
    real rig's (:data:`CALLBACK_MS`, ``toggle``, 20 ms).
    """

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
    #: Selected continuous channels: one DATA message each per callback.
    data_channels: int = 1
    photodiode: str = "pulse"
    display_latency_ms: float = 0.0
    sync_line: int | None = None
    sync_hz: float = 1.0
    header_style: str = "juce"
    truth_file: str | None = None
    #: The PUB queue in messages (the plugin's holds 1000).
    send_queue: int = 1000
    #: "zmq" (the Open Ephys ZMQ Interface) or "lsl" (streams lsl_name-clock/-spikes/-ttl, rig/recording/lsl).
    transport: str = "zmq"
    lsl_name: str = "sim-rig"

    def __post_init__(self) -> None:
        for name in ("sample_rate", "block_ms", "ttl_pulse_ms", "sync_hz"):
            if not _finite(getattr(self, name)) or not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        for name in ("lag_ms", "ttl_jitter_ms", "spontaneous_hz", "unsorted_hz", "display_latency_ms"):
            if not _finite(getattr(self, name)) or not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if not 1 <= self.send_queue <= 10_000_000:
            raise ValueError(f"send_queue must be 1..10000000 messages, got {self.send_queue!r}")
        if not 1 <= self.data_channels <= 4096:
            raise ValueError(f"data_channels must be 1..4096, got {self.data_channels!r}")
        if self.photodiode not in PHOTODIODES:
            raise ValueError(f"photodiode {self.photodiode!r} is unknown; valid: {list(PHOTODIODES)}")
        if self.header_style not in HEADER_STYLES:
            raise ValueError(f"header_style {self.header_style!r} is unknown; valid: {list(HEADER_STYLES)}")
        for name in ("ttl_line", "sync_line"):
            line = getattr(self, name)
            if line is not None and not 0 <= line < TTL_LINES:
                raise ValueError(f"{name} must be a TTL line 0..{TTL_LINES - 1}, got {line!r}")
        if self.sync_line is not None:
            if self.sync_line == self.ttl_line:
                raise ValueError(f"sync_line {self.sync_line} is the photodiode's ttl_line: give it another line")
            if not self.sync_hz * SYNC_PULSE_MS / 1000.0 < 0.5:
                raise ValueError(f"sync_hz {self.sync_hz!r}: {SYNC_PULSE_MS:g} ms pulses need sync_hz < 50")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport {self.transport!r} is unknown; valid: {list(TRANSPORTS)}")
        if self.transport == "lsl" and any(f.kind == "restart" for f in self.faults):
            raise ValueError("the restart fault needs transport zmq: LSL time never starts again")
        if not self.ttl_jitter_ms <= 1000:
            raise ValueError(f"ttl_jitter_ms must be <= 1000, got {self.ttl_jitter_ms!r}")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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


class TruthLog:
    """The ground-truth JSON lines (see the module docstring); a no-op without a path."""

    def __init__(self, path: str | None) -> None:
        self._file: TextIO | None = open(path, "w", encoding="utf-8") if path else None

    def write(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SimRig:
    """Publishes a simulated neuron's spikes and onset TTLs as an Open Ephys ZMQ Interface stream (or over LSL).

    ``neuron`` maps images (N, 3, H, W) in [0, 1] to activations (N, channels).
    """

    def __init__(self, neuron: Callable[[torch.Tensor], np.ndarray], channels: int,
                 response_model: ResponseModel, config: SimRigConfig | None = None) -> None:
        self.neuron = neuron
        self.channels = channels
        self.response = response_model
        self.config = config or SimRigConfig()
        c = self.config
        self.truth = TruthLog(c.truth_file)  # first: a bad path fails before any socket is bound
        try:
            if c.transport == "lsl":  # the same events, published as LSL samples stamped on this clock
                from rig.recording.lsl.outlets import LslPublisher
                self.publisher = LslPublisher(c.lsl_name, c.sample_rate,
                                              lambda sample: self.t0 + sample / c.sample_rate)
            else:
                self.publisher = OpenEphysPublisher(c.host, c.data_port, c.heartbeat_port,
                                                    header_style=c.header_style, send_queue=c.send_queue)
        except OSError:
            self.truth.close()
            raise
        self.side = zmq.Context.instance().socket(zmq.PULL)
        self.side.setsockopt(zmq.LINGER, 0)
        self.side.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)  # a bigger message drops its peer, not sim-rig
        side_port = c.side_port if c.side_port is not None else (
            self.publisher.data_port + 2 if c.data_port and c.transport == "zmq" else 0)
        try:
            if side_port == 0:
                self.side_port = self.side.bind_to_random_port(f"tcp://{c.host}")
            else:
                self.side.bind(f"tcp://{c.host}:{side_port}")
                self.side_port = side_port
        except zmq.ZMQError as exc:
            self.publisher.close()
            self.truth.close()
            raise OSError(f"cannot bind sim-rig's side channel on {c.host}:{side_port}: {exc}") from None
        self.rng = np.random.default_rng(c.seed)
        self.samples_per_callback = c.block_ms * c.sample_rate / 1000.0
        longest = int(math.ceil(self.samples_per_callback)) + 1
        self._noise = np.random.default_rng([c.seed, 1]).normal(0.0, 10.0, max(_NOISE_BANK, 4 * longest)).astype("<f4")
        self._noise_at = 0
        self._selected = self.publisher.continuous(c.stream, [(i, f"CH{i + 1}") for i in range(c.data_channels)],
                                                   c.sample_rate)
        self._waveform = (-40.0 * np.exp(-0.5 * ((np.arange(40) - 12) / 3.0) ** 2)).astype(np.float32)[None]
        self.scheduled: dict[int, list[FaultRequest]] = {}
        self.next_faults: list[FaultRequest] = []
        for fault in c.faults:
            self.add_fault(fault)
        self.onsets_seen = 0
        self.late_onsets = 0
        self.faults_applied: list[tuple[str, int]] = []
        self.bad_messages = 0
        self.bad_examples: list[str] = []
        self.epoch = 0
        self._ttls: list[tuple[int, int, int, int]] = []  # heap of (sample, seq, line, state)
        self._spikes: list[tuple[int, int, int, int]] = []  # heap of (sample, seq, electrode index, unit)
        self._seq = 0
        self._drops: list[tuple[int, int]] = []
        self._restart_at: int | None = None
        self._silent_until = -math.inf
        self._photodiode_level = 0  # the patch's level once every scheduled edge has happened
        self._levels = 0  # every line's level as last published (the TTL word)
        self._sync_origin = time.monotonic()
        self._start_clock(self._sync_origin)
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
        if self.config.transport == "lsl":
            name = self.config.lsl_name
            return {"data": f"lsl://{name}", "streams": [f"{name}-clock", f"{name}-spikes", f"{name}-ttl"],
                    "side": f"tcp://{host}:{self.side_port}"}
        return {"data": f"tcp://{host}:{self.data_port}", "heartbeat": f"tcp://{host}:{self.heartbeat_port}",
                "side": f"tcp://{host}:{self.side_port}"}

    # ------------------------------------------------------------------ clock

    def _start_clock(self, now: float) -> None:
        c = self.config
        self.t0 = now
        if c.transport == "lsl":
            # On whole samples of time.monotonic (= LSL's local_clock on Linux), so the receiver's sample
            # round((t0 + s / rate) * rate) is this sample plus a constant, never a half-sample tie.
            self.t0 = round(now * c.sample_rate) / c.sample_rate
            self.truth.write({"type": "clock", "epoch": self.epoch, "lsl_origin_sample": round(now * c.sample_rate)})
        self._callback = 0  # callbacks published in this epoch
        self.published = 0  # first sample not yet published
        sync = self.config.sync_line
        if sync is not None:
            self._set_level(sync, self._sync_level(now))

    def _boundary(self, k: int) -> int:
        """First sample of callback ``k`` of the epoch."""
        return int(round(k * self.samples_per_callback))

    def sample_at(self, t: float) -> int:
        """The sample number at monotonic time ``t``."""
        return int(round((t - self.t0) * self.config.sample_rate))

    def _samples(self, ms: float) -> int:
        return int(round(ms * self.config.sample_rate / 1000.0))

    def _publish_time(self, end_sample: int) -> float:
        return self.t0 + end_sample / self.config.sample_rate + self.config.lag_ms / 1000.0

    def _set_level(self, line: int, state: int) -> None:
        self._levels = (self._levels | (1 << line)) if state else (self._levels & ~(1 << line))

    # ------------------------------------------------------------------ inputs

    def add_fault(self, fault: FaultRequest) -> None:
        """Schedule ``fault`` at its onset number (or the next onset)."""
        if fault.at_onset is None:
            self.next_faults.append(fault)
        else:
            self.scheduled.setdefault(fault.at_onset, []).append(fault)

    def _push_ttl(self, sample: int, line: int, state: int) -> None:
        self._seq += 1
        heapq.heappush(self._ttls, (sample, self._seq, line, state))

    def _push_spike(self, sample: int, electrode: int, unit: int) -> None:
        self._seq += 1
        heapq.heappush(self._spikes, (sample, self._seq, electrode, unit))

    def handle_onset(self, notice: OnsetNotice) -> None:
        """A stimulus appeared: queue its photodiode edge and the neuron's spikes, and apply faults keyed to it."""
        c, rate = self.config, self.config.sample_rate
        image = torch.from_numpy(np.array(notice.image, dtype=np.float32))[None]
        activations = np.asarray(self.neuron(image), dtype=np.float64).reshape(1, -1)
        if not np.isfinite(activations).all():
            raise ValueError(f"the simulated neuron answered stimulus {notice.stimulus_id!r} with non-finite values")
        # Nothing above changes sim-rig: a stimulus the neuron cannot take leaves no trace but a count.
        index = self.onsets_seen
        self.onsets_seen += 1
        faults = self.scheduled.pop(index, []) + self.next_faults
        self.next_faults = []
        kinds = {f.kind: f for f in faults}
        for fault in faults:
            self.faults_applied.append((fault.kind, index))
        onset = self.sample_at(notice.monotonic)
        visible = onset + self._samples(c.display_latency_ms)
        ttl_sample, edge = None, None
        if "missing-ttl" not in kinds:
            shift = self.rng.uniform(-c.ttl_jitter_ms, c.ttl_jitter_ms) if c.ttl_jitter_ms else 0.0
            if "jitter" in kinds:
                value = kinds["jitter"].value
                shift += DEFAULT_JITTER_MS if value is None else value
            ttl_sample = visible + self._samples(shift)
            if ttl_sample < self.published:
                self.late_onsets += 1  # its callback already went out: the TTL cannot go back in time
                ttl_sample = self.published
            if c.photodiode == "toggle":
                self._photodiode_level ^= 1
                self._push_ttl(ttl_sample, c.ttl_line, self._photodiode_level)
                edge = "rising" if self._photodiode_level else "falling"
            else:
                self._push_ttl(ttl_sample, c.ttl_line, 1)
                self._push_ttl(ttl_sample + self._samples(c.ttl_pulse_ms), c.ttl_line, 0)
                edge = "rising"
        self.truth.write({"type": "onset", "index": index, "stimulus_id": notice.stimulus_id, "block": notice.block,
                          "position": notice.position, "epoch": self.epoch, "onset_sample": onset,
                          "ttl_sample": ttl_sample, "edge": edge, "faults": [f.kind for f in faults]})
        self.truth.flush()
        times = self.response.spike_times(activations, np.array([visible / rate]), rng=self.rng)
        for electrode, spikes in enumerate(times):
            for t in spikes:
                self._push_spike(max(self.published, int(round(t * rate))), electrode, 1)
        if "drop" in kinds:
            self._drops.append((visible + self._samples(DROP_MS[0]), visible + self._samples(DROP_MS[1])))
        if "restart" in kinds:
            self._restart_at = visible + self._samples(RESTART_MS)
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
                else:
                    raise ValueError(f"unknown message {frames[0][:20]!r}; valid: {ONSET!r}, {FAULT!r}")
            except Exception as exc:  # noqa: BLE001 - a bad message, or a stimulus the neuron refuses
                self._bad_message(exc)  # ... never ends sim-rig

    def _bad_message(self, exc: Exception) -> None:
        self.bad_messages += 1
        if self.bad_messages <= BAD_MESSAGES_SHOWN:
            text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            text = text if len(text) <= 200 else text[:200] + "..."
            self.bad_examples.append(text)
            print(f"sim-rig: ignored a side-channel message: {text}", flush=True)
            if self.bad_messages == BAD_MESSAGES_SHOWN:
                print("sim-rig: further bad side-channel messages are only counted", flush=True)

    # ------------------------------------------------------------------ output

    def _sync_level(self, t: float) -> int:
        phase = ((t - self._sync_origin) * self.config.sync_hz) % 1.0
        return int(phase / self.config.sync_hz < SYNC_PULSE_MS / 1000.0)

    def _sync_edges(self, start: int, stop: int) -> list[tuple[int, int, int, int]]:
        """Sync pulses' edges in samples [start, stop) of this epoch, as (sample, seq, line, state)."""
        c = self.config
        if c.sync_line is None:
            return []
        rate, hz = c.sample_rate, c.sync_hz
        first = math.floor((self.t0 + start / rate - self._sync_origin) * hz) - 1
        last = math.floor((self.t0 + stop / rate - self._sync_origin) * hz) + 1
        edges = []
        for n in range(first, last + 1):
            rise = self._sync_origin + n / hz
            for t, state in ((rise, 1), (rise + SYNC_PULSE_MS / 1000.0, 0)):
                sample = int(round((t - self.t0) * rate))
                if start <= sample < stop:
                    edges.append((sample, 0, c.sync_line, state))
        return edges

    def _publish_block(self) -> None:
        c, rate = self.config, self.config.sample_rate
        start, stop = self.published, self._boundary(self._callback + 1)
        if self._restart_at is not None and self._restart_at < stop:
            self._restart()
            return
        ttls = []
        while self._ttls and self._ttls[0][0] < stop:
            ttls.append(heapq.heappop(self._ttls))
        ttls = sorted(ttls + self._sync_edges(start, stop))
        dt = (stop - start) / rate
        for electrode in range(self.channels):
            for hz, unit in ((c.spontaneous_hz, 1), (c.unsorted_hz, 0)):
                for sample in self.rng.integers(start, stop, self.rng.poisson(hz * dt)):
                    self._push_spike(int(sample), electrode, unit)
        spikes = []
        cutoff = stop - LATE_SPIKE_SAMPLES  # the Spike Detector leaves the last 100 samples for the next callback
        while self._spikes and self._spikes[0][0] < cutoff:
            spikes.append(heapq.heappop(self._spikes))
        spikes.sort(key=lambda s: (s[2], s[0], s[1]))
        send = not any(start < b and stop > a for a, b in self._drops)
        # The GUI's event buffer: TTLs at the callback's first sample, the spikes (added at position 0), later TTLs.
        for ttl in [t for t in ttls if t[0] <= start]:
            self._emit_ttl(ttl, send)
        for sample, _, electrode, unit in spikes:
            self.truth.write({"type": "spike", "epoch": self.epoch, "electrode": f"Electrode {electrode + 1}",
                              "unit": unit, "sample": sample, "sent": send})
            msg = SpikeMessage(0, c.stream, c.source_node, f"Electrode {electrode + 1}", sample, unit,
                               self._waveform, [-30.0])
            self._send(msg, send)
        for ttl in [t for t in ttls if t[0] > start]:
            self._emit_ttl(ttl, send)
        n = stop - start
        span = len(self._noise) - n
        payloads = []
        for _ in range(c.data_channels):
            at = self._noise_at % span
            payloads.append(self._noise[at:at + n])
            self._noise_at += 7919
        self.publisher.send_continuous(self._selected, start, n, payloads, send=send)
        self.truth.flush()
        self.published = stop
        self._callback += 1
        self._drops = [(a, b) for a, b in self._drops if b > stop]

    def _emit_ttl(self, ttl: tuple[int, int, int, int], send: bool) -> None:
        sample, _, line, state = ttl
        self._set_level(line, state)
        self.truth.write({"type": "ttl", "epoch": self.epoch, "line": line, "state": state, "sample": sample,
                          "sent": send})
        c = self.config
        self._send(TtlMessage(0, c.stream, c.source_node, sample, line, state, word=self._levels), send)

    def _send(self, msg, send: bool) -> None:
        if send:
            self.publisher.send(msg)
        else:
            self.publisher.next_message_num()  # counted, never sent: the subscriber sees a gap

    def _discard_pending(self) -> None:
        """Pending TTLs and spikes never go out (a restart, or the end): the truth says so."""
        for sample, _, line, state in sorted(self._ttls):
            self.truth.write({"type": "ttl", "epoch": self.epoch, "line": line, "state": state, "sample": sample,
                              "sent": False})
        for sample, _, electrode, unit in sorted(self._spikes):
            self.truth.write({"type": "spike", "epoch": self.epoch, "electrode": f"Electrode {electrode + 1}",
                              "unit": unit, "sample": sample, "sent": False})
        self._ttls.clear()
        self._spikes.clear()

    def _restart(self) -> None:
        # Acquisition stops and starts again: new counters, a new sample clock, nothing pending survives,
        # but the photodiode patch keeps its level (it is on the screen, not in the acquisition board).
        self._discard_pending()
        self._set_level(self.config.ttl_line, self._photodiode_level)
        self.publisher.restart()
        self._drops.clear()
        self._restart_at = None
        self.epoch += 1
        self.truth.write({"type": "restart", "epoch": self.epoch})
        self.truth.flush()
        self._start_clock(time.monotonic())

    # ------------------------------------------------------------------ loop

    def step(self, max_wait_s: float = 0.005) -> None:
        """One turn of the loop: read the side channel, answer heartbeats, publish every callback that is due."""
        now = time.monotonic()
        due = self._publish_time(self._boundary(self._callback + 1))
        self._read_side(min(max_wait_s, max(0.0, due - now)))
        self.publisher.answer_heartbeats()
        now = time.monotonic()
        if now < self._silent_until:
            return
        while self._publish_time(self._boundary(self._callback + 1)) <= now:
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
        """Close every socket and the truth file."""
        self._discard_pending()
        self.truth.close()
        self.publisher.close()
        self.side.close(0)
