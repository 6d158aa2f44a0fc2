"""A viewer beside a run (``rig run --dashboard``): ``rig watch`` in a process of its own.

Its own process, so a viewer that crashes or hangs cannot stop or slow the
run: the run never waits on it, and only ends it when the run itself ends.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["Viewer"]


class Viewer:
    """``rig watch SESSION --port PORT`` started in the background; its output goes to this terminal."""

    def __init__(self, session: Path, port: int, host: str = "127.0.0.1") -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "rig.cli", "watch", str(session), "--port", str(port),
                                         "--host", host], stdin=subprocess.DEVNULL, start_new_session=True)

    def close(self, timeout_s: float = 1.0) -> None:
        """End the viewer (if it is still there), waiting at most ``timeout_s`` before killing it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
