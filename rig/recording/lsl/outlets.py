"""The publishing side of a rig's LSL streams (the fake next to the client, STYLE practice 3).

:class:`LslOutlets` creates ``NAME-clock``, ``NAME-spikes`` and ``NAME-ttl``
as laid out in :mod:`rig.recording.lsl`; :class:`LslPublisher` puts them
behind the calls :class:`~rig.recording.simrig.SimRig` makes of its Open
Ephys publisher, so ``rig sim-rig --transport lsl`` generates exactly the
same events and only publishes them differently: sample ``s`` of the
simulated acquisition is sent with LSL timestamp ``time_of(s)``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pylsl

from rig.recording.openephys.wire import SpikeMessage, TtlMessage


class LslOutlets:
    """The three outlets of one rig named ``name``; ``clock_rate`` is the clock stream's nominal rate."""

    def __init__(self, name: str, clock_rate: float, source: str = "rig") -> None:
        def outlet(role: str, channels: int, rate: float, fmt: int) -> pylsl.StreamOutlet:
            info = pylsl.StreamInfo(f"{name}-{role}", f"rig-{role}", channels, rate, fmt, f"{source}-{name}-{role}")
            return pylsl.StreamOutlet(info)

        self.name = name
        self.clock_rate = clock_rate
        self.clock = outlet("clock", 1, clock_rate, pylsl.cf_float32)
        self.spikes = outlet("spikes", 2, pylsl.IRREGULAR_RATE, pylsl.cf_int32)
        self.ttl = outlet("ttl", 2, pylsl.IRREGULAR_RATE, pylsl.cf_int32)
        self.analog: pylsl.StreamOutlet | None = None
        self.sent = 0
        self._source = source

    def add_analog(self, labels: Sequence[str]) -> None:
        """``NAME-analog``: the acquisition's analog inputs (volts) at the clock's rate, channels labelled ``labels``
        (e.g. an eye tracker's X and Y on ADC1 and ADC2; read by rig/behavior/gaze/recording.py and lsl.py)."""
        info = pylsl.StreamInfo(f"{self.name}-analog", "rig-analog", len(labels), self.clock_rate, pylsl.cf_float32,
                                f"{self._source}-{self.name}-analog")
        channels = info.desc().append_child("channels")
        for label in labels:
            channel = channels.append_child("channel")
            channel.append_child_value("label", str(label))
            channel.append_child_value("unit", "V")
            channel.append_child_value("type", "analog")
        self.analog = pylsl.StreamOutlet(info)

    def push_analog(self, values: np.ndarray, last_time: float) -> None:
        """A run of analog samples (n x channels) whose last one was acquired at ``last_time``."""
        self.analog.push_chunk(np.ascontiguousarray(values, dtype=np.float32), float(last_time))
        self.sent += 1

    def push_clock(self, values: np.ndarray, last_time: float) -> None:
        """A run of clock samples whose last one was acquired at ``last_time`` (the others one period apart)."""
        self.clock.push_chunk(np.asarray(values, dtype=np.float32).reshape(-1, 1), float(last_time))
        self.sent += 1

    def push_spike(self, electrode: int, unit: int, time: float) -> None:
        self.spikes.push_sample([int(electrode), int(unit)], float(time))
        self.sent += 1

    def push_ttl(self, line: int, state: int, time: float) -> None:
        self.ttl.push_sample([int(line), int(state)], float(time))
        self.sent += 1

    def close(self) -> None:
        """Withdraw the streams."""
        self.clock = self.spikes = self.ttl = self.analog = None


class LslPublisher:
    """SimRig's publisher calls, over LSL (heartbeats, message numbers and header styles have no LSL meaning)."""

    data_port = None
    heartbeat_port = None

    def __init__(self, name: str, sample_rate: float, time_of: Callable[[int], float]) -> None:
        self.outlets = LslOutlets(name, sample_rate, source="sim-rig")
        self.time_of = time_of
        self.sample_rate = sample_rate

    @property
    def sent(self) -> int:
        return self.outlets.sent

    def continuous(self, stream: str, channels: Sequence[tuple[int, str]], rate: float) -> None:
        if rate != self.sample_rate:
            raise ValueError(f"the LSL clock runs at {self.sample_rate}, not {rate}")

    def send_continuous(self, selected, start: int, n: int, payloads: Sequence[np.ndarray], send: bool = True) -> None:
        if send and n > 0:
            self.outlets.push_clock(payloads[0][:n], self.time_of(start + n - 1))

    def analog(self, labels: Sequence[str]) -> None:
        """Publish analog channels ``labels`` too (``NAME-analog``)."""
        self.outlets.add_analog(labels)

    def send_analog(self, start: int, n: int, payloads: Sequence[np.ndarray], send: bool = True) -> None:
        """Samples ``start`` to ``start + n`` of each analog channel (``payloads`` in ``labels`` order)."""
        if send and n > 0:
            self.outlets.push_analog(np.column_stack([p[:n] for p in payloads]), self.time_of(start + n - 1))

    def send(self, msg) -> None:
        if isinstance(msg, SpikeMessage):
            electrode = int(msg.electrode.rsplit(" ", 1)[-1])
            self.outlets.push_spike(electrode, msg.sorted_id, self.time_of(msg.sample_num))
        elif isinstance(msg, TtlMessage):
            self.outlets.push_ttl(msg.line, msg.state, self.time_of(msg.sample_num))
        else:
            raise TypeError(f"cannot publish {type(msg).__name__} over LSL")

    def next_message_num(self) -> None:
        """A message not sent (a drop): LSL has no counter; the clock's timestamps show the gap."""

    def restart(self) -> None:
        raise ValueError("an acquisition restart has no LSL equivalent here (LSL time never starts again); "
                         "the restart fault needs --transport zmq")

    def answer_heartbeats(self) -> None:
        """No heartbeats over LSL."""

    def close(self) -> None:
        self.outlets.close()
