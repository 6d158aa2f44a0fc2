"""A rig that starts an ioHub hub (MouseGaze, a real window under Xvfb) and then waits to be killed.

Run as ``python -m helpers.iohub_rig`` from tests/ (tests/test_gaze_iohub.py does): it prints
``pids SERVER_PID GUARD_PID`` once the hub is up and recording, then sleeps, never closing the source: what a rig
that is SIGKILLed mid-session leaves behind.
"""
from __future__ import annotations

import time

from protocols.spec import DisplaySpec
from rig.behavior.gaze.base import GazeTask
from rig.behavior.parts import part_registry
from rig.display.psychopy import CLOCK, PsychoPyDisplay


def main() -> None:
    """Start the hub as tests/test_gaze_iohub.py's ``hub`` fixture does (smaller), print its pids, wait."""
    spec = DisplaySpec(width_cm=20.0, distance_cm=57.0, resolution=(200, 150), fullscreen=False, pace=True,
                       refresh_hz=60.0, fixation_deg=0.5, photodiode="none")
    display = PsychoPyDisplay(spec, pos=(1000, 800))  # away from the test's own window (100, 50)
    source = part_registry("gaze").build("iohub", {"device": "mouse", "sample_rate_hz": 100})
    source.attach_display(display)
    source.start(GazeTask((0.0, 0.0), 2.0, CLOCK, display._clock.getTime()))
    facts = source.describe()
    print("pids", facts["server_pid"], facts["server_guard_pid"], flush=True)  # Xlib prints on stdout too
    time.sleep(120)  # the test kills this process long before


if __name__ == "__main__":
    main()
