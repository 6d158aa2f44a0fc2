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

**Eye signals** (``gaze_adc = ("ADC1", "ADC2")``, ``--gaze-adc ADC1,ADC2``): a
simulated monkey (:class:`~rig.behavior.gaze.simulated.SimulatedMonkey`,
seeded by ``gaze_seed``, its options from ``gaze_monkey``, sampled at
:data:`DEFAULT_TRACKER_HZ` unless they say otherwise) looks at what the display
shows: ``scene`` side-channel messages (fixation point on/off and where, a
stimulus on/off), sent by the display's trial runner through
:meth:`~rig.recording.sidechannel.SimRigLink.on_trial_event`, at their
``time.monotonic`` stamps, the clock sim-rig's samples are on. Its eye
tracker's analog outputs are two more continuous channels, named by
``gaze_adc``, after CH1..CHN (``channel_num`` N and N+1), in the same DATA
callbacks as the others: sample ``s`` (at ``t0 + s / sample_rate``) holds the
tracker's latest sample at or before it (an analog output holds each sample
until the next), mapped to volts by ``gaze_map = (a, b, c, d, e, f)``::

    X volts = a * x_deg + b * y_deg + c        Y volts = d * x_deg + e * y_deg + f

plus Gaussian noise of SD ``gaze_noise_v`` per sample and channel, clipped to
the board's ±:data:`ADC_RANGE_V` (a calibration is then the inverse map:
``rig/behavior/calibration.py``). While the monkey blinks (no gaze) both
channels sit at ``gaze_blink_v`` (default -5 V, the rail), without noise. A
scene that reaches sim-rig after the monkey's samples have been made past its
time (the side channel took longer than ``lag_ms``) is applied as soon as it
comes, and counted (``late_scenes``). Over LSL the two channels are the regular
stream ``lsl_name``-analog (float32, channel labels from ``gaze_adc``, unit V),
sample ``s`` stamped like the clock stream. Truth lines (``truth_file``):

- ``{"type": "gaze_event", "kind": str, "time": float}``: what the monkey did
  (:data:`~rig.behavior.gaze.simulated.EVENT_KINDS`: ``break``, ``blink_start``,
  ...) on time.monotonic, written once its samples are made.
- ``{"type": "scene", "time": float, "applied": float, "fixation": bool,
  "stimulus": bool, "fixation_deg": [x, y] | null}``: a scene as the monkey
  got it (``applied`` later than ``time`` for a late one).
- ``{"type": "gaze", "times": [...], "x": [...], "y": [...]}`` (``truth_gaze``
  only: the monkey's samples, degrees, null while it blinks), one line per
  callback.

With ``transport = "lsl"`` the same events go out as LSL samples
(:mod:`rig.recording.lsl.outlets`: ``lsl_name``-clock, -spikes, -ttl), sample
``s`` stamped ``t0 + s / sample_rate`` on ``time.monotonic`` (LSL's clock);
a drop leaves a gap in the clock stream; heartbeats, message numbers, header
styles and the restart fault have no LSL meaning.
"""
from __future__ import annotations

import heapq
import inspect
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np
import torch
import zmq

from rig.behavior.calibration import Calibration
from rig.behavior.gaze.base import GazeSamples, GazeTask
from rig.recording.openephys.wire import SpikeMessage, TtlMessage
from rig.recording.sidechannel import (FAULT, MAX_FRAME_BYTES, ONSET, SCENE, FaultRequest, OnsetNotice,
                                       SceneNotice, parse_fault, parse_onset, parse_scene)
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
#: The simulated eye tracker's sample rate unless ``gaze_monkey`` sets ``rate_hz`` (an EyeLink 1000's).
DEFAULT_TRACKER_HZ = 1000.0
#: Volts of the acquisition board's analog inputs (±; an Open Ephys acquisition board's ADCs).
ADC_RANGE_V = 5.0
#: volts = (a x + b y + c, d x + e y + f): 0.2 V per degree, centred (±25° within the ADC range).
DEFAULT_GAZE_MAP = (0.2, 0.0, 0.0, 0.0, 0.2, 0.0)


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
    #: Eye signals: the monkey's gaze on two analog channels [X, Y] (e.g. ("ADC1", "ADC2")); None: no monkey.
    gaze_adc: tuple[str, str] | None = None
    #: (a, b, c, d, e, f): X volts = a x + b y + c, Y volts = d x + e y + f, for gaze (x, y) in degrees.
    gaze_map: tuple[float, ...] = DEFAULT_GAZE_MAP
    #: SD of the noise added to each channel's every sample (volts).
    gaze_noise_v: float = 0.0
    gaze_seed: int = 0
    #: Both channels' level while there is no gaze (a blink): the rail.
    gaze_blink_v: float = -ADC_RANGE_V
    #: The monkey's fixation window (it keeps out of twice this when looking around) and first fixation point.
    gaze_window_deg: float = 1.5
    gaze_fixation_deg: tuple[float, float] = (0.0, 0.0)
    #: The monkey's options (rig/behavior/gaze/simulated.py MonkeyOptions), e.g. {"break_hazard_hz": 1.0}.
    gaze_monkey: dict = field(default_factory=dict)
    #: Write the monkey's samples to the truth file too (one line per callback).
    truth_gaze: bool = False

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
        if self.gaze_adc is not None:
            self._check_gaze()

    def _check_gaze(self) -> None:
        names = tuple(self.gaze_adc)
        data = {f"CH{i + 1}" for i in range(self.data_channels)}
        if len(names) != 2 or not all(isinstance(n, str) and n for n in names) or names[0] == names[1] \
                or set(names) & data:
            raise ValueError(f"gaze_adc must name two different channels [X, Y] other than CH1..CH{self.data_channels},"
                             f" e.g. ADC1,ADC2; got {list(names)!r}")
        self.gaze_adc = names
        if len(self.gaze_map) != 6 or not all(_finite(v) for v in self.gaze_map):
            raise ValueError(f"gaze_map must be 6 finite numbers a,b,c,d,e,f (X volts = a x + b y + c, Y volts = "
                             f"d x + e y + f), got {list(self.gaze_map)!r}")
        a, b, _, d, e, _ = self.gaze_map
        if abs(a * e - b * d) < 1e-12:
            raise ValueError(f"gaze_map {list(self.gaze_map)}: X and Y volts must tell x and y apart "
                             f"(a*e - b*d != 0), or no calibration can undo it")
        for name in ("gaze_noise_v", "gaze_window_deg"):
            if not _finite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if not _finite(self.gaze_blink_v) or abs(self.gaze_blink_v) > ADC_RANGE_V:
            raise ValueError(f"gaze_blink_v must be within ±{ADC_RANGE_V:g} V, got {self.gaze_blink_v!r}")
        if len(self.gaze_fixation_deg) != 2 or not all(_finite(v) for v in self.gaze_fixation_deg):
            raise ValueError(f"gaze_fixation_deg must be [x, y] degrees, got {self.gaze_fixation_deg!r}")
        if not isinstance(self.gaze_monkey, dict):
            raise ValueError(f"gaze_monkey must be a table of the monkey's options, got {self.gaze_monkey!r}")
        reserved = sorted(set(self.gaze_monkey) & {"seed", "raw_map", "raw_noise", "raw_drift_per_s", "calibration",
                                                   "drift_correction"})
        if reserved:
            raise ValueError(f"gaze_monkey: {reserved} are sim-rig's to set (gaze_seed, gaze_map, gaze_noise_v): the "
                             f"monkey's eye is in degrees, the tracker's outputs are volts")


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


def gaze_calibration(gaze_map: tuple[float, ...]) -> Calibration:
    """The affine calibration (volts -> degrees) that undoes ``gaze_map``: what ``rig calibrate`` would fit, noise
    aside, and what ``[gaze] calibration`` takes in a dry run against sim-rig (``--gaze-calibration FILE``)."""
    a, b, c, d, e, f = gaze_map
    inverse = np.linalg.inv(np.array([[a, b], [d, e]], dtype=np.float64))
    return Calibration("affine", np.column_stack([-inverse @ np.array([c, f]), inverse]))  # rows x, y over [1, u, v]


def read_truth(path: str | Path) -> tuple[GazeSamples, list[dict]]:
    """A truth file: the monkey's samples (``truth_gaze`` lines, degrees on time.monotonic; invalid, NaN, while it
    blinks) and every other record, in file order."""
    times: list[float] = []
    xs: list[float] = []
    ys: list[float] = []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["type"] == "gaze":
            times += record["times"]
            xs += [math.nan if v is None else v for v in record["x"]]
            ys += [math.nan if v is None else v for v in record["y"]]
        else:
            records.append(record)
    x, y = np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64)
    return GazeSamples(np.array(times, dtype=np.float64), x, y, np.isfinite(x) & np.isfinite(y)), records


class _ZeroNeuron:
    """A neuron that answers every stimulus with 0 (sim-rig for its eye signals, TTLs and spontaneous spikes)."""

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return np.zeros((len(images), 1))


def serve(config: SimRigConfig, pipe, neuron: Callable[[torch.Tensor], np.ndarray] | None = None,
          channels: int = 1, response_model: ResponseModel | None = None) -> None:
    """Run a sim-rig in this process until SIGTERM: the body of a ``multiprocessing`` child (tests, benches).

    Sends ``{"data_port", "side_port"}`` on ``pipe`` once bound, and its counters when it stops. Without
    ``neuron``, one that answers every stimulus with 0.
    """
    import signal

    rig = SimRig(neuron or _ZeroNeuron(), channels, response_model or ResponseModel(gain=1.0, offset=1.0, seed=3),
                 config)
    signal.signal(signal.SIGTERM, lambda *_: rig.stop())
    pipe.send({"data_port": rig.data_port, "side_port": rig.side_port})
    try:
        rig.run()
    finally:
        rig.close()
        pipe.send({"onsets": rig.onsets_seen, "bad_messages": rig.bad_messages,
                   **({"eyes": rig.eyes.describe()} if rig.eyes is not None else {})})


class EyeSignals:
    """Sim-rig's monkey and its eye tracker's analog outputs (see the module docstring, "Eye signals")."""

    def __init__(self, config: SimRigConfig, start: float, truth: "TruthLog") -> None:
        from rig.behavior.gaze.simulated import SimulatedMonkey

        self.monkey = SimulatedMonkey(**{"rate_hz": DEFAULT_TRACKER_HZ, **config.gaze_monkey,
                                         "seed": config.gaze_seed})
        self.monkey.start(GazeTask(tuple(config.gaze_fixation_deg), config.gaze_window_deg, "time.monotonic",
                                   start, config.gaze_seed))
        self._takes_point = "fixation_deg" in inspect.signature(self.monkey.scene).parameters
        self.point = tuple(config.gaze_fixation_deg)
        self.map = np.asarray(config.gaze_map, dtype=np.float64).reshape(2, 3)
        self.noise_v, self.blink_v = config.gaze_noise_v, config.gaze_blink_v
        self.rng = np.random.default_rng([config.gaze_seed, 2])
        self.truth, self.truth_gaze = truth, config.truth_gaze
        self.settled = start  # the monkey's samples are made up to here
        self._held: tuple[np.ndarray, ...] | None = None  # the last sample made (times, x, y, valid), held
        self._events_written = 0
        self._pending: list[SceneNotice] = []
        self.scenes = self.late_scenes = self.points_ignored = 0

    def scene(self, notice: SceneNotice) -> None:
        """What the screen shows from ``notice.monotonic`` on: told to the monkey when its samples reach that time
        (:meth:`volts`), or at once, late, when they are past it already (counted)."""
        self.scenes += 1
        if notice.monotonic > self.settled:
            self._pending.append(notice)  # scenes come in time order: the display sends them as it flips
            return
        self.late_scenes += 1
        self._tell(notice, self.settled)

    def _tell(self, notice: SceneNotice, applied: float) -> None:
        point = notice.fixation_deg
        if self._takes_point:
            self.monkey.scene(applied, notice.fixation, notice.stimulus, fixation_deg=point)
        else:
            if point is not None and tuple(point) != self.point:
                self.points_ignored += 1  # this monkey looks for the point where it started
            self.monkey.scene(applied, notice.fixation, notice.stimulus)
        self.truth.write({"type": "scene", "time": notice.monotonic, "applied": applied, "fixation": notice.fixation,
                          "stimulus": notice.stimulus, "fixation_deg": None if point is None else list(point)})

    def volts(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """X and Y volts at ``times`` (time.monotonic, increasing, after every earlier call's)."""
        until = float(times[-1])
        parts = []
        while self._pending and self._pending[0].monotonic <= until:  # the monkey hears a scene at its time
            notice = self._pending.pop(0)
            parts.append(self.monkey.read(notice.monotonic))
            self.settled = notice.monotonic
            self._tell(notice, notice.monotonic)
        parts.append(self.monkey.read(until))
        self.settled = max(self.settled, until)
        new = GazeSamples.concat(parts)
        self._write_truth(new)
        held = self._held
        if held is not None:
            t, x, y, ok = (np.concatenate((a[-1:], b)) for a, b in zip(held, (new.times, new.x, new.y, new.valid)))
        else:
            t, x, y, ok = new.times, new.x, new.y, new.valid
        if not len(t):  # nothing made yet (before the monkey's first sample): no gaze
            return (np.full(len(times), self.blink_v, dtype="<f4"),) * 2
        self._held = (t[-1:], x[-1:], y[-1:], ok[-1:])
        index = np.clip(np.searchsorted(t, times, side="right") - 1, 0, len(t) - 1)
        gx, gy, valid = x[index], y[index], ok[index]
        (a, b, c), (d, e, f) = self.map
        vx, vy = a * gx + b * gy + c, d * gx + e * gy + f
        if self.noise_v:
            vx = vx + self.rng.normal(0.0, self.noise_v, len(times))
            vy = vy + self.rng.normal(0.0, self.noise_v, len(times))
        vx = np.where(valid, np.clip(vx, -ADC_RANGE_V, ADC_RANGE_V), self.blink_v).astype("<f4")
        vy = np.where(valid, np.clip(vy, -ADC_RANGE_V, ADC_RANGE_V), self.blink_v).astype("<f4")
        return vx, vy

    def _write_truth(self, new) -> None:
        events = self.monkey.events
        for time_, kind in events[self._events_written:]:
            self.truth.write({"type": "gaze_event", "kind": kind, "time": time_})
        self._events_written = len(events)
        if self.truth_gaze and len(new):
            def listed(a: np.ndarray) -> list:
                return [None if not math.isfinite(v) else round(v, 6) for v in a.tolist()]

            self.truth.write({"type": "gaze", "times": new.times.tolist(), "x": listed(new.x), "y": listed(new.y)})

    def describe(self) -> dict[str, Any]:
        return {"monkey": self.monkey.describe(), "scenes": self.scenes, "late_scenes": self.late_scenes,
                "points_ignored": self.points_ignored}


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
        channels = [(i, f"CH{i + 1}") for i in range(c.data_channels)]
        if c.gaze_adc is not None and c.transport == "zmq":  # the eye signals, after the recording's channels
            channels += [(c.data_channels + i, name) for i, name in enumerate(c.gaze_adc)]
        self._selected = self.publisher.continuous(c.stream, channels, c.sample_rate)
        if c.gaze_adc is not None and c.transport == "lsl":
            self.publisher.analog(c.gaze_adc)
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
        self.eyes = EyeSignals(c, self._sync_origin - 0.001, self.truth) if c.gaze_adc is not None else None
        self.scenes_ignored = 0  # scene messages without a monkey to show them to
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
            streams = [f"{name}-clock", f"{name}-spikes", f"{name}-ttl"]
            return {"data": f"lsl://{name}", "streams": streams + ([f"{name}-analog"] if self.config.gaze_adc else []),
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
                elif frames[0] == SCENE:
                    notice = parse_scene(frames)
                    if self.eyes is not None:
                        self.eyes.scene(notice)
                    else:
                        self.scenes_ignored += 1
                else:
                    raise ValueError(f"unknown message {frames[0][:20]!r}; valid: {ONSET!r}, {FAULT!r}, {SCENE!r}")
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
        if self.eyes is not None and n > 0:  # made even when the callback is lost: the monkey goes on
            eye_volts = self.eyes.volts(self.t0 + np.arange(start, stop) / rate)
            if c.transport == "zmq":
                payloads += eye_volts
            else:
                self.publisher.send_analog(start, n, eye_volts, send=send)
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
