"""A damaged file that crashes or hangs the HDF5 library costs a clear error, never this process."""
from __future__ import annotations

import functools
import os
import signal
import threading
import time
import warnings

import pytest
from h5py._objects import phil as h5py_lock  # the lock every h5py call takes

import rig.session.reader as reader
from rig.session import SessionFileError, read_session
from rig.session.sandbox import failure_in_child

from helpers.sessions import new_writer, write_blocks

pytestmark = pytest.mark.timeout(60)


def _crash(*_: object) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang(*_: object) -> None:
    time.sleep(30)


def _fail() -> None:
    raise ValueError("the caller reports this itself")


def _nothing() -> None:
    pass


def test_a_crash_in_the_child_is_reported_and_the_parent_lives_on():
    assert failure_in_child(_crash, timeout_s=10) == "crashed reading it (SIGSEGV)"


def test_a_hang_in_the_child_is_cut_off_at_the_timeout():
    start = time.monotonic()
    assert failure_in_child(_hang, timeout_s=0.5) == "did not finish reading it within 0.5 s"
    assert time.monotonic() - start < 5  # the child was killed, not waited for


def test_python_errors_in_the_child_are_left_to_the_caller():
    assert failure_in_child(_fail, timeout_s=10) is None
    assert failure_in_child(_nothing, timeout_s=10) is None


def test_a_read_that_cannot_go_to_the_child_is_refused_up_front():
    with pytest.raises(TypeError, match="must be picklable"):
        failure_in_child(lambda: None, timeout_s=10)


@pytest.fixture
def session_file(tmp_path):
    writer = new_writer(tmp_path / "s.h5")
    write_blocks(writer, 2)
    writer.finish()
    return tmp_path / "s.h5"


def test_read_session_turns_a_library_crash_into_a_session_file_error(session_file, monkeypatch):
    before = session_file.read_bytes()
    monkeypatch.setattr(reader, "_read_all", _crash)  # what a damaged heap can do
    with pytest.raises(SessionFileError, match=r"s\.h5: the HDF5 library crashed reading it \(SIGSEGV\)"):
        read_session(session_file)
    assert session_file.read_bytes() == before


def test_read_session_turns_a_library_hang_into_a_session_file_error(session_file, monkeypatch):
    monkeypatch.setattr(reader, "_read_all", _hang)
    monkeypatch.setattr(reader, "PROBE_BASE_S", 0.5)
    with pytest.raises(SessionFileError, match="did not finish reading it"):
        read_session(session_file)


def test_the_probe_works_while_another_thread_holds_h5pys_lock(session_file):
    # A forked child would inherit the lock as held and hang on its first h5py call, which would look like a
    # hanging file; Python >= 3.12 warns about fork() in a threaded process for this reason.
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with h5py_lock:
            held.set()
            release.wait(45)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert held.wait(10)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            assert failure_in_child(functools.partial(reader._read_all, session_file, True), timeout_s=20) is None
        assert holder.is_alive()  # the probe did not wait for the lock (h5py's fork handler takes it first)
    finally:
        release.set()
        holder.join()


def test_an_intact_file_reads_as_before(session_file):
    assert [b.index for b in read_session(session_file).blocks] == [0, 1]


def _probe_in_worker(results) -> None:
    results.put([failure_in_child(_crash, timeout_s=10), failure_in_child(_nothing, timeout_s=10)])


def test_the_probe_works_in_a_daemonic_worker_process():
    """Dask and multiprocessing workers are daemonic and may not start multiprocessing children (rig sweep
    --engine dask read its sessions there); the probe forks instead, with the same verdicts."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=_probe_in_worker, args=(results,), daemon=True)
    worker.start()
    verdicts = results.get(timeout=50)
    worker.join(10)
    assert verdicts == ["crashed reading it (SIGSEGV)", None]
