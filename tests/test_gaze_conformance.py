"""Every gaze source passes the shared suite (tests/helpers/gaze_conformance.py): one subclass per registered kind.

Registering a gaze source in a module of :mod:`rig.behavior.gaze` puts it under
:func:`test_every_gaze_source_kind_is_under_the_suite`, which fails until the
kind has a subclass here.
"""
from __future__ import annotations

import importlib
import pkgutil

from helpers.gaze_conformance import GazeConformance

import rig.behavior.gaze
from rig.behavior.gaze import GAZE_SOURCES
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


def test_every_gaze_source_kind_is_under_the_suite():
    for module in pkgutil.iter_modules(rig.behavior.gaze.__path__):
        importlib.import_module(f"rig.behavior.gaze.{module.name}")  # each registers its kinds
    covered = {suite.kind for suite in GazeConformance.__subclasses__()}
    assert {"none", "simulated"} <= set(GAZE_SOURCES.kinds())
    missing = set(GAZE_SOURCES.kinds()) - covered
    assert not missing, f"gaze source kinds without a GazeConformance subclass in {__name__}: {sorted(missing)}"
