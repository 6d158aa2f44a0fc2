"""Fuzzing (hypothesis) the readers of untrusted bytes: session files and the Open Ephys stream parser.

Whatever the bytes, the reader returns a well-formed result or raises its own clear error
(SessionFileError, WireError); it never raises anything else and never crashes the process. Some damaged
files crash or hang the HDF5 library itself; read_session reads in a forked child first
(rig/session/sandbox.py), so those become SessionFileErrors too, and this process lives on.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rig.session.reader as reader
from rig.session import SessionFileError, journal_dir, read_session

from test_session import new_writer, write_blocks

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def quick_hang_detection():
    """A tiny file that is still being read after 10 s hangs the library: don't wait the default minute."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reader, "PROBE_BASE_S", 10.0)
        yield


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> dict[str, bytes]:
    """The bytes of a merged session file and of a journal block file."""
    folder = tmp_path_factory.mktemp("fuzz")
    merged = new_writer(folder / "merged.h5")
    write_blocks(merged, 2, checkpoint_at=(1,))
    merged.finish()
    running = new_writer(folder / "running.h5")
    write_blocks(running, 1)
    return {"master": (folder / "merged.h5").read_bytes(),
            "journal_master": (folder / "running.h5").read_bytes(),
            "journal_block": (journal_dir(folder / "running.h5") / "000000.h5").read_bytes()}


def _read_checked(path: Path) -> None:
    try:
        session = read_session(path)
    except SessionFileError as exc:
        assert str(path) in str(exc) or str(journal_dir(path)) in str(exc)
        return
    for block in session.blocks:  # what was returned is usable as documented
        n = len(block.stimulus_ids)
        assert block.scores.shape == (n, len(block.channel_names))
        for thread in range(block.codes.shape[0]):
            block.thread_scores(thread, 0) if block.scores.shape[1] else None
    for index in session.checkpoints:
        try:
            session.checkpoint(index)
        except SessionFileError:
            pass


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    buffer = bytearray(data)
    for offset, value in flips:
        buffer[offset % len(buffer)] = value
    return bytes(buffer[:cut] if cut is not None else buffer)


mutations = st.tuples(st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=12),
                      st.one_of(st.none(), st.integers(0, 2**16)))


@FUZZ
@given(mutation=mutations)
def test_a_damaged_master_reads_or_fails_cleanly(sessions, mutation):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.h5"
        path.write_bytes(_mutate(sessions["master"], *mutation))
        _read_checked(path)


@FUZZ
@given(mutation=mutations)
def test_a_damaged_journal_block_reads_or_fails_cleanly(sessions, mutation):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.h5"
        path.write_bytes(sessions["journal_master"])
        journal_dir(path).mkdir()
        (journal_dir(path) / "000000.h5").write_bytes(_mutate(sessions["journal_block"], *mutation))
        _read_checked(path)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_are_not_a_session(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.h5"
        path.write_bytes(data)
        with pytest.raises(SessionFileError):
            read_session(path)


# ------------------------------------------------------------------ the Open Ephys stream parser

wire = pytest.importorskip("rig.recording.openephys.wire")


def _valid_frames() -> list[list[bytes]]:
    return [
        wire.format_data(wire.DataMessage(1, "probe", 0, "CH1", 100, 30000.0, np.arange(8, dtype=np.float32), 5)),
        wire.format_ttl(wire.TtlMessage(2, "probe", 101, 120, 3, 1, 8, 6)),
        wire.format_spike(wire.SpikeMessage(3, "probe", 102, "TT1", 130, 2, np.ones((2, 4), np.float32), [-50.0], 7)),
    ]


def _parse_checked(frames: list[bytes]) -> None:
    try:
        message = wire.parse_message(frames)
    except wire.WireError:
        return
    wire.normalise(message, 0.0)  # a parsed message always normalises


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.binary(max_size=64), max_size=4))
def test_random_frames_parse_or_raise_wire_error(frames):
    _parse_checked(frames)


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, 2), frame=st.integers(0, 2), flips=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255)),
                                                                       min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 200)))
def test_mutated_messages_parse_or_raise_wire_error(which, frame, flips, cut):
    frames = [bytes(f) for f in _valid_frames()[which]]
    frame %= len(frames)
    frames[frame] = _mutate(frames[frame], flips, cut) if frames[frame] else frames[frame]
    _parse_checked(frames)


@settings(max_examples=200, deadline=None)
@given(header=st.dictionaries(st.sampled_from(["type", "message_num", "content", "spike", "data_size", "timestamp"]),
                              st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                                           lambda inner: st.lists(inner, max_size=3)
                                           | st.dictionaries(st.text(max_size=12), inner, max_size=8),
                                           max_leaves=12)),
       payload=st.binary(max_size=64))
def test_hostile_json_headers_parse_or_raise_wire_error(header, payload):
    import json
    for envelope in (wire.DATA_ENVELOPE, wire.EVENT_ENVELOPE):
        _parse_checked([envelope, json.dumps(header).encode(), payload])


@settings(max_examples=100, deadline=None)
@given(message=st.binary(max_size=200))
def test_heartbeats_parse_or_raise_wire_error(message):
    try:
        wire.parse_heartbeat(message)
    except wire.WireError:
        pass
