"""The gated display: a display whose blocks run as trials, gated by fixation.

It wraps a display that can draw single frames (one that offers
``frames()``, a :class:`~rig.behavior.frames.FrameSurface`) and shows each
block through the :class:`~rig.behavior.runner.TrialRunner`, so the controller,
the response sources and the session file see an ordinary display whose
stimuli may come back invalid, with the trials attached to the presentations.
"""
from __future__ import annotations

from protocols.base import Block
from rig.behavior.runner import TrialRunner
from rig.display.base import Display, Presentations

__all__ = ["GatedDisplay"]


class GatedDisplay(Display):
    """Shows blocks as trials on ``inner``'s frames; ``runner`` holds the machine, gaze and reward."""

    def __init__(self, inner: Display, runner: TrialRunner) -> None:
        self.inner = inner
        self.runner = runner
        self.kind = inner.kind

    @property
    def stop_requested(self) -> bool:
        """The operator asked to stop after the current trial."""
        return self.runner.stop_requested

    def _show(self, block: Block) -> Presentations:
        result = self.runner.run(block, lambda position, onset: self._notify_onset(block, position, onset))
        return Presentations(result.onsets, result.offsets, result.dropped, result.valid, self.runner.surface.clock,
                             behavior=result.log)

    def describe(self) -> dict:
        """The inner display's provenance, with the behaviour's."""
        inner = self.inner.describe()
        described = {**inner, "class": type(self).__name__, "inner_class": inner["class"],
                     "clock": self.runner.surface.clock, "behavior": self.runner.describe()}
        if not self.runner.surface.realtime:
            # A simulated frame clock is not time.monotonic: no offset ties it to the wall clock.
            described.pop("monotonic_offset_s", None)
        return described

    def close(self) -> None:
        try:
            self.runner.close()
        finally:
            self.inner.close()
