"""The source of a replay: each block answered with the responses a session recorded for it.

Replay is a wrapper, not a second loop (STYLE practice 2): the controller runs
the recorded protocol, and this source answers each block from the file once
its codes are checked bit-identical to the recorded ones.
"""
from __future__ import annotations

import numpy as np

from protocols.base import Block, Responses
from rig.display import Presentations
from rig.session import RecordedBlock, RecordedSession, SessionFileError
from rig.sources.base import ResponseSource


class ReplayDivergence(RuntimeError):
    """The protocol re-run from the file does not propose what the file records."""


def describe_divergence(index: int, proposed: np.ndarray, recorded: np.ndarray) -> str | None:
    """Where ``proposed`` codes (threads, popsize, dim) differ from ``recorded`` ones, or None if bit-identical."""
    if proposed.shape != recorded.shape:
        return f"block {index}: proposed codes of shape {proposed.shape}, the file records {recorded.shape}"
    if np.array_equal(proposed, recorded):
        return None
    differs = np.any(proposed != recorded, axis=-1)
    thread, code = (int(i) for i in np.argwhere(differs)[0])
    delta = float(np.nanmax(np.abs(proposed - recorded)))
    return (f"block {index}: codes diverge from the recorded ones: {int(differs.sum())} of {differs.size} codes differ, "
            f"first thread {thread} code {code}, max |difference| {delta:.3g}")


class RecordedBlocks:
    """Recorded blocks by index, and the check that a proposed block is the recorded one."""

    def __init__(self, session: RecordedSession) -> None:
        self.path = session.path
        self.blocks = {b.index: b for b in session.blocks}

    def match(self, block: Block) -> RecordedBlock:
        recorded = self.blocks.get(block.index)
        if recorded is None:
            raise ReplayDivergence(f"block {block.index}: not recorded in {self.path}")
        problem = describe_divergence(block.index, block.codes, recorded.codes)
        if problem is None and block.stimulus_ids != recorded.stimulus_ids:
            first = next(i for i, (a, b) in enumerate(zip(block.stimulus_ids, recorded.stimulus_ids)) if a != b) \
                if len(block.stimulus_ids) == len(recorded.stimulus_ids) else min(len(block), len(recorded.stimulus_ids))
            problem = f"block {block.index}: stimuli proposed in another order or with other ids, first at position {first}"
        if problem is not None:
            raise ReplayDivergence(problem)
        return recorded


class ReplaySource(ResponseSource):
    """Answers each block with the responses recorded for it, once its codes are checked bit-identical."""

    def __init__(self, session: RecordedSession) -> None:
        if not session.blocks:
            raise SessionFileError(f"{session.path}: no complete block recorded; nothing to replay")
        self._recorded = RecordedBlocks(session)
        self.channel_names = list(session.blocks[0].channel_names)

    def describe(self) -> dict:
        return {**super().describe(), "replaying": str(self._recorded.path)}

    def _record(self, block: Block, presentations: Presentations) -> Responses:
        recorded = self._recorded.match(block)
        return Responses(recorded.scores.copy(), recorded.valid.copy(), list(recorded.channel_names))
