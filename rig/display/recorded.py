"""The display of a replay: shows nothing, reports each stimulus's recorded presentation."""
from __future__ import annotations

import numpy as np

from protocols.base import Block
from rig.display.base import Display, Presentations
from rig.session import RecordedSession
from rig.sources.replay import RecordedBlocks, ReplayDivergence


class RecordedDisplay(Display):
    """Shows nothing: reports each stimulus's recorded (final, valid) presentation."""

    def __init__(self, session: RecordedSession) -> None:
        self._recorded = RecordedBlocks(session)

    def _show(self, block: Block) -> Presentations:
        b = self._recorded.blocks.get(block.index)
        if b is None:
            raise ReplayDivergence(f"block {block.index}: not recorded in {self._recorded.path}")
        positions = np.array([b.stimulus_ids.index(s) for s in block.stimulus_ids]) \
            if set(block.stimulus_ids) <= set(b.stimulus_ids) else np.arange(len(block)) % len(b.stimulus_ids)
        offsets = b.offset_times if b.offset_times is not None else b.onset_times
        onsets = b.onset_times[positions]
        for position, onset in enumerate(onsets):  # listeners hear the recorded onsets, as a live display's
            self._notify_onset(block, position, float(onset))
        return Presentations(onsets, offsets[positions], b.dropped_frames[positions],
                             np.ones(len(block), dtype=bool), b.clock or "recorded")
