"""Displays: the interface (:mod:`rig.display.base`) and its implementations.

- :mod:`rig.display.headless`: no screen (in silico; paced in front of a recording);
- :mod:`rig.display.psychopy`: a PsychoPy window laid out by ``[display]`` (:mod:`rig.display.monitor`);
- :mod:`rig.display.recorded`: reports a session's recorded presentations (replay);
- :mod:`rig.display.choice`: building a display by name.
"""
from rig.display.base import Display, Presentations

__all__ = ["Display", "Presentations"]
