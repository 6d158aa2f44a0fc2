"""Run a risky read in a forked child first, so a damaged file cannot crash or hang this process.

The HDF5 C library trusts a file's bytes: a damaged global heap (where
variable-length strings and raw stream frames live) or object header can make
it loop forever or crash with SIGSEGV, which no Python ``try`` can catch.
Fuzzing found both in h5py 3.16 / HDF5 2.0. So :func:`failure_in_child` does
the read in a fork first; only if the child finishes does the caller read the
file itself. A fork shares nothing back, so the child's result is thrown away.

Where ``os.fork`` does not exist (Windows) the read runs unguarded.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import time
from collections.abc import Callable

__all__ = ["failure_in_child"]


#: The child's exit status when ``read()`` ran out of memory.
_OUT_OF_MEMORY = 3


def failure_in_child(read: Callable[[], object], timeout_s: float) -> str | None:
    """Call ``read()`` in a forked child; None if it returned or raised, else what went wrong.

    A Python exception in the child is not a failure: the caller's own read
    raises it again, with its message. A crash (a signal), a hang (still
    running after ``timeout_s``) and a MemoryError (which the caller's own
    read might not survive) are reported, as words for an error message.
    """
    if not hasattr(os, "fork"):
        return None
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's code, never run its atexit handlers
        faulthandler.disable()  # a crash here is reported by the parent, in words; no traceback dump
        status = 0
        try:
            read()
        except MemoryError:
            status = _OUT_OF_MEMORY
        except BaseException:  # noqa: BLE001 (the parent reports Python errors itself)
            pass
        finally:
            os._exit(status)
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"did not finish reading it within {timeout_s:.0f} s"
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"crashed reading it ({signal.Signals(number).name})"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == _OUT_OF_MEMORY:
        return "ran out of memory reading it (MemoryError)"
    return None
