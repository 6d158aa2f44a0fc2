"""The experimenter's requests during a session: reward now, pause, resume, stop after this trial, abort it.

Anything may post a request (a key press in the PsychoPy window, the
terminal, a dashboard); the trial runner takes them between frames. Requests
are thread-safe and kept in order.
"""
from __future__ import annotations

import threading

__all__ = ["KEYS", "OPERATOR_COMMANDS", "Operator"]

#: What the operator can ask for.
OPERATOR_COMMANDS = ("reward", "pause", "resume", "stop", "abort")
#: Keys (in the terminal or the PsychoPy window) → requests; p pauses, and resumes when pressed again.
KEYS = {"r": "reward", "p": "pause", "s": "stop", "a": "abort"}


class Operator:
    """A queue of operator requests, posted from any thread and taken by the trial runner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._paused_by_key = False

    def press(self, key: str) -> None:
        """A key pressed by the operator (:data:`KEYS`); other keys are ignored."""
        command = KEYS.get(key.lower())
        if command == "pause":
            with self._lock:
                command = "resume" if self._paused_by_key else "pause"
                self._paused_by_key = not self._paused_by_key
        if command is not None:
            self.request(command)

    def request(self, command: str) -> None:
        """Post ``command`` (one of :data:`OPERATOR_COMMANDS`)."""
        if command not in OPERATOR_COMMANDS:
            raise ValueError(f"unknown operator command {command!r}; valid: {list(OPERATOR_COMMANDS)}")
        with self._lock:
            self._pending.append(command)

    def take(self) -> list[str]:
        """Every request posted since the last call, oldest first."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending
