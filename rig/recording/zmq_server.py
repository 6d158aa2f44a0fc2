"""The publishing side of the Open Ephys ZMQ Interface: the fake kept next to the client (STYLE 3).

:class:`OpenEphysPublisher` binds a PUB socket (data) and a REP socket
(heartbeats, data port + 1 by default) and sends messages in the exact wire
format, numbering them from 1 as the plugin does. ``rig sim-rig`` publishes
through it, and tests use it to drive :class:`~rig.recording.zmq_reader.ZmqReader`.
Port 0 lets the OS choose a free port (see ``data_port``/``heartbeat_port``).
"""
from __future__ import annotations

import time

import zmq

from rig.recording.openephys_wire import (HEARTBEAT_REPLY, Message, WireError, format_message, parse_heartbeat)


class OpenEphysPublisher:
    """PUB + heartbeat REP sockets speaking the Open Ephys ZMQ Interface format."""

    def __init__(self, host: str = "127.0.0.1", data_port: int = 5556, heartbeat_port: int | None = None,
                 context: zmq.Context | None = None) -> None:
        self.context = context or zmq.Context.instance()
        self.data = self.context.socket(zmq.PUB)
        self.data.setsockopt(zmq.LINGER, 0)
        self.data.setsockopt(zmq.SNDHWM, 1000)  # the plugin's PUB queue holds 1000 messages
        self.heartbeat = self.context.socket(zmq.REP)
        self.heartbeat.setsockopt(zmq.LINGER, 0)
        try:
            self.data_port = _bind(self.data, host, data_port)
            if heartbeat_port is None:
                try:
                    self.heartbeat_port = _bind(self.heartbeat, host, self.data_port + 1)
                except zmq.ZMQError:
                    if data_port != 0:
                        raise
                    self.heartbeat_port = _bind(self.heartbeat, host, 0)  # data+1 taken: any free port
            else:
                self.heartbeat_port = _bind(self.heartbeat, host, heartbeat_port)
        except zmq.ZMQError as exc:
            self.close()
            raise OSError(f"cannot bind the Open Ephys publisher on {host} (data port {data_port}, heartbeat port "
                          f"{heartbeat_port if heartbeat_port is not None else 'data port + 1'}): {exc}") from None
        self.host = host
        self.message_num = 0
        self.heartbeats: list[dict[str, str]] = []
        self.sent = 0

    @property
    def endpoint(self) -> str:
        """The data endpoint a subscriber connects to."""
        return f"tcp://{self.host}:{self.data_port}"

    def next_message_num(self) -> int:
        """Count one message (sent or deliberately lost) and return its number."""
        self.message_num += 1
        return self.message_num

    def send(self, msg: Message) -> list[bytes]:
        """Number ``msg``, stamp it with the wall clock (ms), publish it and return its frames."""
        msg.message_num = self.next_message_num()
        msg.timestamp = int(time.time() * 1000)
        frames = format_message(msg)
        self.data.send_multipart(frames)
        self.sent += 1
        return frames

    def send_frames(self, frames: list[bytes]) -> None:
        """Publish frames as they are (malformed ones included, for tests)."""
        self.data.send_multipart(frames)

    def restart(self) -> None:
        """Acquisition restarted: message numbers begin again at 1."""
        self.message_num = 0

    def answer_heartbeats(self) -> int:
        """Answer every waiting heartbeat without blocking; return how many were answered."""
        answered = 0
        while True:
            try:
                request = self.heartbeat.recv(zmq.NOBLOCK)
            except zmq.Again:
                return answered
            try:
                self.heartbeats.append(parse_heartbeat(request))
            except WireError:
                pass  # the plugin replies to anything; so do we
            self.heartbeat.send(HEARTBEAT_REPLY)
            answered += 1

    def close(self) -> None:
        """Close both sockets."""
        self.data.close(0)
        self.heartbeat.close(0)


def _bind(socket: zmq.Socket, host: str, port: int) -> int:
    if port == 0:
        return socket.bind_to_random_port(f"tcp://{host}")
    socket.bind(f"tcp://{host}:{port}")
    return port
