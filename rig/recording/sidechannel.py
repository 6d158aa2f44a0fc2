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

``fault`` (tests and demos inject failures on demand)::

    b"fault"
    JSON {"kind": "drop" | "restart" | "missing-ttl" | "jitter" | "silent",
          "at_onset": N or null (the next onset), "value": number or null}

Sends never block: when sim-rig is not there, onsets are counted as unsent.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch
import zmq

ONSET = b"onset"
FAULT = b"fault"
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
class FaultRequest:
    """A failure to inject: ``kind`` at onset number ``at_onset`` (None: the next one)."""

    kind: str
    at_onset: int | None = None
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r} is unknown; valid: {list(FAULT_KINDS)}")
        if self.at_onset is not None and (not isinstance(self.at_onset, int) or self.at_onset < 0):
            raise ValueError(f"fault at_onset must be an onset number >= 0, got {self.at_onset!r}")


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
    """An onset notice from its frames; ValueError names what is wrong."""
    if len(frames) != 3 or frames[0] != ONSET:
        raise ValueError(f"onset message: expected 3 frames starting with {ONSET!r}, got {len(frames)} frames")
    try:
        header = json.loads(frames[1])
        shape = tuple(int(v) for v in header["shape"])
        image = np.frombuffer(frames[2], dtype=np.float32).reshape(shape)
        return OnsetNotice(str(header["stimulus_id"]), int(header["block"]), int(header["position"]),
                           float(header["onset_time"]), str(header.get("clock", "")), float(header["monotonic"]),
                           image)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"onset message: malformed header or image ({exc})") from None


def format_fault(fault: FaultRequest) -> list[bytes]:
    """Frames of a fault request."""
    return [FAULT, json.dumps({"kind": fault.kind, "at_onset": fault.at_onset, "value": fault.value}).encode()]


def parse_fault(frames: list[bytes]) -> FaultRequest:
    """A fault request from its frames; ValueError names what is wrong."""
    if len(frames) != 2 or frames[0] != FAULT:
        raise ValueError(f"fault message: expected 2 frames starting with {FAULT!r}, got {len(frames)} frames")
    try:
        body = json.loads(frames[1])
        return FaultRequest(str(body["kind"]), body.get("at_onset"), body.get("value"))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"fault message: malformed body ({exc})") from None


class SimRigLink:
    """Display-side end of the side channel; register it with ``display.add_onset_listener(link)``."""

    def __init__(self, endpoint: str, clock: str = "") -> None:
        self.endpoint = endpoint
        self.clock = clock
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
