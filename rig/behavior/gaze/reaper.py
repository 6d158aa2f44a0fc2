"""A dead-man's switch: a guard process that ends a server when the process that started it dies.

Why: ioHub's server is a process of its own. When the rig quits, it quits the
server; when the rig is SIGKILLed (the OOM killer, ``kill -9``, a session
logged out), nothing does, and the orphan keeps the eye tracker's connection
(an EyeLink host accepts one), so the next ``rig run --resume`` cannot get the
tracker. (The server checks for its parent itself, every 0.5 s, yet stayed up
8 s and more after a SIGKILLed rig here, MouseGaze.) The guard is a tiny
process, started with :class:`ServerGuard` right after the server, holding the read end of a pipe whose write end only the rig
holds. However the rig ends, the OS closes the write end: the guard reads EOF
and ends the server (SIGTERM, then SIGKILL after a grace). A clean close
writes one byte ("done") first, after the server has quit, and the guard exits
leaving everything alone.

The guard runs in a session of its own (a process group of its own on
Windows), so a Ctrl-C to the rig's terminal does not end it before the rig. It
knows the server as a ``psutil.Process`` (psutil is a requirement of ioHub,
which uses it itself), taken at once: psutil checks the pid's start time
before each signal, so a pid the OS has since given to another process is
never signalled. Only this module's file is run (not ``-m``), so the guard
imports nothing of the rig's: it starts on a tenth of a second of CPU.

The pipe's write end is not inheritable (subprocess's pipes never are), so
processes the rig starts later do not hold it open; a child made by a bare
``os.fork`` would, and the guard would then wait for that child to end too.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Sequence

import psutil  # a requirement of psychopy-lib (ioHub uses it itself)

__all__ = ["GUARD_START_TIMEOUT_S", "GuardError", "ServerGuard", "main"]

#: How long ServerGuard waits for the guard to say it holds the server.
GUARD_START_TIMEOUT_S = 10.0
#: What the guard prints once it holds the server, and what the owner writes on a clean close.
READY, DONE = b"guarding", b"d"


class GuardError(RuntimeError):
    """The guard could not start or could not find the process it is to guard."""


class ServerGuard:
    """A guard process over ``pid``: ends it (SIGTERM, then SIGKILL after ``grace_s``) when this process dies.

    Args:
        pid: The server's process id.
        grace_s: How long the guard waits after SIGTERM before SIGKILL.

    Raises:
        GuardError: the guard did not start, or did not find ``pid``, within :data:`GUARD_START_TIMEOUT_S`;
            the message has the guard's own words.
    """

    def __init__(self, pid: int, grace_s: float = 2.0) -> None:
        # A session (Windows: process group) of its own: a Ctrl-C to the rig's group must not end the guard first.
        flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) if os.name == "nt" else 0
        try:
            # Unbuffered (bufsize=0): "done" reaches the guard when it is written, not when a buffer is flushed.
            self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(pid), repr(grace_s)],
                                            bufsize=0, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, start_new_session=os.name != "nt",
                                            creationflags=flags)
        except OSError as exc:
            raise GuardError(f"the server guard could not be started ({exc})") from None
        self.pid = self.process.pid
        # A guard that hangs before it answers is killed, which ends the readline below with EOF.
        watchdog = threading.Timer(GUARD_START_TIMEOUT_S, self.process.kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            answer = self.process.stdout.readline().strip()
        finally:
            watchdog.cancel()
        if answer != READY:
            self.process.kill()
            _, err = self.process.communicate()
            lines = err.decode(errors="replace").strip().splitlines()
            why = lines[-1] if lines else f"no answer within {GUARD_START_TIMEOUT_S:g} s"
            raise GuardError(f"the server guard did not start (exit code {self.process.returncode}): {why}")
        self.process.stdout.close()

    def release(self, server_gone: bool, timeout_s: float = 5.0) -> None:
        """Let the guard go: "done" if the server is gone (the guard exits), else EOF (the guard ends the server).

        Waits up to ``timeout_s`` for the guard to exit; safe to call twice.
        """
        stdin = self.process.stdin
        if stdin is not None and not stdin.closed:
            try:
                if server_gone:
                    stdin.write(DONE)
                stdin.close()
            except BrokenPipeError:  # the guard died already; nothing is left to tell it
                pass
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


# -- the guard's side ---------------------------------------------------------------------------------


def _gone(server: psutil.Process) -> bool:
    """The server has exited (a zombie counts: its parent is gone, and it runs no more)."""
    try:
        return not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _end(server: psutil.Process, grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``grace_s``; psutil refuses a pid reused since."""
    for signal_it, wait_s in ((server.terminate, grace_s), (server.kill, 5.0)):
        if _gone(server):
            return
        try:
            signal_it()
        except psutil.NoSuchProcess:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not _gone(server):
            time.sleep(0.02)


def main(argv: Sequence[str]) -> int:
    """The guard: ``reaper.py PID GRACE_S``; stdin is the owner's pipe. Prints :data:`READY` once it holds PID."""
    try:
        pid, grace_s = int(argv[0]), float(argv[1])
    except (IndexError, ValueError):
        print(f"usage: reaper.py PID GRACE_S (got {list(argv)})", file=sys.stderr)
        return 2
    try:
        server = psutil.Process(pid)  # now: its start time pins the pid
    except psutil.NoSuchProcess:
        print(f"no process {pid} to guard", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(READY + b"\n")
    sys.stdout.flush()
    word = os.read(sys.stdin.fileno(), 1)  # blocks until the owner writes "done" or dies (EOF)
    if word != DONE:
        _end(server, grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
