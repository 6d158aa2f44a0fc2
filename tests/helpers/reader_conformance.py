"""What every Reader in rig.recording must do, live or from a file (STYLE practices 1 and 10).

A reader's test subclasses :class:`ReaderContract` and defines ``open_reader(tmp_path)``
(a reader, not yet entered, that will deliver the messages of :func:`contract_messages`
after some warm-up), ``read_all(reader)`` and ``assert_exhausted(reader)``.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from rig.recording.openephys.wire import DataMessage, SpikeMessage, TtlMessage
from rig.recording.records import Discontinuity, Spike, Ttl, Watermark

#: What any reader must yield for the messages of :func:`contract_messages` (receive times aside).
EXPECTED = [Ttl("s", 15, 0, 1), Spike("s", 16, "E1", 1), Discontinuity("gap", "s", 16, 20, 1, 0.0),
            Watermark("s", 30, 1000.0, 0.0), Discontinuity("restart", "s", 30, 0, 0, 0.0),
            Watermark("s", 5, 1000.0, 0.0)]


def contract_messages(first: int) -> list:
    """(message_num, message) after a warm-up numbered ``first - 1``: a TTL, a spike, one message lost, data,
    a malformed message (num None, raw frames) and an acquisition restart."""
    return [(first, TtlMessage(0, "s", 1, 15, 0, 1)),
            (first + 1, SpikeMessage(0, "s", 1, "E1", 16, 1, np.zeros((1, 8), np.float32))),
            (first + 3, DataMessage(0, "s", 0, "CH1", 20, 1000.0, np.zeros(10, np.float32))),
            (None, [b"DATA\x00", b"{broken", b""]),
            (1, DataMessage(0, "s", 0, "CH1", 0, 1000.0, np.zeros(5, np.float32)))]


def plain(records: list) -> list:
    """Records with receive times zeroed, to compare what two readers yield."""
    return [dataclasses.replace(r, receive_time=0.0) if hasattr(r, "receive_time") else r for r in records]


class ReaderContract:
    """The shared suite: context manager, get_initial(), non-blocking read_next(), the same records."""

    #: What the reader must yield; a transport whose losses are counted in other units says so here.
    expected = EXPECTED

    def open_reader(self, tmp_path):
        """A reader (not yet entered) that will deliver EXPECTED after some warm-up records."""
        raise NotImplementedError

    def read_all(self, reader) -> list:
        """Every record the reader delivers for the contract messages."""
        raise NotImplementedError

    def assert_exhausted(self, reader) -> None:
        """What reading past the end does: ``[]`` for a live reader, StopIteration for a file reader."""
        raise NotImplementedError

    @pytest.mark.timeout(30)
    def test_contract(self, tmp_path):
        reader = self.open_reader(tmp_path)
        with pytest.raises(RuntimeError, match="not open; use it as a context manager"):
            reader.read_next()
        with reader as entered:
            assert entered is reader
            initial = reader.get_initial()
            assert isinstance(initial, dict) and initial
            records = self.read_all(reader)
            assert all(isinstance(r, (Spike, Ttl, Watermark, Discontinuity)) for r in records)
            kinds = [type(r).__name__ for r in records]
            assert plain(records[kinds.index("Ttl"):]) == self.expected
            assert reader.stats.malformed == 1 and reader.stats.restarts == 1
            started = time.monotonic()
            self.assert_exhausted(reader)
            assert time.monotonic() - started < 0.5  # never waits
        with pytest.raises(RuntimeError):
            reader.read_next()
