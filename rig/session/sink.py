"""Where the controller puts each finished block: the declared type of a session sink."""
from __future__ import annotations

import abc
from typing import Any, Sequence

from protocols.base import Block, Responses
from rig.display import Presentations


class SessionSink(abc.ABC):
    """Takes each block as it completes, then the session's end status.

    :class:`rig.session.writer.SessionWriter` writes them to the session file; a
    replay's sink (rig/loop/replay.py) counts them and writes nothing.
    """

    @abc.abstractmethod
    def append_block(self, block: Block, presentations: Presentations, responses: Responses,
                     checkpoint: dict[str, bytes], timings: dict[str, float], showings: Sequence[Any] = ()) -> None:
        """Take one completed block: each stimulus's final showing, every showing, optimizer state, timings."""

    def record_control(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Keep one operator control taken from a viewer (rig.dashboard.channel); the entry as recorded.

        Only a sink that writes a session can: a replay is driven by its file, never by a viewer.
        """
        raise TypeError(f"{type(self).__name__} keeps no operator controls")

    @abc.abstractmethod
    def finish(self, status: str = "complete") -> None:
        """The session ended: ``complete``, ``interrupted`` or ``failed``."""
