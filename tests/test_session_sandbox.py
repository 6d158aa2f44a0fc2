"""A damaged file that crashes or hangs the HDF5 library costs a clear error, never this process."""
from __future__ import annotations

import os
import signal
import time

import pytest

import rig.session.reader as reader
from rig.session import SessionFileError, read_session
from rig.session.sandbox import failure_in_child

from test_session import new_writer, write_blocks

pytestmark = pytest.mark.timeout(60)


def _crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_crash_in_the_child_is_reported_and_the_parent_lives_on():
    assert failure_in_child(_crash, timeout_s=10) == "crashed reading it (SIGSEGV)"


def test_a_hang_in_the_child_is_cut_off_at_the_timeout():
    start = time.monotonic()
    assert failure_in_child(lambda: time.sleep(30), timeout_s=0.5) == "did not finish reading it within 0 s"
    assert time.monotonic() - start < 5  # the child was killed, not waited for


def test_python_errors_in_the_child_are_left_to_the_caller():
    def fail() -> None:
        raise ValueError("the caller reports this itself")

    assert failure_in_child(fail, timeout_s=10) is None
    assert failure_in_child(lambda: None, timeout_s=10) is None


@pytest.fixture
def session_file(tmp_path):
    writer = new_writer(tmp_path / "s.h5")
    write_blocks(writer, 2)
    writer.finish()
    return tmp_path / "s.h5"


def test_read_session_turns_a_library_crash_into_a_session_file_error(session_file, monkeypatch):
    before = session_file.read_bytes()
    monkeypatch.setattr(reader, "_read_all", lambda path, verify: _crash())  # what a damaged heap can do
    with pytest.raises(SessionFileError, match=r"s\.h5: the HDF5 library crashed reading it \(SIGSEGV\)"):
        read_session(session_file)
    assert session_file.read_bytes() == before


def test_read_session_turns_a_library_hang_into_a_session_file_error(session_file, monkeypatch):
    monkeypatch.setattr(reader, "_read_all", lambda path, verify: time.sleep(30))
    monkeypatch.setattr(reader, "PROBE_BASE_S", 0.5)
    with pytest.raises(SessionFileError, match="did not finish reading it"):
        read_session(session_file)


def test_an_intact_file_reads_as_before(session_file):
    assert [b.index for b in read_session(session_file).blocks] == [0, 1]
