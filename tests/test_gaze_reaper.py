"""The ioHub server's guard (rig/behavior/gaze/reaper.py) over plain processes: no ioHub, no screen.

The "server" is a ``sleep``, a child of this test (so its exit code says which signal ended it); the guard
is the real one, a process of its own. tests/test_gaze_iohub.py has the same over a real ioHub server.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from rig.behavior.gaze.base import GazeError
from rig.behavior.gaze.reaper import GuardError, ServerGuard
from rig.behavior.parts import part_registry

#: The owner: starts a guard over argv[1], prints the guard's pid, then waits to be killed.
OWNER = """import sys, time
from rig.behavior.gaze.reaper import ServerGuard
guard = ServerGuard(int(sys.argv[1]), grace_s=0.3)
print(guard.pid, flush=True)
time.sleep(60)
"""


def sleeper(ignore_term: bool = False) -> subprocess.Popen:
    """A stand-in server; ``ignore_term``: one that SIGTERM does not end (an ignored signal stays so over exec)."""
    trap = 'trap "" TERM; ' if ignore_term else ""
    return subprocess.Popen(["sh", "-c", f"{trap}exec sleep 60"])


def a_dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


@pytest.mark.timeout(30)
def test_an_owner_killed_outright_takes_the_server_with_it():
    server = sleeper()
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(server.pid)], stdout=subprocess.PIPE, text=True)
    try:
        guard_pid = int(owner.stdout.readline())
        assert guard_pid != owner.pid
        assert server.poll() is None  # alive while its owner is
        owner.kill()
        owner.wait()
        assert server.wait(5) == -signal.SIGTERM  # the guard's, since nothing else signals it
    finally:
        owner.kill()
        server.kill()
        server.wait()


@pytest.mark.timeout(30)
def test_done_leaves_the_server_alone_and_eof_ends_it_with_sigkill_after_the_grace():
    server = sleeper(ignore_term=True)
    try:
        guard = ServerGuard(server.pid, grace_s=0.3)
        guard.release(server_gone=True)  # "done": the guard exits and touches nothing
        assert guard.process.returncode == 0
        assert server.poll() is None
        guard = ServerGuard(server.pid, grace_s=0.3)
        guard.release(server_gone=False)  # EOF without "done": as if this process had died
        assert guard.process.returncode == 0
        assert server.wait(1) == -signal.SIGKILL  # SIGTERM was ignored; SIGKILL came after the grace
        guard.release(server_gone=True)  # twice is safe
    finally:
        server.kill()
        server.wait()


def test_a_guard_that_cannot_start_is_a_clear_error():
    dead = a_dead_pid()
    with pytest.raises(GuardError, match=f"did not start \\(exit code 1\\): no process {dead} to guard"):
        ServerGuard(dead)
    source = part_registry("gaze").build("iohub", {"device": "mouse"})
    with pytest.raises(GazeError, match=f"gaze source 'iohub': the server guard did not start .*no process {dead} "
                                        f"to guard; without the guard an ioHub server would outlive a rig"):
        source._guard_server(dead)


@pytest.mark.timeout(30)
def test_the_iohub_source_records_its_guard_and_close_dismisses_it():
    server = sleeper()
    try:
        source = part_registry("gaze").build("iohub", {"device": "mouse"})
        # ioHub's connection, as close() uses it: the server's Popen, and quit() that ends it.
        source._io = SimpleNamespace(_server_process=server, quit=lambda: server.terminate() or server.wait())
        source._guard_server(server.pid)
        guard = source._guard
        described = source.describe()
        assert described["server_pid"] == server.pid and described["server_guard_pid"] == guard.pid
        assert guard.process.poll() is None  # watching
        source.close()
        assert guard.process.returncode == 0  # told "done" once the server had quit, it is gone
    finally:
        server.kill()
        server.wait()


@pytest.mark.timeout(30)
def test_a_hub_that_never_connected_leaves_its_server_to_the_guard():
    server = sleeper()  # a server ioHub started, then failed to connect to: start() closes with no hub
    try:
        source = part_registry("gaze").build("iohub", {"device": "mouse"})
        source._guard_server(server.pid)
        source.close()
        assert server.wait(5) == -signal.SIGTERM  # the guard's
    finally:
        server.kill()
        server.wait()
