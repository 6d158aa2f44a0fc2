"""The side channel from the display to ``rig sim-rig``: what is on screen, and when.

A real rig needs no such channel: the neuron sees the screen and a photodiode
puts each onset on the recording's TTL line. The simulated recording system
has no eyes, so the display tells it, at each onset, which stimulus is shown
and what it looks like. Sim-rig's simulated neuron then answers *that*
stimulus, with latency, and sim-rig puts the TTL on its own clock.

Transport: ZeroMQ PUSH (display side, connects) → PULL (sim-rig, binds;
by default on 127.0.0.1, data port + 2, i.e. 5558). Messages are multipart:

``onset``::

    b"onset"
    JSON {"stimulus_id", "block", "position", "onset_time", "clock",
          "monotonic", "shape": [3, H, W], "dtype": "float32"}
    image bytes: float32 RGB in [0, 1], C-order (3, H, W)

  ``onset_time`` is on the display's clock (``clock`` names it);
  ``monotonic`` is ``time.monotonic()`` stamped in the same onset callback.
  Sim-rig runs on the same machine and uses ``monotonic`` for its sample
  clock, so display and recording clocks differ exactly as on a rig: by an
  offset the controller has to find from the TTLs.

``scene`` (trials: what the screen shows, for the monkey ``--gaze-adc`` simulates; from a trial runner's
listener, :meth:`SimRigLink.on_trial_event`)::

    b"scene"
    JSON {"time": display clock, "clock", "monotonic": time.monotonic of the same instant,
          "fixation": bool, "stimulus": bool, "fixation_deg": [x, y] or null}

  Sim-rig's monkey sees the change at ``monotonic`` (its samples are on that
  clock, like the sample clock). ``monotonic`` is the flip time plus the
  display's ``monotonic_offset`` when the link knows it, else stamped when the
  listener is called (right after the flip).

``fault`` (tests and demos inject failures on demand)::

    b"fault"
    JSON {"kind": "drop" | "restart" | "missing-ttl" | "jitter" | "silent",
          "at_onset": N or null (the next onset), "value": number or null}

Sends never block: when sim-rig is not there, onsets are counted as unsent.

:func:`parse_onset` and :func:`parse_fault` take any frames a peer may send
and either return a checked message or raise ValueError naming the field:
times must be finite, the image's declared shape must match its bytes (and
each side be at most ``MAX_IMAGE_SIDE``) before the bytes are read, pixels
finite, fault values in range (:class:`FaultRequest`). Sim-rig counts and
skips what they refuse.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import zmq

ONSET = b"onset"
FAULT = b"fault"
SCENE = b"scene"
FAULT_KINDS = ("drop", "restart", "missing-ttl", "jitter", "silent")


@dataclass
class OnsetNotice:
    """One stimulus onset as sim-rig learns it."""

    stimulus_id: str
    block: int
    position: int
    onset_time: float
    clock: str
    monotonic: float
    image: np.ndarray  # (3, H, W) float32 in [0, 1]


@dataclass
class SceneNotice:
    """What the screen shows from ``monotonic`` on (a trial runner's ``scene`` event)."""

    time: float
    clock: str
    monotonic: float
    fixation: bool
    stimulus: bool
    fixation_deg: tuple[float, float] | None = None


#: Largest |fixation_deg| accepted (degrees).
MAX_DEG = 180.0
#: Largest image side sim-rig accepts (pixels): a declared shape is checked before any buffer is read.
MAX_IMAGE_SIDE = 2048
#: Largest side-channel frame sim-rig reads (bytes); larger messages are refused by ZeroMQ itself.
MAX_FRAME_BYTES = 4 * 3 * MAX_IMAGE_SIDE * MAX_IMAGE_SIDE + 65536
#: Fault values: jitter in ms (either sign), silence in s (``inf``: for good).
JITTER_LIMIT_MS = 1000.0
MAX_ONSET_INDEX = 10**9


@dataclass
class FaultRequest:
    """A failure to inject: ``kind`` at onset number ``at_onset`` (None: the next one).

    ``value`` is only for ``jitter`` (ms, finite, at most ±1000) and ``silent``
    (seconds, > 0, ``inf`` for good); ValueError names the field otherwise.
    """

    kind: str
    at_onset: int | None = None
    value: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {_short(self.kind)} is unknown; valid: {list(FAULT_KINDS)}")
        if self.at_onset is not None and (not _is_int(self.at_onset) or not 0 <= self.at_onset <= MAX_ONSET_INDEX):
            raise ValueError(f"fault at_onset must be an onset number 0..{MAX_ONSET_INDEX} or null, "
                             f"got {_short(self.at_onset)}")
        if self.value is None:
            return
        if self.kind not in ("jitter", "silent"):
            raise ValueError(f"fault value: {self.kind!r} takes no value, got {_short(self.value)}")
        if not _is_number(self.value) or math.isnan(self.value):
            raise ValueError(f"fault value must be a number, got {_short(self.value)}")
        self.value = float(self.value)
        if self.kind == "jitter" and not abs(self.value) <= JITTER_LIMIT_MS:
            raise ValueError(f"fault value: jitter must be finite and within ±{JITTER_LIMIT_MS:g} ms, "
                             f"got {self.value!r}")
        if self.kind == "silent" and not self.value > 0:
            raise ValueError(f"fault value: silent takes seconds > 0 (inf: for good), got {self.value!r}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_body(frame: bytes, what: str) -> dict:
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise ValueError(f"{what}: the header frame is not bytes")
    try:
        body = json.loads(bytes(frame).decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{what}: the header is not UTF-8") from None
    except RecursionError:
        raise ValueError(f"{what}: the header is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise ValueError(f"{what}: the header is not JSON ({_short(str(exc))})") from None
    if not isinstance(body, dict):
        raise ValueError(f"{what}: the header must be a JSON object, got {type(body).__name__}")
    return body


def _field(body: dict, key: str, what: str, check, expected: str, default=...):
    if key not in body:
        if default is not ...:
            return default
        raise ValueError(f"{what}: field {key!r} is missing")
    value = body[key]
    if not check(value):
        raise ValueError(f"{what}: field {key!r} must be {expected}, got {_short(value)}")
    return value


def _check_frames(frames, envelope: bytes, count: int, what: str) -> None:
    """ValueError unless ``frames`` is ``count`` frames starting with ``envelope``."""
    if not isinstance(frames, (list, tuple)) or len(frames) != count or frames[0] != envelope:
        got = len(frames) if isinstance(frames, (list, tuple)) else type(frames).__name__
        raise ValueError(f"{what}: expected {count} frames starting with {envelope!r}, got {got} frames")


def _finite(value) -> bool:
    return _is_number(value) and math.isfinite(value)


def format_onset(notice: OnsetNotice) -> list[bytes]:
    """Frames of an onset notice."""
    image = np.ascontiguousarray(notice.image, dtype=np.float32)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"onset image must be (3, H, W), got shape {image.shape}")
    header = {"stimulus_id": notice.stimulus_id, "block": int(notice.block), "position": int(notice.position),
              "onset_time": float(notice.onset_time), "clock": notice.clock, "monotonic": float(notice.monotonic),
              "shape": list(image.shape), "dtype": "float32"}
    return [ONSET, json.dumps(header).encode(), image.tobytes()]


def parse_onset(frames: list[bytes]) -> OnsetNotice:
    """An onset notice from its frames; ValueError names the field that is wrong.

    The declared shape is checked against the payload's size before the payload is
    looked at, pixels must be finite, and times finite: nothing here allocates more
    than the frames already hold.
    """
    what = "onset message"
    _check_frames(frames, ONSET, 3, what)
    body = _json_body(frames[1], what)
    stimulus_id = _field(body, "stimulus_id", what, lambda v: isinstance(v, str) and len(v) <= 1000,
                         "a string (at most 1000 characters)")
    block = _field(body, "block", what, lambda v: _is_int(v) and 0 <= v <= MAX_ONSET_INDEX, "an integer >= 0")
    position = _field(body, "position", what, lambda v: _is_int(v) and 0 <= v <= MAX_ONSET_INDEX, "an integer >= 0")
    onset_time = _field(body, "onset_time", what, _finite, "a finite number")
    clock = _field(body, "clock", what, lambda v: isinstance(v, str) and len(v) <= 1000, "a string", default="")
    monotonic = _field(body, "monotonic", what, _finite, "a finite number")
    _field(body, "dtype", what, lambda v: v == "float32", '"float32"', default="float32")
    shape = _field(body, "shape", what,
                   lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(n) for n in v) and v[0] == 3
                   and all(1 <= n <= MAX_IMAGE_SIDE for n in v[1:]),
                   f"[3, H, W] with 1 <= H, W <= {MAX_IMAGE_SIDE}")
    payload = frames[2]
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ValueError(f"{what}: the image frame is not bytes")
    expected = 4 * 3 * shape[1] * shape[2]
    if len(payload) != expected:
        raise ValueError(f"{what}: field 'shape' {shape} needs {expected} bytes of float32, the image has "
                         f"{len(payload)}")
    image = np.frombuffer(payload, dtype="<f4").reshape(tuple(shape))
    if not np.isfinite(image).all():
        raise ValueError(f"{what}: the image has non-finite pixels")
    return OnsetNotice(stimulus_id, int(block), int(position), float(onset_time), clock, float(monotonic), image)


def format_scene(notice: SceneNotice) -> list[bytes]:
    """Frames of a scene notice."""
    point = None if notice.fixation_deg is None else [float(notice.fixation_deg[0]), float(notice.fixation_deg[1])]
    return [SCENE, json.dumps({"time": float(notice.time), "clock": notice.clock, "monotonic": float(notice.monotonic),
                               "fixation": bool(notice.fixation), "stimulus": bool(notice.stimulus),
                               "fixation_deg": point}).encode()]


def parse_scene(frames: list[bytes]) -> SceneNotice:
    """A scene notice from its frames; ValueError names the field that is wrong."""
    what = "scene message"
    _check_frames(frames, SCENE, 2, what)
    body = _json_body(frames[1], what)
    time_ = _field(body, "time", what, _finite, "a finite number")
    clock = _field(body, "clock", what, lambda v: isinstance(v, str) and len(v) <= 1000, "a string", default="")
    monotonic = _field(body, "monotonic", what, _finite, "a finite number")
    fixation = _field(body, "fixation", what, lambda v: isinstance(v, bool), "true or false")
    stimulus = _field(body, "stimulus", what, lambda v: isinstance(v, bool), "true or false")
    point = _field(body, "fixation_deg", what,
                   lambda v: v is None or (isinstance(v, list) and len(v) == 2
                                           and all(_finite(a) and abs(a) <= MAX_DEG for a in v)),
                   f"[x, y] in degrees (each within ±{MAX_DEG:g}) or null", default=None)
    return SceneNotice(float(time_), clock, float(monotonic), fixation, stimulus,
                       None if point is None else (float(point[0]), float(point[1])))


def format_fault(fault: FaultRequest) -> list[bytes]:
    """Frames of a fault request."""
    return [FAULT, json.dumps({"kind": fault.kind, "at_onset": fault.at_onset, "value": fault.value}).encode()]


def parse_fault(frames: list[bytes]) -> FaultRequest:
    """A fault request from its frames; ValueError names the field that is wrong."""
    what = "fault message"
    _check_frames(frames, FAULT, 2, what)
    body = _json_body(frames[1], what)
    kind = _field(body, "kind", what, lambda v: isinstance(v, str), "a string")
    try:
        return FaultRequest(kind, body.get("at_onset"), body.get("value"))
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


class SimRigLink:
    """Display-side end of the side channel; register it with ``display.add_onset_listener(link)``, and, for
    trials, ``runner.add_listener(link.on_trial_event)`` (what the screen shows, for sim-rig's monkey).

    ``monotonic_offset``: display time + offset = time.monotonic (the PsychoPy display's ``monotonic_offset``;
    0 for a display on time.monotonic); None: scene times are stamped with time.monotonic() when heard.
    """

    def __init__(self, endpoint: str, clock: str = "", monotonic_offset: float | None = None) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.monotonic_offset = monotonic_offset
        self._context = zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.connect(endpoint)
        self.sent = self.unsent = 0

    def __call__(self, block, position: int, onset_time: float) -> None:
        """Onset listener: tell sim-rig which stimulus just appeared."""
        now = time.monotonic()
        image = block.images[position]
        if isinstance(image, torch.Tensor):
            image = image.detach().float().cpu().numpy()
        self._send(format_onset(OnsetNotice(block.stimulus_ids[position], block.index, position, onset_time,
                                            self.clock, now, image)))

    def on_trial_event(self, kind: str, time_: float, info: dict) -> None:
        """A trial runner's listener (``runner.add_listener(link.on_trial_event)``): tell sim-rig each scene change
        (fixation point on/off, a stimulus on/off); every other kind of event is not its business."""
        if kind != "scene":
            return
        now = time.monotonic() if self.monotonic_offset is None else time_ + self.monotonic_offset
        stimulus = info.get("stimulus", -1)
        point = info.get("fixation_deg")
        self._send(format_scene(SceneNotice(
            float(time_), self.clock, now, bool(info.get("fixation", False)),
            bool(stimulus) if isinstance(stimulus, bool) else stimulus is not None and stimulus >= 0,
            None if point is None else (float(point[0]), float(point[1])))))

    def send_fault(self, fault: FaultRequest) -> None:
        """Ask sim-rig to inject ``fault``."""
        self._send(format_fault(fault))

    def _send(self, frames: list[bytes]) -> None:
        try:
            self._socket.send_multipart(frames, zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            self.unsent += 1

    def describe(self) -> dict:
        """Provenance for the session file."""
        return {"class": type(self).__name__, "endpoint": self.endpoint, "sent": self.sent, "unsent": self.unsent}

    def close(self) -> None:
        """Close the socket (waiting up to 1 s for queued onsets to leave)."""
        self._socket.close()
