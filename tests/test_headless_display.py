"""The headless display passes the shared Display suite."""
from __future__ import annotations

from display_conformance import DisplayConformance

from rig.display.headless import HeadlessDisplay


class TestHeadlessDisplay(DisplayConformance):
    def make_display(self) -> HeadlessDisplay:
        return HeadlessDisplay()
