"""Every gaze source passes the shared suite (tests/helpers/gaze_conformance.py): one subclass per registered kind.

Registering a gaze source in a module of :mod:`rig.behavior.gaze` puts it under
:func:`test_every_gaze_source_kind_is_under_the_suite`, which fails until the
kind has a subclass here.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

import pytest
from helpers.gaze_conformance import TASK, GazeConformance

import rig.behavior.gaze
from protocols.spec import DisplaySpec
from rig.behavior.gaze import GAZE_SOURCES
from rig.behavior.gaze.iohub import IoHubGaze
from rig.behavior.gaze.none import NoGaze
from rig.behavior.gaze.simulated import SimulatedMonkey


class TestSimulatedMonkey(GazeConformance):
    """The monkey, blinking and breaking often enough that three trials show both."""

    kind = "simulated"
    rate_hz = 500.0

    def make_source(self):
        monkey = GAZE_SOURCES.build("simulated", {"blink_rate_hz": 2.0, "break_hazard_hz": 1.0})
        assert isinstance(monkey, SimulatedMonkey)
        return monkey


class TestNoGaze(GazeConformance):
    kind = "none"

    def make_source(self):
        return NoGaze()


@pytest.mark.skipif(not os.environ.get("DISPLAY"),
                    reason='needs a screen: run under xvfb-run -a -s "-screen 0 1280x1024x24" (make test does)')
class TestIoHubGaze(GazeConformance):
    """MouseGaze at 100 Hz through a real ioHub server, on a PsychoPy window; nothing moves the pointer, so the
    samples sit at the screen's centre. The suite's clock is one the source does not know: it is aligned at start.

    An ioHub server takes seconds to launch, so one source (one server) serves the class: each test gets it
    started anew with the suite's task (what a second start() does: the task's clock, nothing pending, nothing
    delivered yet). The close test closes it for real; a test after it starts it again, on a new server.
    """

    kind = "iohub"

    @pytest.fixture(scope="class")
    @classmethod
    def running(cls):
        from rig.display.psychopy import PsychoPyDisplay

        # pace: Xvfb has no vsync (an unpaced window there is refused, as its frame counts would mean nothing).
        cls.display = PsychoPyDisplay(DisplaySpec(resolution=(320, 240), fullscreen=False, fixation_deg=0.0,
                                                  photodiode="none", pace=True))
        source = cls().make_source()
        yield source
        source.close()
        cls.display.close()

    @pytest.fixture
    def source(self, running):
        running.start(TASK)
        yield running

    def make_source(self):
        source = GAZE_SOURCES.build("iohub", {"device": "mouse", "sample_rate_hz": 100})
        assert isinstance(source, IoHubGaze)
        source.attach_display(self.display)
        return source


def test_every_gaze_source_kind_is_under_the_suite():
    for module in pkgutil.iter_modules(rig.behavior.gaze.__path__):
        importlib.import_module(f"rig.behavior.gaze.{module.name}")  # each registers its kinds
    # A source's suite may live beside its own tests (test_gaze_*.py, e.g. with the rig it needs): load them.
    for path in sorted(Path(__file__).parent.glob("test_gaze_*.py")):
        importlib.import_module(path.stem)
    covered = {suite.kind for suite in GazeConformance.__subclasses__()}
    assert {"none", "simulated"} <= set(GAZE_SOURCES.kinds())
    missing = set(GAZE_SOURCES.kinds()) - covered
    assert not missing, f"gaze source kinds without a GazeConformance subclass in tests/test_gaze_*.py: {sorted(missing)}"
