"""How a trial ended: a fixed vocabulary with MonkeyLogic's (NIMH ML2) trial error codes (DESIGN.md §9).

Only the codes this controller can produce are defined; their numbers are
ML2's, so a lab's analysis code reads them without a table.
"""
from __future__ import annotations

from enum import IntEnum

__all__ = ["TrialOutcome"]


class TrialOutcome(IntEnum):
    """A trial's outcome, numbered as ML2's trial error codes."""

    #: Fixation held from acquisition to the end of the last stimulus's response window (ML2 0, "correct").
    COMPLETED = 0
    #: Gaze left the window (or was lost longer than the blink grace) after it was acquired (ML2 3).
    BROKE_FIXATION = 3
    #: Gaze never entered the window within the time allowed to acquire (ML2 4).
    NO_FIXATION = 4
    #: The operator ended the trial (ML2 9).
    ABORTED = 9

    @property
    def label(self) -> str:
        """Lower-case words, as tables and reports print them."""
        return self.name.lower().replace("_", " ")
