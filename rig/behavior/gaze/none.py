"""The ``none`` gaze source: no eyes are watched (an anaesthetised animal, or a session without fixation control).

Trials then run without fixation gating: the fixation point is shown, the
hold and the stimuli follow at once, and no stimulus is ever lost to a break.
"""
from __future__ import annotations

from typing import ClassVar

from rig.behavior.gaze.base import GAZE_SOURCES, GazeSamples, GazeSource


@GAZE_SOURCES.register("none")
class NoGaze(GazeSource):
    """Delivers no samples; the trial machine treats fixation as always held."""

    realtime: ClassVar[bool] = False
    #: The trial machine reads this: without gaze there is nothing to monitor.
    monitors_gaze: ClassVar[bool] = False

    def __init__(self, **options: object) -> None:
        self.configure(options)

    def _read(self, until: float) -> GazeSamples:
        return GazeSamples.empty()
