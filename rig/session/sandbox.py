"""Run a risky read in a child process first, so a damaged file cannot crash or hang this process.

The HDF5 C library trusts a file's bytes: a damaged global heap (where
variable-length strings and raw stream frames live) or object header can make
it loop forever or crash with SIGSEGV, which no Python ``try`` can catch.
Fuzzing found both in h5py 3.16 / HDF5 2.0. So :func:`failure_in_child` does
the read in a child first; only if the child finishes does the caller read the
file itself. The child shares nothing back, so its result is thrown away.

The child comes from multiprocessing's ``forkserver`` (``spawn`` where there is
none, as on Windows), not from ``os.fork`` of this process: rig reads sessions
while other threads run (a live reader, a display), and a fork of a threaded
process can deadlock in the child on a lock another thread held (h5py's own,
say), which would look like a hanging file; Python 3.12 warns about it. The
forkserver is one single-threaded process, started once, that forks a fresh
child for each read. So the read must be picklable: a module-level function,
or a :func:`functools.partial` of one, not a lambda; and it runs in a fresh
interpreter, so what a test monkeypatches in this process is not seen there.
As with any multiprocessing start method but fork, a script that reads
sessions must keep its top level under ``if __name__ == "__main__":``: the
server imports the caller's main module once.

A daemonic process (a Dask or ``multiprocessing`` worker, e.g. ``rig sweep
--engine dask``) may not start multiprocessing children, so there the child is
an ``os.fork`` of the worker, as before the forkserver: a worker runs one job
at a time, with no display or live reader threads of rig's.
"""
from __future__ import annotations

import faulthandler
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable

__all__ = ["failure_in_child"]


#: The child's exit status when ``read()`` ran out of memory.
_OUT_OF_MEMORY = 3
#: The child's exit status when it could not load ``read`` (a bug: e.g. its module is not importable).
_CANNOT_LOAD = 4


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Imported once, in the server, not again in each child: the reader and the caller's main module.
        context.set_forkserver_preload(["__main__", "rig.session.reader"])
        return context
    return multiprocessing.get_context("spawn")


def _child(sys_path: list[str], pickled_read: bytes) -> None:
    """In the child: load ``read`` where the parent would find it, run it, and say how it ended in the exit status."""
    faulthandler.disable()  # a crash here is reported by the parent, in words; no traceback dump
    sys.path[:] = sys_path  # the forkserver does not apply the parent's path (Python < 3.13)
    try:
        read = pickle.loads(pickled_read)
    except BaseException:  # noqa: BLE001 (reported by the parent)
        os._exit(_CANNOT_LOAD)
    _run_and_exit(read)


def _run_and_exit(read: Callable[[], object]) -> None:
    """In a child: run ``read`` and end, saying in the exit status whether it ran out of memory."""
    status = 0
    try:
        read()
    except MemoryError:
        status = _OUT_OF_MEMORY
    except BaseException:  # noqa: BLE001 (the parent reports Python errors itself)
        pass
    finally:
        os._exit(status)  # never return into the caller's code, nor run its atexit handlers or cleanup


def failure_in_child(read: Callable[[], object], timeout_s: float) -> str | None:
    """Call ``read()`` in a child process; None if it returned or raised, else what went wrong.

    A Python exception in the child is not a failure: the caller's own read
    raises it again, with its message. A crash (a signal), a hang (still
    running after ``timeout_s``) and a MemoryError (which the caller's own
    read might not survive) are reported, as words for an error message.

    Raises:
        TypeError: ``read`` cannot be pickled (a lambda or a local function).
        RuntimeError: the child could not load ``read``.
    """
    try:
        pickled = pickle.dumps(read)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise TypeError(f"the read to probe must be picklable (a module-level function or a partial of one), "
                        f"got {read!r}: {exc}") from None
    if multiprocessing.current_process().daemon:
        return _failure_in_fork(read, timeout_s)
    child = _context().Process(target=_child, args=(list(sys.path), pickled), daemon=True)
    child.start()
    child.join(timeout_s)
    if child.exitcode is None:
        child.kill()
        child.join()
        return f"did not finish reading it within {timeout_s:g} s"
    if child.exitcode < 0:
        return f"crashed reading it ({signal.Signals(-child.exitcode).name})"
    if child.exitcode == _OUT_OF_MEMORY:
        return "ran out of memory reading it (MemoryError)"
    if child.exitcode == _CANNOT_LOAD:
        raise RuntimeError(f"the probe child could not load {read!r} (is its module importable?)")
    return None


def _failure_in_fork(read: Callable[[], object], timeout_s: float) -> str | None:
    """:func:`failure_in_child` for a daemonic process: the child is a fork of this one."""
    pid = os.fork()
    if pid == 0:
        faulthandler.disable()
        _run_and_exit(read)
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"did not finish reading it within {timeout_s:g} s"
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    if os.WIFSIGNALED(status):
        return f"crashed reading it ({signal.Signals(os.WTERMSIG(status)).name})"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == _OUT_OF_MEMORY:
        return "ran out of memory reading it (MemoryError)"
    return None
