"""Gaze sources behind one interface (:mod:`rig.behavior.gaze.base`), registered by kind."""
from __future__ import annotations

from rig.behavior.gaze.base import GAZE_SOURCES, GazeError, GazeSamples, GazeSource, GazeTask

__all__ = ["GAZE_SOURCES", "GazeError", "GazeSamples", "GazeSource", "GazeTask"]
