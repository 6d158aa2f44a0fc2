"""The operator's keys in the terminal: r reward, p pause/resume, s stop after this trial, a abort this trial.

A thread reads single key presses from the controlling terminal (cbreak mode,
restored on close) and posts them to the :class:`~rig.behavior.operator.Operator`.
Without a terminal (tests, a batch job) it does nothing.
"""
from __future__ import annotations

import os
import select
import sys
import threading
from typing import TextIO

from rig.behavior.operator import Operator

__all__ = ["TerminalKeys"]


class TerminalKeys:
    """Posts key presses on ``stream`` (default stdin, when it is a terminal) to ``operator``."""

    def __init__(self, operator: Operator, stream: TextIO | None = None) -> None:
        self.operator = operator
        self.stream = stream if stream is not None else sys.stdin
        self._stop = threading.Event()
        self._saved = None
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        """Whether keys are being read (there is a terminal)."""
        return self._thread is not None

    def start(self) -> "TerminalKeys":
        """Start reading, if the stream is a terminal; say which keys do what."""
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return self
        if not os.isatty(fd):
            return self
        import termios
        import tty

        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._thread = threading.Thread(target=self._read, args=(fd,), name="operator-keys", daemon=True)
        self._thread.start()
        print("behavior: keys: r reward, p pause/resume, s stop after this trial, a abort this trial",
              file=sys.stderr, flush=True)
        return self

    def _read(self, fd: int) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            self.operator.press(os.read(fd, 1).decode(errors="replace"))

    def close(self) -> None:
        """Stop reading and give the terminal back as it was."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None
