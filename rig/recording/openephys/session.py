"""The Open Ephys GUI through a session: recording named and started before the first stimulus, a message
per block, trial markers on TTL lines, recording stopped at the end; what happened kept for the session file.

``rig run --openephys http://HOST:37497`` builds a :class:`GuiSession`. It
checks the GUI (and the NetworkEvents plugin, when markers are on) before
anything is shown, so a GUI that does not answer fails the run with a clear
error and nothing recorded; ``close()`` runs on every way out.
"""
from __future__ import annotations

from typing import Any

from rig.recording.openephys.control import GuiControl, OpenEphysOptions
from rig.recording.openephys.events import MarkerSender

__all__ = ["GuiSession"]


class GuiSession:
    """The GUI at ``url`` driven for one session, as ``options`` (the protocol's ``[openephys]``) says."""

    def __init__(self, url: str, options: OpenEphysOptions | None = None) -> None:
        self.options = options if options is not None else OpenEphysOptions()
        self.control = GuiControl.from_options(url, self.options)
        self.markers: MarkerSender | None = None

    def start(self, session_name: str) -> dict[str, Any]:
        """Check the GUI (and its NetworkEvents plugin), then name and start its recording.

        Raises:
            GuiError, EventsError: the GUI or the plugin did not answer, or the recording did not start.
        """
        self.control.check()
        if self.options.markers:
            self.markers = MarkerSender(self.control.host, self.options)
            self.markers.check()
        return self.control.start(session_name)

    def listen_to(self, display: Any) -> None:
        """Send the trial events of a display that runs trials as TTL markers (nothing without trials)."""
        runner = getattr(display, "runner", None)
        if runner is not None and self.markers is not None:
            runner.add_listener(self.markers)

    def block(self, index: int, total: int | None) -> None:
        """A text event for a finished block (0-based ``index``); never raises, never waits long."""
        self.control.block(index + 1, total)

    def close(self) -> None:
        """Flush the markers and stop the recording; safe on any path, twice."""
        if self.markers is not None:
            self.markers.close()
        self.control.stop()

    def describe(self) -> dict[str, Any]:
        """The GUI's recording (directory, base text, modes) and the markers' counts, for the session file."""
        return {"gui": self.control.describe(),
                "markers": self.markers.describe() if self.markers is not None else None}
