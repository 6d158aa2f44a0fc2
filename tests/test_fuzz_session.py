"""Fuzzing (hypothesis) the readers of untrusted bytes: session files and the Open Ephys stream parser.

Whatever the bytes, the reader returns a well-formed result or raises its own clear error
(SessionFileError, WireError); it never raises anything else and never crashes the process. Some damaged
files crash or hang the HDF5 library itself; read_session reads in a forked child first
(rig/session/sandbox.py), so those become SessionFileErrors too, and this process lives on.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rig.session.reader as reader
from rig.session import SessionFileError, journal_dir, read_session, scan_session
from rig.session.salvage import salvage_session

from helpers.session_commands import reading_commands, run_command
from helpers.sessions import new_writer, write_blocks
from helpers.protocols import run_tiny_session

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


# ------------------------------------------------------------------ crafted attributes and datasets, every command

#: Root and block attributes a reader relies on, and the block datasets.
ROOT_ATTRIBUTES = ["schema_version", "session_id", "status", "seed", "provenance", "resumes", "clock_anchor",
                   "protocol_toml", "protocol_sha256", "created_utc", "unexpected"]
BLOCK_ATTRIBUTES = ["index", "channel_names", "timings", "sha256", "written_utc"]
BLOCK_DATASETS = ["codes", "stimulus_ids", "kinds", "threads", "code_index", "onset_times", "offset_times",
                  "dropped_frames", "presentation_valid", "scores", "valid", "showings/00/scores"]


def _nested(depth: int, leaf: object) -> object:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)
attribute_values = st.one_of(
    st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40).map(lambda t: t.replace("\0", "")),  # HDF5 cannot store NULs in strings
    st.binary(max_size=24).map(lambda b: np.array(b"\xff" + b.replace(b"\0", b""),  # not UTF-8 (no NULs: HDF5
                                                  dtype=h5py.string_dtype("utf-8"))),  # cannot store them)
    json_values.map(lambda v: json.dumps(v)),
    st.tuples(st.integers(0, 400), json_values).map(lambda t: json.dumps(_nested(*t))),  # deeply nested JSON
    st.tuples(st.sampled_from(["f8", "i8", "u1", "?"]), st.integers(0, 5)).map(lambda t: np.zeros(t[1], dtype=t[0])),
)
#: (dtype, shape, huge): huge datasets are declared (chunked, resizable) and store nothing.
dataset_specs = st.tuples(st.sampled_from(["f8", "i8", "u1", "?", "f4", "str", "vlen-u1"]),
                          st.lists(st.integers(0, 6), min_size=0, max_size=3),
                          st.sampled_from([None, 2**20, 2**31, 2**45]))
edits = st.one_of(
    st.tuples(st.just("root"), st.sampled_from(ROOT_ATTRIBUTES), attribute_values),
    st.tuples(st.just("block"), st.sampled_from(BLOCK_ATTRIBUTES), attribute_values),
    st.tuples(st.just("dataset"), st.sampled_from(BLOCK_DATASETS), dataset_specs),
)


def _apply(path: Path, edit: tuple) -> str:
    """Apply one crafted edit to block 1 or the root of ``path``; the name an error should give."""
    kind, name, value = edit
    with h5py.File(path, "r+") as f:
        if kind == "root":
            f.attrs[name] = value
            return name
        block = f["blocks/000001"]
        if kind == "block":
            block.attrs[name] = value
            return name
        dtype, shape, huge = value
        del block[name]
        if huge is not None:
            tail = [max(e, 1) for e in shape[1:]]
            block.create_dataset(name, shape=(huge, *tail), maxshape=(None, *tail), dtype="f8", chunks=(1024, *tail))
        elif dtype == "str":
            block.create_dataset(name, data=np.array(["x"] * int(np.prod(shape)), dtype=object).reshape(shape),
                                 dtype=h5py.string_dtype())
        elif dtype == "vlen-u1":
            data = np.empty(int(np.prod(shape)), dtype=object)
            data[:] = [np.arange(3, dtype=np.uint8)] * len(data)
            block.create_dataset(name, data=data.reshape(shape), dtype=h5py.vlen_dtype(np.uint8))
        else:
            block.create_dataset(name, data=np.ones(shape, dtype=dtype))
        return name


@pytest.fixture(scope="module")
def real_session(tmp_path_factory) -> Path:
    """A real 3-block session written by `rig run` (tests/helpers/protocols.py)."""
    return run_tiny_session(tmp_path_factory.mktemp("real"), generations=3)


@settings(max_examples=int(os.environ.get("RIG_FUZZ_CRAFTED_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(edit=edits)
def test_crafted_attributes_and_datasets_read_or_fail_naming_them(real_session, edit):
    """read_session and rig salvage: a result, or a SessionFileError naming the file and what is wrong."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.h5"
        shutil.copy(real_session, path)
        name = _apply(path, edit)
        try:
            _read_checked(path)
        except SessionFileError:
            pytest.fail("_read_checked lets only clean errors through")
        try:
            scan_session(path)
        except SessionFileError as exc:
            assert str(path) in str(exc) and name.split("/")[-1] in str(exc), (edit, str(exc))
        try:
            salvage_session(path, Path(folder) / "out.h5")
        except SessionFileError as exc:
            assert str(path) in str(exc) or "out.h5" in str(exc)
        else:
            _read_checked(Path(folder) / "out.h5")  # a salvage is a session file


@settings(max_examples=int(os.environ.get("RIG_FUZZ_COMMAND_EXAMPLES", "6")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(edit=edits)
def test_every_reading_command_succeeds_or_fails_in_one_line(real_session, edit, capsys, monkeypatch):
    """The six commands that read a session: exit 0, 1 or 2; a failure is one line naming the file; no bug."""
    monkeypatch.setenv("RIG_DEBUG", "1")  # an unexpected exception raises here, failing the test, not one line
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.h5"
        shutil.copy(real_session, path)
        _apply(path, edit)
        for name, argv in reading_commands(path, Path(folder)).items():
            started = time.monotonic()
            code, err = run_command(argv, capsys)
            assert time.monotonic() - started < 60, (name, edit)
            assert code in (0, 1, 2), (name, edit, code, err)
            if code == 1 and name == "replay" and not err:
                continue  # it ran and diverged (e.g. another seed): a report on stdout, as documented
            if code:
                assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, edit, err)
                assert str(path) in err or str(folder) in err, (name, edit, err)


@pytest.mark.slow
def test_reading_a_large_declared_dataset_stays_under_a_memory_cap(real_session, tmp_path):
    """2 GiB declared in a small file: every command refuses it by name, in a process capped at +1.5 GiB."""
    path = tmp_path / "s.h5"
    shutil.copy(real_session, path)
    _apply(path, ("dataset", "scores", ("f8", [0, 2], 2**27)))
    script = f"""
import resource, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import torch, h5py, pynwb  # the big imports first: the cap is on what reading the file adds
from rig.cli import main
from helpers.session_commands import reading_commands
with open("/proc/self/status") as status:
    vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 2**29, vm + 3 * 2**29))
codes = [main(argv) for argv in reading_commands(__import__("pathlib").Path({str(path)!r}),
                                                 __import__("pathlib").Path({str(tmp_path)!r})).values()]
print("codes", codes)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RIG_DEBUG": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "codes [2, 2, 2, 2, 2, 0]" in done.stdout, done.stdout + done.stderr[-3000:]  # salvage keeps block 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("rig ")]
    assert len(lines) == 5 and all("/blocks/000001/scores: declares shape (134217728, 2)" in line for line in lines)


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
